"""`ccctl`: ask the running daemon how it is, and work with its durable state."""

from __future__ import annotations

import argparse
import os
import sys

from actors.ctl_commands import COMMANDS, EXIT_UNREACHABLE, EXIT_USAGE

DEFAULT_TIMEOUT_S = 2.0
DESCRIPTION = "Control and inspect a running cc-slurm-adapter daemon."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccctl", description=DESCRIPTION)
    parser.add_argument("-config", "--config", metavar="FILE", help="config file (default /etc/cc-slurm-adapter/config.json)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    status = sub.add_parser("status", help="health at a glance: actors, Slurm, cc-backend, outbox, quarantine, stateDir (exit 0 ok, 1 degraded, 3 unreachable)")
    status.add_argument("--json", action="store_true", help="one JSON object for scripts")
    status.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds to wait for the daemon (default 2)")
    sub.add_parser("translate", help="offline: print what the adapter would send for Slurm JSON files "
                   "(ccctl translate --help)")
    jobs = sub.add_parser("jobs", help="outbox rows: what was or will be sent, with attempts and last answer")
    which = jobs.add_mutually_exclusive_group()
    which.add_argument("--pending", action="store_const", const="pending", dest="state", help="only rows still to send")
    which.add_argument("--failed", action="store_const", const="failed", dest="state", help="only rows set aside")
    jobs.add_argument("--json", action="store_true", help="JSON for scripts")
    jobs.add_argument("--limit", type=int, default=1000, help="at most this many rows (default 1000)")
    retry = sub.add_parser("retry", help="queue failed outbox rows again: one ROW id, or --all-failed")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("row", nargs="?", type=int, help="the row id shown by ccctl jobs")
    target.add_argument("--all-failed", action="store_true", help="every failed row")
    quarantine = sub.add_parser("quarantine", help="jobs the translator could not read: list | show JOBID | retry JOBID")
    quarantine.add_argument("action", choices=("list", "show", "retry"))
    quarantine.add_argument("job_id", nargs="?", type=int)
    quarantine.add_argument("--json", action="store_true", help="JSON for scripts (list)")
    trace = sub.add_parser("trace", help="why is job JOBID (not) in ClusterCockpit? every stage, then a verdict "
                           "(exit 0 delivered, 1 not or not rightly, 4 unknown); read-only, daemon up or down")
    trace.add_argument("job_id", type=int, metavar="JOBID")
    trace.add_argument("--cluster", metavar="NAME", help="the Slurm cluster (default: the one sacct answers for)")
    trace.add_argument("--json", action="store_true", help="one JSON object for scripts")
    trace.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help="seconds to wait for the daemon's status (default 2)")
    backfill = sub.add_parser("backfill", help="give cc-backend the jobs that started between --since and --until "
                              "and that it lacks (sacct in windows); --dry-run lists them and sends nothing")
    backfill.add_argument("--since", required=True, metavar="DATE",
                          help="YYYY-MM-DD[THH:MM[:SS]] (local time), @UNIX, or 30d/12h/90m/2w ago")
    backfill.add_argument("--until", metavar="DATE", help="the same forms (default now)")
    backfill.add_argument("--dry-run", action="store_true",
                          help="print each start/stop cc-backend lacks, one a line; write nothing (exit 1 when any)")
    backfill.add_argument("--json", action="store_true", help="JSON lines for scripts, the summary last")
    backfill.add_argument("--chunk", type=int, metavar="S", help="seconds of sacct per window (default slurmQueryChunk)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    offline = _offline_command(argv)
    if offline is not None:
        return offline
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command in ("jobs", "retry", "quarantine", "trace", "backfill"):
        return store_command(args)
    return ask_daemon(args.command, args)


def store_command(args: argparse.Namespace) -> int:
    from actors import ctl_store
    from actors.config import load_config
    from actors.errors import ConfigError

    try:
        config = load_config(args.config, warn=lambda m: None)
    except ConfigError as e:
        print(f"ccctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "jobs":
        return ctl_store.jobs(config, args.state, args.json, args.limit)
    if args.command == "retry":
        return ctl_store.retry(config, None if args.all_failed else args.row)
    if args.command == "trace":
        from actors import trace

        return trace.run(config, args.job_id, args.cluster, args.json, args.timeout)
    if args.command == "backfill":
        from actors import backfill

        return backfill.main(config, args)
    return ctl_store.quarantine(config, args.action, args.job_id, args.json)


def _offline_command(argv: list[str]) -> int | None:
    """`translate` has its own flags (and must stay light): hand it everything after its name."""
    config: list[str] = []
    if len(argv) >= 2 and argv[0] in ("-config", "--config"):
        config, argv = argv[:2], argv[2:]
    if argv[:1] != ["translate"]:
        return None
    from actors.translate_cli import main as translate_main

    return translate_main(config + argv[1:])


def ask_daemon(command_name: str, args: argparse.Namespace) -> int:
    import msgspec

    from actors.config import load_config
    from actors.ctl_client import request_daemon
    from actors.errors import ConfigError

    try:
        config = load_config(args.config, warn=lambda m: None)
    except ConfigError as e:
        print(f"ccctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not os.path.exists(config.ctl_sock_path):
        print(f"ccctl: no control socket at {config.ctl_sock_path}: the daemon is not running (or uses another config)", file=sys.stderr)
        return EXIT_UNREACHABLE
    reply = request_daemon(config.ctl_sock_path, command_name, args.timeout)
    if reply is None:
        print(
            f"ccctl: no answer from the daemon on {config.ctl_sock_path} within {args.timeout:g} s: "
            "is it running (systemctl status cc-slurm-adapter)? Is this its config (-config)?",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    if not reply.ok:
        print(f"ccctl: the daemon refused {command_name}: {reply.error}", file=sys.stderr)
        return EXIT_USAGE
    text, code = COMMANDS[command_name].render(msgspec.json.decode(reply.data), getattr(args, "json", False))
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
