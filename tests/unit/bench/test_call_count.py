"""bench/call_count.py: what counts as a sequential Pub/Sub call."""

from __future__ import annotations

from pathlib import Path

from bench.call_count import Call, count, longest_chain, read


def call(start: float, end: float, method: str = "/google.pubsub.v1.Publisher/GetTopic") -> Call:
    return Call(1, method, start, end)


def test_overlapping_calls_cost_one_round_trip_and_a_chain_counts_each() -> None:
    parallel = [call(0, 10), call(1, 11), call(2, 12)]
    assert longest_chain(parallel) == 1
    chain = [call(0, 10), call(10, 20), call(20, 30)]
    assert longest_chain(chain) == 3
    # Two calls side by side, then one after both: two round trips one after the other.
    assert longest_chain([call(0, 10), call(0, 12), call(13, 20)]) == 2


def test_a_window_keeps_what_started_inside_and_ends_long_calls_at_its_end(
    tmp_path: Path,
) -> None:
    log = tmp_path / "calls.log"
    log.write_text(
        "7 /google.pubsub.v1.Publisher/CreateTopic 100.0 100.1\n"
        "7 /google.pubsub.v1.Subscriber/Pull 100.2 160.0\n"
        "8 /google.pubsub.v1.Subscriber/Pull 100.3 100.4\n"
        "7 /google.pubsub.v1.Publisher/Publish 170.0 170.1\n"
    )
    counted = count(read(log), since=100.0, until=101.0)
    assert counted.total == 3
    assert counted.methods == {"CreateTopic": 1, "Pull": 2}
    # The long Pull ends at the window's end, after the short one: CreateTopic, then a Pull.
    assert counted.sequential == 2
    assert count(read(log)).total == 4
