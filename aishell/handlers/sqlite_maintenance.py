"""The SQLite maintenance handlers' former module: site catalogs whose tools say
`handler: sqlite_maintenance.<tool>` still find them. The code is in
aishell/handlers/sqlite/."""

from aishell.handlers import former_module
from aishell.handlers.sqlite import corruption, fragmentation, health, optimize, rebuild

__getattr__ = former_module(health, fragmentation, rebuild, optimize, corruption)
