"""`ccctl translate`: print what the adapter would send for saved Slurm JSON, one event a line.

    ccctl translate --sacct FILE [--squeue FILE] [--scontrol FILE] [--clusters FILE] [-config FILE]

Lines: `{"event":"start_job","body":{...}}`, `{"event":"stop_job","body":{...}}`,
`{"event":"quarantine","jobId":N,"path":"$...","error":"..."}`. Offline and side-effect free:
no daemon, no Slurm call, no cc-backend call (`--clusters` takes a saved `GET /api/clusters/`).
`main` gets the arguments after the word `translate`.
"""

from __future__ import annotations

import gc
import mmap
import os
import sys

import msgspec

from actors.cc_bodies import StartJob, StopJob

EXIT_OK = 0  #: every job translated or skipped
EXIT_QUARANTINED = 1  #: at least one job was set aside
EXIT_BAD_INPUT = 2  #: usage error, unreadable file, not Slurm JSON, bad config

#: Events encoded per write; large chunks keep the write calls few.
CHUNK_EVENTS = 4096
#: Files at least this large are mmap'ed rather than read into a copy.
MMAP_MIN_BYTES = 1 << 20

USAGE = ("usage: ccctl translate --sacct FILE [--squeue FILE] [--scontrol FILE] "
         "[--clusters FILE] [-config FILE]")


class Event(msgspec.Struct, tag_field="event", gc=False):
    pass


class StartEvent(Event, tag="start_job"):
    body: StartJob


class StopEvent(Event, tag="stop_job"):
    body: StopJob


class QuarantineEvent(Event, tag="quarantine", rename={"job_id": "jobId"}):
    job_id: int | None
    path: str
    error: str


_OPTIONS = {"--sacct": "sacct", "--squeue": "squeue", "--scontrol": "scontrol",
            "--clusters": "clusters", "-config": "config", "--config": "config"}


class _UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> dict[str, str]:
    args = list(argv)
    if args and args[0] == "translate":
        args.pop(0)
    found: dict[str, str] = {}
    while args:
        word = args.pop(0)
        name, eq, value = word.partition("=")
        if name in ("-h", "--help", "-help"):
            raise _UsageError("")
        if name not in _OPTIONS:
            raise _UsageError(f"unknown argument {word!r}")
        if not eq:
            if not args:
                raise _UsageError(f"{name} needs a FILE")
            value = args.pop(0)
        found[_OPTIONS[name]] = value
    if "sacct" not in found:
        raise _UsageError("--sacct FILE is required")
    return found


def _read(path: str, what: str):
    """The file's bytes; a large regular file is mapped instead of copied (msgspec decodes any
    buffer)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size >= MMAP_MIN_BYTES:
                try:
                    return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
                except (OSError, ValueError):
                    pass
            return f.read()
    except OSError as e:
        raise _UsageError(f"{what} file {path} cannot be read: {e.strerror}") from None


def main(argv: list[str]) -> int:
    # A run over acyclic data: the cyclic GC would only walk the decoded document again and
    # again (about a tenth of the run time on 50 000 jobs).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(argv)
    finally:
        if was_enabled:
            gc.enable()


def _run(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
        sacct = _read(args["sacct"], "--sacct")
        live = [_read(args[key], f"--{key}") for key in ("scontrol", "squeue") if key in args]
        ctx = _context(args)
    except _UsageError as e:
        print(f"ccctl translate: {e}" if str(e) else USAGE, file=sys.stderr)
        if str(e):
            print(USAGE, file=sys.stderr)
        return EXIT_BAD_INPUT
    from actors.errors import SlurmError
    from actors.translate import translate_documents

    out = sys.stdout.buffer
    encoder = msgspec.json.Encoder()
    events: list[Event] = []
    quarantined = 0
    try:
        for job_id, _cluster, result in translate_documents(sacct, live or None, ctx):
            if result.start is not None:
                events.append(StartEvent(result.start))
                if result.stop is not None:
                    events.append(StopEvent(result.stop))
            elif result.quarantine is not None:
                quarantined += 1
                events.append(QuarantineEvent(job_id, *result.quarantine))
            if len(events) >= CHUNK_EVENTS:
                out.write(encoder.encode_lines(events))
                events.clear()
    except SlurmError as e:
        out.write(encoder.encode_lines(events))
        out.flush()
        print(f"ccctl translate: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out.write(encoder.encode_lines(events))
    out.flush()
    return EXIT_QUARANTINED if quarantined else EXIT_OK


def _context(args: dict[str, str]):
    from actors.translate import TranslateContext

    topology = None
    if "clusters" in args:
        from actors.topology import parse_clusters

        try:
            topology = parse_clusters(_read(args["clusters"], "--clusters"))
        except ValueError as e:
            raise _UsageError(str(e)) from None
    if "config" not in args:
        return TranslateContext(topology)
    from actors.config import load_config
    from actors.errors import ConfigError

    try:
        config = load_config(args["config"], warn=lambda message: print(message, file=sys.stderr))
    except ConfigError as e:
        raise _UsageError(str(e)) from None
    return TranslateContext.from_config(config, topology)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
