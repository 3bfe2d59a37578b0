"""How a run ended: Slurm's state and exit status -> cc-backend's jobState and sacct's ExitCode text.

Policy only, on decoded views. States: cc-slurm-adapter-spec.md §3.5 with the fix of §13 (a
state outside cc-backend v1.5's enum maps to the closest valid one; metaData.slurmState keeps
Slurm's word). Exit codes: right on every release, although 22.05's and v0.0.39's sacct JSON
report every normal exit as SUCCESS/0 (slurm-json-across-releases.md §2 "obj A", §5 items 2, 6).
"""

from __future__ import annotations

from actors.slurm_live_views import LiveExit, LiveJob
from actors.slurm_views import SacctJob, SacctState, first_str, int_value

#: Slurm state -> cc-backend v1.5 JobState for a finished run. The last block are Slurm states
#: outside cc-backend's enum, mapped to the closest valid one (metaData.slurmState keeps the word).
STOP_STATES = {
    "COMPLETED": "completed", "CANCELLED": "cancelled", "FAILED": "failed", "TIMEOUT": "timeout",
    "PREEMPTED": "preempted", "OUT_OF_MEMORY": "out_of_memory", "NODE_FAIL": "node_fail",
    "BOOT_FAIL": "boot_fail", "DEADLINE": "deadline",
    "REQUEUED": "preempted", "REQUEUE_FED": "preempted", "REQUEUE_HOLD": "preempted",
    "RESIZING": "completed", "REVOKED": "cancelled", "SPECIAL_EXIT": "failed",
}
#: States of a job that has not finished; anything else with an end time is treated as finished.
UNFINISHED_STATES = frozenset((
    "PENDING", "RUNNING", "SUSPENDED", "CONFIGURING", "COMPLETING", "STOPPED", "SIGNALING",
    "STAGE_OUT", "RESV_DEL_HOLD", "POWER_UP_NODE", "UPDATE_DB", "",
))
#: A finished state that is neither in STOP_STATES nor unfinished maps to this.
FALLBACK_STOP_STATE = "failed"


def slurm_state(view: SacctState | None) -> str:
    """sacct's `state.current` ("COMPLETED" or ["COMPLETED"]) as one upper-case word."""
    state = first_str(view.current) if view is not None else ""
    if state not in STOP_STATES and state not in UNFINISHED_STATES:
        state = state.upper()
    return state


def stop_state(state: str) -> str:
    """The jobState of a stop body for a finished run in Slurm state `state`."""
    return STOP_STATES.get(state, FALLBACK_STOP_STATE)


def exit_code(job: SacctJob, live: LiveJob | None, state: str) -> str:
    """ExitCode as sacct's text shows it ("exit:signal").

    sacct's JSON is right from v0.0.40 on (status is a list). On 22.05 and v0.0.39 (status is a
    string) signals are reported right but every normal exit reads SUCCESS/0: the exit number
    then comes from the live record's raw wait status (status >> 8) when it shows a normal exit,
    else from the state (FAILED -> "1:0", anything else "0:0")."""
    code = job.exit_code
    if code is None:
        return _state_exit(state)
    if type(code.status) is list:
        return _verbose_exit(code.status, code.return_code, code.signal) or _state_exit(state)
    word = code.status or ""
    if word == "SIGNALED" or word == "CORE_DUMPED":
        return _verbose_exit(word, None, code.signal) or _state_exit(state)
    if word == "SUCCESS" and live is not None and first_str(live.job_state).upper() not in UNFINISHED_STATES:
        raw = live.exit_code
        if type(raw) is LiveExit:
            if raw.status is not None:  # obj B in the live record
                return _verbose_exit(raw.status, raw.return_code, raw.signal) or _state_exit(state)
            raw = raw.number if raw.set and not raw.infinite else None
        status = int_value(raw)
        # A signal here contradicts sacct's "exited normally": keep sacct's word for it.
        if status is not None and 0 <= status <= 0xFFFF and not status & 0x7F:
            return f"{status >> 8}:0"
    return _state_exit(state)


def _state_exit(state: str) -> str:
    return "1:0" if state == "FAILED" else "0:0"


def _verbose_exit(status, return_code, signal) -> str:
    word = first_str(status)
    if word == "SUCCESS":
        return "0:0"
    if word == "ERROR":
        number = int_value(return_code)
        return f"{number}:0" if number is not None else ""
    if word in ("SIGNALED", "CORE_DUMPED") and signal is not None:
        number = int_value(signal.id)
        if number is None:
            number = int_value(signal.signal_id)
        return f"0:{number}" if number is not None else ""
    return ""
