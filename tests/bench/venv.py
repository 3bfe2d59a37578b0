"""Lets a benchmark script run from a plain `scripts/bench-…` call: outside the project's venv it
re-executes itself with the venv's Python (made by scripts/setup-python if it is not there yet).
Imports nothing beyond the standard library."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def use_project_venv() -> None:
    try:
        import msgspec  # noqa: F401 - the probe: present in the venv only
        return
    except ImportError:
        pass
    setup = os.path.join(ROOT, "scripts", "setup-python")
    venv = subprocess.run([setup], check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    python = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        sys.exit(f"{sys.argv[0]}: the project's venv {venv} lacks its dependencies; run scripts/setup-python")
    os.execv(python, [python, os.path.abspath(sys.argv[0]), *sys.argv[1:]])
