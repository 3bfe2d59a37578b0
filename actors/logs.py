"""Logging: one line per event on stderr, journald-friendly, secrets never printed."""

from __future__ import annotations

import logging
import sys

#: -debug N -> logging level (0 fatal, 1 error, 2 warn, 3 info, 4 debug), as the original.
DEBUG_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG}
LEVEL_NAMES = {logging.CRITICAL: "FATAL", logging.ERROR: "ERROR", logging.WARNING: "WARN ", logging.INFO: "INFO ", logging.DEBUG: "DEBUG"}
REDACTED = "<redacted>"
MIN_SECRET_CHARS = 6


class _LineFormatter(logging.Formatter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        # A secret of a few characters would garble every line it occurs in; real JWTs are long.
        self.secrets = [s for s in secrets if len(s) >= MIN_SECRET_CHARS]

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        level = LEVEL_NAMES.get(record.levelno, record.levelname)
        return f"{level} {record.name}[{record.process}]: {text}"


def setup_logging(debug_level: int, secrets: list[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter(list(secrets)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(DEBUG_LEVELS.get(min(max(debug_level, 0), 4)))


def job_tag(cluster: str, job_id: int | str) -> str:
    """How every log line names a job: `job 123@cluster`."""
    return f"job {job_id}@{cluster}"
