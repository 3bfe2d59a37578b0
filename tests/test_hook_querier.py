"""The querier's nudge path as policy: which jobs each `sacct -j` asks for, and when (actors/nudge_queue.py),
fed synthetic timelines; and the background Slurm call it runs them with (actors/slurm_call.py)."""

import sys
import time

import pytest

from actors.errors import SlurmError
from actors.messages import JobNudge
from actors.nudge_queue import GATHER_S, MAX_JOBS_PER_QUERY, NudgeQueue
from actors.slurm_call import SlurmCall
from actors.slurm_cli import sacct_jobs_argv

T0 = 1_000_000.0
PROLOG, EPILOG = "prolog_slurmctld", "epilog_slurmctld"


def event(job_id: int, at: float, context: str = EPILOG) -> JobNudge:
    return JobNudge(cluster="c", job_id=job_id, source="hook", at=at, context=context)


def queue(max_retries: int = 10) -> NudgeQueue:
    return NudgeQueue(query_delay_s=1, max_retries=max_retries)


def ids(query) -> list[int]:
    return sorted(query.job_ids)


def test_the_same_event_many_times_makes_one_job_in_one_query():
    q = queue()
    for _ in range(1000):
        q.add(event(7, T0), T0)
    query = q.start(T0 + GATHER_S)
    assert ids(query) == [7]
    assert q.start(T0 + GATHER_S) is None


def test_a_fresh_event_waits_gather_s_for_the_rest_of_its_scheduler_pass():
    q = queue()
    q.add(event(1, T0), T0)
    assert q.start(T0 + GATHER_S / 2) is None
    q.add(event(2, T0 + GATHER_S / 2), T0 + GATHER_S / 2)
    assert ids(q.start(T0 + GATHER_S)) == [1, 2]


def test_an_event_that_waited_in_the_inbox_during_a_call_is_due_at_once():
    q = queue()
    q.add(event(1, at=T0 - 0.4), T0)  # sent 0.4 s ago, received only now
    assert ids(q.start(T0)) == [1]


def test_a_sender_clock_ahead_of_ours_delays_an_event_by_gather_s_only():
    q = queue()
    q.add(event(1, at=T0 + 3600), T0)
    assert q.next_due_at() == T0 + GATHER_S


def test_events_arriving_while_a_query_of_fresh_events_runs_all_go_into_the_next_single_query():
    q = queue()
    q.add(event(1, T0), T0)
    first = q.start(T0 + GATHER_S)
    for job_id in (2, 3, 4):
        q.add(event(job_id, T0 + 0.1), T0 + 0.1)
    assert q.start(T0 + 0.3) is None, "new events wait for the running query"
    assert q.next_due_at() is None, "nothing is due before that query's answer"
    q.settle(first, ready={("c", 1)}, answered_at=T0 + 0.4)
    assert ids(q.start(T0 + 0.4)) == [2, 3, 4]


def test_a_fresh_event_does_not_wait_behind_a_query_of_retries():
    q = queue()
    q.add(event(1, T0), T0)
    q.settle(q.start(T0 + GATHER_S), ready=set(), answered_at=T0 + 0.4)  # job 1: no end in sacct yet
    retry = q.start(T0 + 1)
    assert ids(retry) == [1] and not retry.fresh
    q.add(event(2, T0 + 1.1), T0 + 1.1)
    fresh = q.start(T0 + 1.1 + GATHER_S)
    assert ids(fresh) == [2], "job 2 is asked beside the running retry of job 1"
    q.add(event(3, T0 + 1.2), T0 + 1.2)
    assert q.start(T0 + 1.3) is None, "two queries run: job 3 waits for one of them"


def test_other_waiting_jobs_ride_along_without_spending_a_try():
    q = queue()
    q.add(event(1, T0), T0)
    q.settle(q.start(T0 + GATHER_S), ready=set(), answered_at=T0 + 0.4)
    job1 = q.nudges[("c", 1)]
    assert (job1.attempts, job1.due_at) == (1, T0 + 0.4 + 0.25)
    q.add(event(2, T0 + 0.5), T0 + 0.5)
    query = q.start(T0 + 0.5 + GATHER_S)
    assert ids(query) == [1, 2], "job 1 rides along before its retry is due"
    q.settle(query, ready=set(), answered_at=T0 + 0.9)
    assert (job1.attempts, job1.due_at) == (1, T0 + 0.4 + 0.25)
    assert q.nudges[("c", 2)].attempts == 1


