"""The dispatch rule alone (vividly_tasks.dispatch.decision): no clients, no clock."""

from __future__ import annotations

from vividly_tasks.dispatch.decision import (
    ArrivalCounts,
    Reason,
    count_limit,
    decide,
    decide_on_counts,
)
from vividly_tasks.dispatch.inputs import (
    Arrival,
    BacklogSample,
    FinishedExecution,
    Launch,
    Policy,
    RunningExecution,
)

NOW = 1_000_000.0
POLICY = Policy(messages_per_task=10, max_tasks=8, decision_window_seconds=60,
                metric_settle_seconds=90, launch_visibility_seconds=30, start_lead_seconds=5)


def sample(undelivered: int, age: float = 0.0, at: float = NOW - 60) -> BacklogSample:
    return BacklogSample(undelivered=undelivered, oldest_unacked_age_seconds=age, sampled_at=at)


def test_an_empty_queue_starts_nothing() -> None:
    decision = decide(NOW, POLICY, backlog=sample(0), arrivals=[], running=[], launches=[])
    assert (decision.reason, decision.task_count) == (Reason.NOTHING_WAITING, 0)


def test_one_message_starts_one_task() -> None:
    decision = decide(NOW, POLICY, backlog=sample(1), arrivals=[], running=[], launches=[])
    assert (decision.reason, decision.task_count, decision.waiting) == (Reason.BACKLOG, 1, 1)


def test_the_task_count_follows_the_backlog_up_to_the_maximum() -> None:
    counts = [decide(NOW, POLICY, backlog=sample(n), arrivals=[], running=[],
                     launches=[]).task_count for n in (9, 10, 11, 75, 10_000)]
    assert counts == [1, 1, 2, 8, 8]


def test_arrivals_after_the_sample_add_to_the_lagging_metric() -> None:
    arrivals = [Arrival(f"t{i}", published_at=NOW - 5) for i in range(15)]
    decision = decide(NOW, POLICY, backlog=sample(10), arrivals=arrivals, running=[],
                      launches=[])
    assert (decision.waiting, decision.task_count, decision.basis) == (25, 3, "metric")


def test_without_a_metric_arrivals_are_the_backlog() -> None:
    arrivals = [Arrival(f"t{i}", published_at=NOW - 1) for i in range(30)]
    decision = decide(NOW, POLICY, backlog=None, arrivals=arrivals, running=[], launches=[])
    assert (decision.waiting, decision.task_count, decision.basis) == (30, 3, "arrivals")


def test_a_running_execution_that_covers_the_backlog_means_no_launch() -> None:
    running = [RunningExecution("executions/a", task_count=2, active_tasks=2)]
    decision = decide(NOW, POLICY, backlog=sample(20), arrivals=[], running=running,
                      launches=[])
    assert (decision.reason, decision.task_count) == (Reason.COVERED, 0)


def test_a_running_execution_that_does_not_cover_it_gets_company_for_the_rest() -> None:
    running = [RunningExecution("executions/a", task_count=2, active_tasks=2)]
    decision = decide(NOW, POLICY, backlog=sample(55), arrivals=[], running=running,
                      launches=[])
    assert (decision.reason, decision.task_count) == (Reason.BACKLOG, 4)


def test_the_maximum_counts_what_already_runs() -> None:
    running = [RunningExecution("executions/a", task_count=8, active_tasks=8)]
    decision = decide(NOW, POLICY, backlog=sample(10_000), arrivals=[], running=running,
                      launches=[])
    assert (decision.reason, decision.task_count) == (Reason.AT_MAXIMUM, 0)
    running = [RunningExecution("executions/a", task_count=8, active_tasks=5)]
    assert decide(NOW, POLICY, backlog=sample(10_000), arrivals=[], running=running,
                  launches=[]).task_count == 3


def test_a_metric_that_has_not_caught_up_with_a_launch_starts_no_second_one() -> None:
    # Launched 40 s ago for the one message; the execution already finished and is not
    # listed; Monitoring still shows the message, sampled before the launch settled.
    launch = Launch("executions/a", launched_at=NOW - 40, task_count=1, sized_for=1)
    decision = decide(NOW, POLICY, backlog=sample(1, at=NOW - 20), arrivals=[], running=[],
                      launches=[launch])
    assert (decision.reason, decision.basis) == (Reason.NOTHING_WAITING, "arrivals")


def test_a_fresh_metric_after_a_launch_is_trusted_again() -> None:
    launch = Launch("executions/a", launched_at=NOW - 300, task_count=1, sized_for=1)
    decision = decide(NOW, POLICY, backlog=sample(30, at=NOW - 60), arrivals=[], running=[],
                      launches=[launch])
    assert (decision.reason, decision.task_count) == (Reason.BACKLOG, 3)


