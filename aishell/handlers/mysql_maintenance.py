"""The MySQL and MariaDB maintenance handlers' former module: site catalogs whose tools say
`handler: mysql_maintenance.<tool>` still find them. The code is in
aishell/handlers/mysql/."""

from aishell.handlers import former_module
from aishell.handlers.mysql import corruption, fragmentation, health, optimize, rebuild, repair

__getattr__ = former_module(health, fragmentation, rebuild, optimize, corruption, repair)
