"""The PostgreSQL maintenance handlers' former module: site catalogs whose tools say
`handler: postgresql_maintenance.<tool>` still find them. The code is in
aishell/handlers/postgresql/."""

from aishell.handlers import former_module
from aishell.handlers.postgresql import corruption, fragmentation, health, optimize, rebuild

__getattr__ = former_module(health, fragmentation, rebuild, optimize, corruption)