def test_one_launch_per_decision_window() -> None:
    launch = Launch("executions/a", launched_at=NOW - 10, task_count=1, sized_for=1)
    running = [RunningExecution("executions/a", task_count=1, active_tasks=1)]
    arrivals = [Arrival(f"t{i}", published_at=NOW - 1) for i in range(200)]
    decision = decide(NOW, POLICY, backlog=None, arrivals=arrivals, running=running,
                      launches=[launch])
    assert (decision.reason, decision.task_count) == (Reason.DECISION_WINDOW, 0)
    assert decision.next_check_at == NOW + 50
    later = decide(NOW + 51, POLICY, backlog=None, arrivals=arrivals, running=running,
                   launches=[launch])
    assert (later.reason, later.task_count) == (Reason.BACKLOG, 7)  # 8 at most, 1 runs


def test_a_launch_not_listed_yet_counts_as_running() -> None:
    launch = Launch("executions/a", launched_at=NOW - 5, task_count=2, sized_for=5)
    arrivals = [Arrival(f"t{i}", published_at=NOW - 1) for i in range(10)]
    decision = decide(NOW, POLICY, backlog=None, arrivals=arrivals, running=[],
                      launches=[launch])
    # 20 messages of capacity, 5 of them for the launch's own backlog: 15 spare cover 10.
    assert (decision.reason, decision.running_tasks) == (Reason.COVERED, 2)


def test_a_delayed_message_is_not_work_until_it_is_nearly_due() -> None:
    due = NOW + 3600
    arrivals = [Arrival("later", published_at=NOW - 100, due_at=due)]
    # Monitoring counts it (it sits in the subscription), the dispatcher knows it is delayed.
    early = decide(NOW, POLICY, backlog=sample(1), arrivals=arrivals, running=[], launches=[])
    assert (early.reason, early.delayed, early.next_check_at) == (
        Reason.NOTHING_WAITING, 1, due - 5)
    on_time = decide(due - 5, POLICY, backlog=sample(1, at=due - 60), arrivals=arrivals,
                     running=[], launches=[])
    assert (on_time.reason, on_time.task_count) == (Reason.BACKLOG, 1)


def test_a_delayed_message_due_after_a_launch_starts_another() -> None:
    launch = Launch("executions/a", launched_at=NOW - 200, task_count=1, sized_for=1)
    arrivals = [Arrival("later", published_at=NOW - 300, due_at=NOW + 2)]
    decision = decide(NOW, POLICY, backlog=None, arrivals=arrivals, running=[],
                      launches=[launch])
    assert (decision.reason, decision.task_count) == (Reason.BACKLOG, 1)


def test_a_launch_the_runner_reports_finished_is_not_running() -> None:
    launch = Launch("executions/a", launched_at=NOW - 10, task_count=1, sized_for=1)
    finished = [FinishedExecution("executions/a", finished_at=NOW - 8, succeeded=True)]
    arrivals = [Arrival("new", published_at=NOW - 1)]
    decision = decide(NOW, POLICY, backlog=None, arrivals=arrivals, running=[],
                      launches=[launch], finished=finished)
    assert (decision.reason, decision.task_count, decision.running_tasks) == (
        Reason.BACKLOG, 1, 0)


def test_a_launch_once_listed_never_counts_by_its_age() -> None:
    launch = Launch("executions/a", launched_at=NOW - 10, task_count=1, sized_for=1, seen=True)
    decision = decide(NOW, POLICY, backlog=None, arrivals=[Arrival("new", NOW - 1)],
                      running=[], launches=[launch])
    assert (decision.reason, decision.running_tasks) == (Reason.BACKLOG, 0)


def test_a_delayed_task_handed_back_before_it_is_due_starts_an_execution_for_its_due_time(
) -> None:
    """The execution started for the task exited before it was due and handed it back: the
    task is not done, and is work again from its due time less the lead."""
    due = NOW + 3
    launch = Launch("executions/a", launched_at=due - 4, task_count=1, sized_for=1, seen=True)
    finished = [FinishedExecution("executions/a", finished_at=due - 2, succeeded=True)]
    arrivals = [Arrival("later", published_at=NOW - 100, due_at=due)]
    decision = decide(NOW, POLICY, backlog=None, arrivals=arrivals, running=[],
                      launches=[launch], finished=finished)
    assert (decision.reason, decision.task_count) == (Reason.BACKLOG, 1)
    assert not decision.proven


def test_a_delayed_task_handed_back_long_before_it_is_due_waits_for_its_lead() -> None:
    due = NOW + 600
    finished = [FinishedExecution("executions/a", finished_at=NOW - 5, succeeded=True)]
    arrivals = [Arrival("later", published_at=NOW - 100, due_at=due)]
    decision = decide(NOW, POLICY, backlog=None, arrivals=arrivals, running=[],
                      launches=[], finished=finished)
    assert (decision.reason, decision.next_check_at) == (Reason.NOTHING_WAITING, due - 5)


