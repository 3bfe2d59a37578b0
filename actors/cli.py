"""`cc-slurm-adapter`: the original's flags, Go style (`-x` and `--x`, `-x=v` and `-x v`).

With -daemon it runs the supervisor; without, it is the Slurm prolog/epilog hook client.
Kept free of heavy imports: the hook client's start-up is what every Slurm job pays.
"""

from __future__ import annotations

import sys

USAGE = """\
Usage of cc-slurm-adapter:
  -config string
        Path to the config file (default "/etc/cc-slurm-adapter/config.json")
  -daemon
        Run as daemon (supervisor with its actors). Without it: Slurm prolog/epilog hook client.
  -debug int
        Log level: 0 fatal, 1 error, 2 warn, 3 info, 4 debug (default 2)
  -help
        Show this help
"""
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  #: as Go's flag package: unknown flag or bad value

BOOL_FLAGS = ("daemon", "help", "h")
VALUE_FLAGS = ("config", "debug")


class UsageError(Exception):
    pass


def parse_flags(argv: list[str]) -> dict:
    flags: dict = {"daemon": False, "help": False, "config": None, "debug": 2}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--" or not arg.startswith("-") or arg == "-":
            raise UsageError(f"unexpected argument {arg!r}")
        name, eq, value = arg.lstrip("-").partition("=")
        if name in BOOL_FLAGS:
            if eq and value.lower() not in ("true", "false", "1", "0"):
                raise UsageError(f"invalid boolean value {value!r} for -{name}")
            flags["help" if name == "h" else name] = (value.lower() in ("true", "1")) if eq else True
        elif name in VALUE_FLAGS:
            if not eq:
                if not args:
                    raise UsageError(f"flag needs an argument: -{name}")
                value = args.pop(0)
            flags[name] = value
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
    try:
        flags["debug"] = int(flags["debug"])
    except ValueError:
        raise UsageError(f"invalid value {flags['debug']!r} for flag -debug: give a number 0-4") from None
    return flags


def main(argv: list[str] | None = None) -> int:
    try:
        flags = parse_flags(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        sys.stderr.write(f"{e}\n{USAGE}")
        return EXIT_USAGE
    if flags["help"]:
        sys.stdout.write(USAGE)
        return EXIT_OK
    if flags["daemon"]:
        from supervisor import run_daemon

        return run_daemon(flags["config"], flags["debug"])
    from actors.hook_client import run_hook_client

    return run_hook_client(flags["config"], flags["debug"])


if __name__ == "__main__":
    sys.exit(main())
