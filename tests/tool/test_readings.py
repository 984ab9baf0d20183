"""A run's readings of its tables: kept for the next steps, until a write or an age."""

import pytest

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


def together(readings: TableReadings, fail: bool = False):
    """get_each of `key` on a table, recording each read: ("all", tables) or ("one", t)."""
    reads: list[tuple[str, object]] = []

    def read(table: str) -> str:
        def alone() -> str:
            reads.append(("one", table))
            return f"{table} alone"

        def each(names) -> dict[str, str]:
            reads.append(("all", tuple(names)))
            return {} if fail else {n: f"{n} together" for n in names if n != "gone"}

        return readings.get_each(table, "estimate", alone, each)

    return read, reads


def test_the_plans_tables_are_read_together_once_and_a_written_one_alone():
    clock = Clock()
    readings = TableReadings(clock)
    readings.plan(["a", "b", "c", "gone"])
    read, reads = together(readings)
    assert [read("a"), read("b"), read("a")] == ["a together", "b together", "a together"]
    assert reads == [("all", ("a", "b", "c", "gone"))]
    # Not in the plan, or not found by the query of them all: read alone.
    assert read("x") == "x alone" and read("gone") == "gone alone"
    readings.step_starts(["c"])
    assert read("c") == "c alone"  # while the step that writes it runs
    readings.step_ended(["c"], True)
    reads.clear()
    assert read("c") == "c together"  # its writes over: with the others due a read
    assert reads == [("all", ("c",))]
    # Too old: those no step has asked for yet are read together again (none here but b,
    # asked for already, is read alone).
    readings.plan(["a", "b", "c", "d", "e"])
    clock.now += MAX_AGE_SECONDS + 1
    reads.clear()
    assert read("d") == "d together" and read("e") == "e together"
    assert reads == [("all", ("d", "e"))]
    assert read("b") == "b alone"


@pytest.mark.parametrize("succeeded", [True, False])
def test_the_tables_a_step_wrote_are_read_again_together_once_it_ended(succeeded: bool):
    readings = TableReadings(Clock())
    readings.plan(["a", "b", "c", "d"])
    read, reads = together(readings)
    assert [read(t) for t in "abcd"] == [f"{t} together" for t in "abcd"]
    readings.step_starts(["a", "b", "c"])
    reads.clear()
    assert [read("a"), read("d")] == ["a alone", "d together"]
    assert reads == [("one", "a")]
    readings.step_ended(["a", "b", "c"], succeeded)
    reads.clear()
    assert [read("b"), read("c"), read("a"), read("d")] == [
        "b together",
        "c together",
        "a together",
        "d together",  # read since no step wrote it: kept
    ]
    assert reads == [("all", ("a", "b", "c"))]


def test_a_query_of_them_all_that_failed_is_not_sent_again_for_each_table():
    readings = TableReadings(Clock())
    readings.plan(["a", "b", "c"])
    read, reads = together(readings, fail=True)
    assert [read("a"), read("b"), read("c")] == ["a alone", "b alone", "c alone"]
    assert reads == [("all", ("a", "b", "c")), ("one", "a"), ("one", "b"), ("one", "c")]
