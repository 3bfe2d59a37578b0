"""`ccctl backfill`: give cc-backend the jobs it lacks, over any stretch of the past.

    ccctl backfill --since DATE [--until DATE] [--dry-run] [--json] [--chunk S]

Walks the jobs that *started* between --since and --until in windows of slurmQueryChunk seconds:
one `sacct --json` per window (never one per job), each job read and translated exactly as the
daemon does (slurm_records.split_jobs, translate.translate_record, one slurmctld snapshot for the
live detail), and one paged `GET /api/jobs/?cluster=C&start-time=<window>` per window and cluster
for what cc-backend has. A job started in a window belongs to that window only, so a long job is
compared once however many windows it spans.

What cc-backend lacks (a start; the stop of a job it still lists as running) is printed with
--dry-run, or else written to the outbox with the translator's idempotent insert, for the daemon
to deliver under the usual rules (a stop after its start, "already there" counts as done). A row
the outbox has delivered long ago but cc-backend lacks (its database restored, say) is sent again.

Policy, pure and table-tested: parse_when, windows, owns, missing_events, outbox_action and the
summary and progress texts. Plumbing: Backfill.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from datetime import datetime

import msgspec

from actors.outbox import BACKEND_CLUSTERS_KEY, Outbox, OutboxEvent

EXIT_OK = 0  #: nothing to send (dry run), or the missing rows are queued
EXIT_MISSING = 1  #: dry run: cc-backend lacks something (as diff(1) exits 1); or a job was quarantined
EXIT_USAGE = 2  #: bad arguments or config
EXIT_UNREACHABLE = 3  #: Slurm or cc-backend did not answer, or ^C (windows already done stay queued)
MIN_CHUNK_S = 60  #: no sacct window is narrower (as slurm_querier.poll)
#: A row delivered this recently may just not be committed in cc-backend yet (contract §5.5): not resent.
RESEND_GRACE_S = 300.0
DAEMON_TIMEOUT_S = 1.0  #: how long to ask the daemon whether it runs
SOURCE = "backfill"  #: jobs_seen.last_source of the jobs backfill queued
BAR_WIDTH = 24
_AGO = re.compile(r"(\d+)([mhdw])")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
# What outbox_action decides for one missing event of one sink:
NEW = "new"  #: no row yet: queued
RESEND = "resend"  #: delivered long ago, yet cc-backend lacks it: sent again
WAITING = "waiting"  #: pending (or published) already: the daemon sends it
RECENT = "recent"  #: delivered moments ago: cc-backend lists it after its commit
SET_ASIDE = "failed"  #: refused by cc-backend before: `ccctl retry ROW` after fixing the cause
QUEUES = (NEW, RESEND)


# --- policy -----------------------------------------------------------------------------------------


def parse_when(text: str, now: float) -> int:
    """--since/--until (unix s): `now`, `@UNIX`, `30d`/`12h`/`90m`/`2w` ago, or an ISO date or date
    and time (local time, like sacct, unless it names its offset: `2025-05-01T00:00:00+00:00`)."""
    text = text.strip()
    if text == "now":
        return int(now)
    if text.startswith("@") and text[1:].isdigit():
        return int(text[1:])
    ago = _AGO.fullmatch(text)
    if ago:
        return int(now) - int(ago[1]) * _UNIT_S[ago[2]]
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time: use YYYY-MM-DD[THH:MM[:SS]], @UNIX, now, "
                         "or 30d, 12h, 90m, 2w (that long ago)") from None


def windows(since: int, until: int, chunk_s: int) -> list[tuple[int, int]]:
    """[start, end) windows of at most chunk_s seconds (MIN_CHUNK_S at least) covering since..until."""
    chunk = max(MIN_CHUNK_S, int(chunk_s))
    return [(start, min(until, start + chunk)) for start in range(since, until, chunk)]


def owns(start_time: int, window: tuple[int, int], last: bool) -> bool:
    """Does the job that started at start_time belong to this window? The last one includes its end."""
    return window[0] <= start_time < window[1] or (last and start_time == window[1])


def missing_events(finished: bool, listed_state: str | None) -> tuple[str, ...]:
    """The events cc-backend lacks for one run: listed_state is its jobState, None when not listed.
    A stopped job whose state differs is left alone: cc-backend keeps the first stop it got."""
    if listed_state is None:
        return ("start_job", "stop_job") if finished else ("start_job",)
    if listed_state == "running" and finished:
        return ("stop_job",)
    return ()


def outbox_action(row: tuple[str, float | None] | None, now: float, grace_s: float = RESEND_GRACE_S) -> str:
    """For a missing event: what its outbox row, (state, delivered_at) or None, asks backfill to do."""
    if row is None:
        return NEW
    state, delivered_at = row
    if state in ("pending", "published"):
        return WAITING
    if state == "failed":
        return SET_ASIDE
    return RECENT if delivered_at is not None and now - delivered_at < grace_s else RESEND


class Summary(msgspec.Struct, kw_only=True, rename="camel"):
    since: int
    until: int
    dry_run: bool
    windows: int = 0  #: windows read
    jobs: int = 0  #: jobs that started in the range
    skipped: int = 0  #: of those, nothing to send (e.g. every host in ignoreHosts)
    start_bodies: int = 0
    stop_bodies: int = 0
    in_cc_backend: int = 0  #: jobs cc-backend has as Slurm has them
    missing_starts: int = 0
    missing_stops: int = 0
    queued: int = 0  #: rows written or sent again (dry run: would be)
    waiting: int = 0  #: missing events whose row already waits in the outbox
    recent: int = 0  #: missing events delivered moments ago (not yet committed in cc-backend)
    set_aside: int = 0  #: missing events whose row cc-backend refused before
    quarantined: int = 0
    daemon: str = ""  #: "running" / "not running"
    stopped_at: int | None = None  #: when Slurm or cc-backend failed: the start of the window not done


def summary_lines(s: Summary) -> list[str]:
    head = f"backfill {clock(s.since)} .. {clock(s.until)}: {s.windows} window(s)"
    verb = "would queue" if s.dry_run else "queued"
    lines = [head + (" (dry run: nothing written)" if s.dry_run else ""),
             f"jobs read:      {s.jobs} started in the range ({s.skipped} with nothing to send)",
             f"bodies:         {s.start_bodies} start, {s.stop_bodies} stop",
             f"in cc-backend:  {s.in_cc_backend} job(s) already there as Slurm has them",
             f"missing:        {s.missing_starts} start(s), {s.missing_stops} stop(s)",
             f"{verb + ':':<15} {s.queued} outbox row(s)"
             + (f"; {s.waiting} already waiting there" if s.waiting else "")
             + (f"; {s.recent} delivered moments ago (cc-backend lists them after its commit)" if s.recent else "")
             + (f"; {s.set_aside} refused before (ccctl jobs --failed)" if s.set_aside else ""),
             f"quarantined:    {s.quarantined}"
             + (" (ccctl quarantine list)" if s.quarantined and not s.dry_run else "")]
    if s.stopped_at is not None:
        lines.append(f"STOPPED at the window from {clock(s.stopped_at)}: run again with --since @{s.stopped_at}")
    if not s.dry_run and s.daemon:
        lines.append("daemon:         " + ("running: it delivers the queued rows now" if s.daemon == "running" else
                                           "not running: the queued rows wait in the outbox until it starts"))
    return lines


def progress_text(done: int, total: int, window_end: int, jobs: int, missing: int, tty: bool) -> str:
    tail = f"{done}/{total} windows, up to {clock(window_end)}: {jobs} jobs, {missing} missing"
    if not tty:
        return f"backfill: {tail}"
    filled = BAR_WIDTH * done // max(total, 1)
    return f"backfill [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {tail}"


def clock(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_s))


# --- plumbing ---------------------------------------------------------------------------------------


class Backfill:
    """One run. slurm (SlurmCommands), client (CcRest) and outbox (Outbox or None for a dry run
    without a store) are passed in, so tests can hand in their own."""

    def __init__(self, config, since: int, until: int, *, dry_run: bool, slurm, client, outbox: Outbox | None,
                 chunk_s: int | None = None, as_json: bool = False, out=None, err=None):
        from actors.translator import sinks_of

        self.config, self.slurm, self.client, self.outbox = config, slurm, client, outbox
        self.sinks = sinks_of(config)
        self.chunk_s = chunk_s or config.slurm_query_chunk
        self.as_json, self.out, self.err = as_json, out or sys.stdout, err or sys.stderr
        self.summary = Summary(since=since, until=until, dry_run=dry_run)
        self.encoder = msgspec.json.Encoder()
        self.now = time.time  #: tests move the clock to age the outbox's delivered rows
        self.bar_shown = False  #: a progress bar is on the terminal, without its newline

    def run(self, daemon_running: bool | None = None) -> int:
        from actors.errors import BackendUnavailable, SlurmError
        from actors.slurm_records import split_jobs

        s = self.summary
        spans = windows(s.since, s.until, self.chunk_s)
        tty = self.err.isatty()
        error = ""
        try:
            release = self.slurm.release()
            ctx = self.context()
            # One snapshot, taken after --until: every job that started by then is running or ended in it.
            live = {key.job_id: raw for key, raw in split_jobs(self.slurm.live_jobs(release), "live jobs")
                    if key is not None}
            for number, window in enumerate(spans, 1):
                s.stopped_at = window[0]
                self.window(window, number == len(spans), live, ctx, release.text)
                s.windows, s.stopped_at = number, None
                self.err.write(("\r" if tty else "") + progress_text(number, len(spans), window[1], s.jobs,
                                                                      s.missing_starts + s.missing_stops, tty)
                               + ("" if tty else "\n"))
                self.err.flush()
                self.bar_shown = tty
        except (SlurmError, BackendUnavailable) as e:
            error = str(e)
        except KeyboardInterrupt:
            error = "interrupted"
        if self.bar_shown:
            self.err.write("\n")
        if error:
            print(f"ccctl backfill: {error}", file=self.err)
        if daemon_running is not None:
            s.daemon = "running" if daemon_running else "not running"
        if self.as_json:
            self.out.write(json.dumps({"event": "summary", **msgspec.to_builtins(s)}) + "\n")
        else:
            self.out.write("\n".join(summary_lines(s)) + "\n")
        if error:
            return EXIT_UNREACHABLE
        return EXIT_MISSING if s.quarantined or (s.dry_run and s.missing_starts + s.missing_stops) else EXIT_OK

    def context(self):
        """The translator's context, with cc-backend's topology (hardware thread ids) as the daemon has it."""
        from actors.errors import BackendUnavailable
        from actors.topology import parse_clusters
        from actors.translate import TranslateContext

        try:
            text = self.client.clusters_raw()
        except BackendUnavailable:
            text = self.outbox.kv_get(BACKEND_CLUSTERS_KEY) if self.outbox is not None else None
        try:
            return TranslateContext.from_config(self.config, parse_clusters(text) if text else None)
        except ValueError:
            return TranslateContext.from_config(self.config)

    def window(self, window: tuple[int, int], last: bool, live: dict, ctx, release: str) -> None:
        from actors.slurm_records import split_jobs
        from actors.translate import translate_record

        s = self.summary
        runs = []  # the Translations (start, and stop when ended) of the jobs started in this window
        for key, raw in split_jobs(self.slurm.sacct_window(*window), "sacct"):
            if key is None:
                print(f"ccctl backfill: {raw}", file=self.err)
                continue
            if not key.time.start or not owns(key.time.start, window, last):
                continue
            result = translate_record(bytes(raw), bytes(live.get(key.job_id, b"null")), None, ctx)
            s.jobs += 1
            if result.quarantine is not None:
                self.quarantine(key, raw, result.quarantine, release)
            elif result.start is None:
                s.skipped += 1
            else:
                s.start_bodies += 1
                s.stop_bodies += result.stop is not None
                runs.append(result)
        if not runs:
            return
        listed: dict[tuple, str] = {}
        for cluster in sorted({r.start.cluster for r in runs}):
            span = (window[0], window[1] if last else window[1] - 1)
            for job in self.client.list_jobs(cluster=cluster, start_time=span):
                listed[(job.get("cluster"), job.get("jobId"), job.get("startTime"))] = job.get("jobState")
        rows = self.outbox.row_states((r.start.cluster, r.start.job_id) for r in runs) if self.outbox else {}
        self.compare(runs, listed, rows)

    def compare(self, runs: list, listed: dict, rows: dict) -> None:
        s, now = self.summary, self.now()
        events, seen, resend = [], [], []
        for result in runs:
            start, stop = result.start, result.stop
            state = listed.get((start.cluster, start.job_id, start.start_time))
            missing = missing_events(stop is not None, state)
            if not missing:
                s.in_cc_backend += 1
                continue
            for event in missing:
                actions = {}
                for sink in self.sinks:
                    row = rows.get((sink, start.cluster, start.job_id, start.start_time, event))
                    actions[sink] = outbox_action(row and row[1:], now)
                    if actions[sink] == RESEND:
                        resend.append(row[0])
                    if s.dry_run and actions[sink] in QUEUES:
                        s.queued += 1
                    s.waiting += actions[sink] == WAITING
                    s.recent += actions[sink] == RECENT
                    s.set_aside += actions[sink] == SET_ASIDE
                s.missing_starts += event == "start_job"
                s.missing_stops += event == "stop_job"
                if s.dry_run:
                    self.print_event(event, start, stop, state, actions)
            bodies = [("start_job", self.encoder.encode(start))]
            if stop is not None:
                bodies.append(("stop_job", self.encoder.encode(stop)))
            events += [OutboxEvent(sink=sink, cluster=start.cluster, job_id=start.job_id, start_time=start.start_time,
                                   event=event, body=body) for sink in self.sinks for event, body in bodies]
            seen.append((start.cluster, start.job_id, SOURCE, start.start_time, start.meta_data.slurm_state))
        if not s.dry_run and events:
            s.queued += self.outbox.enqueue(events, seen=seen, next_try_at=now)
            if resend:
                s.queued += self.outbox.resend_delivered_many(resend, "ccctl backfill: cc-backend lacks it")

    def print_event(self, event: str, start, stop, listed_state: str | None, actions: dict) -> None:
        if self.as_json:
            body = stop if event == "stop_job" else start
            line = {"event": event, "jobId": start.job_id, "cluster": start.cluster, "startTime": start.start_time,
                    "slurmState": start.meta_data.slurm_state, "ccBackend": listed_state, "outbox": actions,
                    "body": msgspec.to_builtins(body)}
            self.emit(json.dumps(line, ensure_ascii=False))
            return
        what = f", {stop.job_state} at {clock(stop.stop_time)}" if event == "stop_job" else \
            f" ({start.meta_data.slurm_state} in Slurm)"
        outbox = ", ".join(f"{sink} {action}" for sink, action in actions.items())
        self.emit(f"{event:<9} {start.job_id}@{start.cluster} started {clock(start.start_time)}{what}; "
                  f"cc-backend: {listed_state or 'absent'}; outbox: {outbox}")

    def emit(self, line: str) -> None:
        """One line of the diff on stdout; a progress bar on the same terminal is wiped first."""
        if self.bar_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.bar_shown = False
        self.out.write(line + "\n")

    def quarantine(self, key, raw, problem: tuple[str, str], release: str) -> None:
        """A job the translator cannot read: listed (dry run), or held in quarantine as the daemon does."""
        cluster, (path, error) = key.cluster or "", problem
        self.summary.quarantined += 1
        if not self.summary.dry_run:
            self.outbox.quarantine_add(cluster, key.job_id, path, error, bytes(raw), release, key.time.start)
        elif self.as_json:
            line = {"event": "quarantine", "jobId": key.job_id, "cluster": cluster, "path": path, "error": error}
            self.emit(json.dumps(line, ensure_ascii=False))
        else:
            self.emit(f"quarantine {key.job_id}@{cluster}: {error} at {path}")


def open_outbox(config, dry_run: bool) -> Outbox | None:
    """The daemon's store: read-only for a dry run (None when there is none yet), else writable; made
    here when the daemon never ran, and then, made by root, handed to stateDir's owner (the daemon's user)."""
    if dry_run:
        return Outbox(config.outbox_path, readonly=True) if os.path.exists(config.outbox_path) else None
    created = not os.path.exists(config.outbox_path)
    outbox = Outbox(config.outbox_path)
    if created and os.geteuid() == 0:
        owner = os.stat(config.state_dir)
        for path in (config.outbox_path + suffix for suffix in ("", "-wal", "-shm")):
            if os.path.exists(path):
                os.chown(path, owner.st_uid, owner.st_gid)
    return outbox


def main(config, args) -> int:
    """ccctl's side: the arguments of `ccctl backfill`, the real Slurm, cc-backend and outbox."""
    from actors.cc_rest import CcRest
    from actors.ctl_client import request_daemon
    from actors.slurm_cli import SlurmCommands

    now = time.time()
    try:
        since = parse_when(args.since, now)
        until = parse_when(args.until, now) if args.until else int(now)
    except ValueError as e:
        print(f"ccctl backfill: {e}", file=sys.stderr)
        return EXIT_USAGE
    if since >= until:
        print(f"ccctl backfill: --since ({clock(since)}) must be before --until ({clock(until)})", file=sys.stderr)
        return EXIT_USAGE
    if not config.cc_rest_url:
        print("ccctl backfill: ccRestUrl is empty: cc-backend cannot be asked what it has", file=sys.stderr)
        return EXIT_USAGE
    outbox = open_outbox(config, args.dry_run)
    client = CcRest(config.cc_rest_url, config.cc_rest_jwt, timeout_s=config.cc_rest_timeout)
    try:
        run = Backfill(config, since, until, dry_run=args.dry_run, slurm=SlurmCommands(config.slurm_command_timeout),
                       client=client, outbox=outbox, chunk_s=args.chunk, as_json=args.json)
        daemon = None if args.dry_run else request_daemon(config.ctl_sock_path, "status", DAEMON_TIMEOUT_S) is not None
        return run.run(daemon_running=daemon)
    finally:
        client.close()
        if outbox is not None:
            outbox.close()
