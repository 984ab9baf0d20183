"""Upper limits shared by config and the command line. Past them a number is a typo
(and date arithmetic overflows), not a wish.

A module of their own: the command line's options name them, and must not import the
config's models (pydantic) to do so.
"""

MAX_RETENTION_DAYS = 36_500  # a hundred years
MAX_BATCH_MS = 3_600_000  # an hour
MAX_SLEEP_MS = 3_600_000
MAX_RUN_TIME_SECONDS = 30 * 86_400
MAX_TIMEOUT_SECONDS = 86_400
