"""Upper limits many settings share. Past them a number is a typo (and date arithmetic
or a bound parameter overflows), not a wish. An option's own bounds are in its entry of
aishell.config.options.

A module of their own: the command line's options name them, and must not import the
config's models (pydantic) to do so.
"""

MAX_RUN_TIME_SECONDS = 30 * 86_400
MAX_TIMEOUT_SECONDS = 86_400
# SQLite and the servers hold 64-bit integers; a count past this would not bind.
MAX_COUNT = 2**63 - 1
