"""A run's readings of its tables: kept for the next steps, until a write or an age."""

from aishell.tool.readings import MAX_AGE_SECONDS, TableReadings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reader(readings: TableReadings, table: str = "t"):
    reads: list[str] = []

    def read(key: str = "indexes") -> str:
        def measure() -> str:
            reads.append(key)
            return f"{key}#{len(reads)}"

        return readings.get(table, key, measure)

    return read, reads


def test_a_reading_is_made_once_until_it_is_too_old():
    clock = Clock()
    readings = TableReadings(clock)
    read, _ = reader(readings)
    assert read() == read() == "indexes#1"
    clock.now += MAX_AGE_SECONDS
    assert read() == "indexes#1"
    clock.now += 0.5
    assert read() == "indexes#2"


def test_a_step_that_writes_forgets_its_tables_readings_and_no_others():
    readings = TableReadings(Clock())
    read_t, reads_t = reader(readings, "t")
    read_u, reads_u = reader(readings, "u")
    read_t(), read_u()
    readings.step_starts(["t"])
    read_t(), read_u()
    assert (len(reads_t), len(reads_u)) == (2, 1)
    # A step naming no table may have written to any.
    readings.step_starts([])
    read_t(), read_u()
    assert (len(reads_t), len(reads_u)) == (3, 2)


def test_what_a_step_read_after_its_writes_is_kept_only_when_it_succeeded():
    readings = TableReadings(Clock())
    read, reads = reader(readings)
    for succeeded, expected in ((False, "indexes#1"), (True, "after")):
        readings.step_starts(["t"])
        read()  # before its write: gone when it ends
        readings.after_writes("t", "indexes", "after")
        readings.step_ended(["t"], succeeded)
        reads.clear()
        assert read() == expected
        assert len(reads) == (0 if succeeded else 1)