def test_a_sample_taken_before_an_execution_finished_starts_nothing() -> None:
    """Sampled after the settle time but before the queue drained: the execution that
    drained it finished after the sample, so the sample no longer counts."""
    launch = Launch("executions/a", launched_at=NOW - 400, task_count=1, sized_for=5, seen=True)
    finished = [FinishedExecution("executions/a", finished_at=NOW - 30, succeeded=True)]
    decision = decide(NOW, POLICY, backlog=sample(5, at=NOW - 100), arrivals=[], running=[],
                      launches=[launch], finished=finished)
    assert (decision.reason, decision.basis) == (Reason.NOTHING_WAITING, "arrivals")


def test_a_newer_sample_checks_an_idle_exit_that_proved_too_much() -> None:
    """An exit at the runtime budget exits 0 too: a sample taken after it shows the work."""
    finished = [FinishedExecution("executions/a", finished_at=NOW - 200, succeeded=True)]
    decision = decide(NOW, POLICY, backlog=sample(25, age=400, at=NOW - 60), arrivals=[],
                      running=[], launches=[], finished=finished)
    assert (decision.reason, decision.basis, decision.task_count) == (
        Reason.BACKLOG, "metric", 3)


def test_the_oldest_unacked_age_proves_older_arrivals_done() -> None:
    # A failed execution proves nothing and makes the sample stale; its age still proves
    # that what was published before the oldest unacked message was acknowledged.
    finished = [FinishedExecution("executions/a", finished_at=NOW - 30, succeeded=False)]
    arrivals = [Arrival("old", published_at=NOW - 300), Arrival("new", published_at=NOW - 20)]
    decision = decide(NOW, POLICY, backlog=sample(1, age=50, at=NOW - 60), arrivals=arrivals,
                      running=[], launches=[], finished=finished)
    assert (decision.waiting, decision.proven) == (1, frozenset({"old"}))


def test_a_failed_execution_proves_nothing() -> None:
    finished = [FinishedExecution("executions/a", finished_at=NOW - 5, succeeded=False)]
    decision = decide(NOW, POLICY, backlog=None, arrivals=[Arrival("a", NOW - 100)],
                      running=[], launches=[], finished=finished)
    assert (decision.reason, decision.task_count) == (Reason.BACKLOG, 1)


def test_an_execution_that_ran_for_the_runtime_budget_proves_nothing() -> None:
    policy = Policy(**{**POLICY.__dict__, "job_max_runtime_seconds": 540})
    budget = [FinishedExecution("executions/a", finished_at=NOW - 5, succeeded=True,
                                started_at=NOW - 560)]
    arrivals = [Arrival(f"t{i}", published_at=NOW - 600) for i in range(30)]
    decision = decide(NOW, policy, backlog=None, arrivals=arrivals, running=[],
                      launches=[], finished=budget)
    assert (decision.reason, decision.task_count) == (Reason.BACKLOG, 3)
    idle = [FinishedExecution("executions/a", finished_at=NOW - 5, succeeded=True,
                              started_at=NOW - 100)]
    assert decide(NOW, policy, backlog=None, arrivals=arrivals, running=[], launches=[],
                  finished=idle).reason == Reason.NOTHING_WAITING


def test_counts_stopped_at_the_limit_decide_the_same() -> None:
    """A record stops counting at ``count_limit``: every decision is the one on exact
    counts, whatever runs and however many arrivals wait or are delayed."""
    running = [RunningExecution("r", 3, 2)]
    checked = 0
    # With a launch not listed yet (arrivals only), and without one (the sample is fresh).
    for launches in ([Launch("l", NOW - 1, 1, 10)], []):
        limit = count_limit(POLICY, running, launches)
        for ready in (0, 1, limit - 1, limit, limit + 1, 10 * limit):
            for backlog in (None, sample(ready + 5, at=NOW - 1)):
                exact = ArrivalCounts(ready=ready, delayed=3 * limit, next_ready_at=NOW + 60,
                                      ready_after_sample=ready, delayed_in_sample=2 * limit)
                capped = ArrivalCounts(
                    ready=min(ready, limit), delayed=limit, next_ready_at=NOW + 60,
                    ready_after_sample=min(ready, limit),
                    delayed_in_sample=min(2 * limit, backlog.undelivered if backlog else 0),
                    limit=limit)
                first, second = (decide_on_counts(NOW, POLICY, backlog=backlog, counts=c,
                                                  running=running, launches=launches)
                                 for c in (exact, capped))
                assert (first.reason, first.task_count) == (
                    second.reason, second.task_count), (ready, backlog, launches)
                checked += first.launch
    assert checked  # some of them launch, at the limit and beyond


def test_a_launch_asks_to_look_again_a_window_later() -> None:
    """A burst longer than the runtime budget: once a launch's executions stopped at the
    budget with work left, the next launch waited for the safety net (10 minutes a round in
    the day simulation), as no wake-up comes for messages already there."""
    arrivals = [Arrival(f"t{i}", published_at=NOW - 1) for i in range(500)]
    decision = decide(NOW, POLICY, backlog=None, arrivals=arrivals, running=[], launches=[])
    assert (decision.reason, decision.task_count) == (Reason.BACKLOG, 8)
    assert decision.next_check_at == NOW + POLICY.decision_window_seconds