def test_retries_back_off_from_a_quarter_second_to_slurm_query_delay_and_stop_after_max_retries():
    q = queue(max_retries=5)
    q.add(event(1, T0), T0)
    now, waits, given_up = T0 + GATHER_S, [], []
    while not given_up:
        query = q.start(now)
        now += 0.4  # sacct answers
        given_up = q.settle(query, ready=set(), answered_at=now)
        if not given_up:
            waits.append(round(q.next_due_at() - now, 3))
            now = q.next_due_at()
    assert waits == [0.25, 0.5, 1.0, 1.0], "5 tries in all"
    assert [n.job_id for n in given_up] == [1] and len(q) == 0


def test_an_epilog_for_a_job_still_waiting_for_its_start_record_is_asked_soon_with_fresh_tries():
    q = queue(max_retries=3)
    q.add(event(1, T0, PROLOG), T0)
    q.settle(q.start(T0 + GATHER_S), ready=set(), answered_at=T0 + 0.4)
    q.settle(q.start(T0 + 0.65), ready=set(), answered_at=T0 + 1.0)  # start record still a placeholder
    q.add(event(1, T0 + 1.1, EPILOG), T0 + 1.1)
    job1 = q.nudges[("c", 1)]
    assert (job1.context, job1.attempts, job1.due_at) == (EPILOG, 0, T0 + 1.1 + GATHER_S)


def test_an_epilog_that_comes_during_a_query_of_the_job_does_not_count_that_query_as_a_try():
    q = queue()
    q.add(event(1, T0, PROLOG), T0)
    query = q.start(T0 + GATHER_S)
    q.add(event(1, T0 + 0.2, EPILOG), T0 + 0.2)
    q.settle(query, ready=set(), answered_at=T0 + 0.4)
    assert q.nudges[("c", 1)].attempts == 0
    assert ids(q.start(T0 + 0.4)) == [1]


def test_an_epilog_of_a_job_whose_end_went_on_already_costs_nothing_but_a_requeue_starts_over():
    q = queue()
    q.add(event(1, T0, PROLOG), T0)
    q.settle(q.start(T0 + GATHER_S), ready={("c", 1)}, answered_at=T0 + 0.4)
    q.went_on_ended([("c", 1)], T0 + 0.4)  # that record had an end already
    q.add(event(1, T0 + 0.5, EPILOG), T0 + 0.5)
    assert len(q) == 0
    q.add(event(1, T0 + 9, PROLOG), T0 + 9)  # requeued: runs again
    q.add(event(1, T0 + 19, EPILOG), T0 + 19)
    assert q.nudges[("c", 1)].context == EPILOG


def test_a_flood_of_jobs_is_asked_in_queries_of_at_most_max_jobs_per_query_fresh_first():
    q = queue()
    q.add(event(1, T0 - 10), T0 - 10)
    q.settle(q.start(T0 - 10 + GATHER_S), ready=set(), answered_at=T0 - 9)  # job 1 is a due retry at T0
    for job_id in range(2, 2 + 2 * MAX_JOBS_PER_QUERY):
        q.add(event(job_id, T0), T0)
    first = q.start(T0 + GATHER_S)
    assert len(first.job_ids) == MAX_JOBS_PER_QUERY
    assert 1 not in first.job_ids, "fresh events go before retries"


def test_a_failed_query_gives_its_jobs_back_to_be_asked_after_the_backoff():
    q = queue()
    q.add(event(1, T0), T0)
    query = q.start(T0 + GATHER_S)
    q.fail(query, retry_at=T0 + 5)
    assert q.next_due_at() == T0 + 5
    assert ids(q.start(T0 + 5)) == [1]


# --- the background call -------------------------------------------------------------------------

def finish(call: SlurmCall, timeout_s: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while not call.pump():
        assert time.monotonic() < deadline, "the call never finished"
        time.sleep(0.01)
    return call.result()


def test_a_background_call_returns_everything_the_command_printed():
    call = SlurmCall([sys.executable, "-c", "import sys; sys.stdout.write('x' * 300000)"], {}, 30)
    assert finish(call) == b"x" * 300000


def test_a_background_call_that_fails_names_the_command_and_its_stderr():
    call = SlurmCall(["sh", "-c", "echo 'slurmdbd is down' >&2; exit 1"], {"PATH": "/usr/bin:/bin"}, 30)
    with pytest.raises(SlurmError, match=r"sh -c .* exited 1: slurmdbd is down"):
        finish(call)


def test_a_background_call_that_outlives_its_timeout_is_killed_and_reported():
    call = SlurmCall(["sleep", "30"], {"PATH": "/usr/bin:/bin"}, 0.2)
    with pytest.raises(SlurmError, match=r"did not finish within 0.2 s \(slurmCommandTimeout\)"):
        finish(call)
    assert call.process.returncode is not None


def test_the_sacct_of_nudges_asks_for_allocations_of_every_user_once_per_job():
    assert sacct_jobs_argv([12, 3, 12]) == ["sacct", "--json", "--allusers", "--allocations", "--jobs", "3,12"]
