"""InfluxDB line protocol for cc-backend's NATS job API (cc-backend-contract.md §9.2).

One event is one line, the shape the Go adapter sends and cc-backend v1.5 parses:

    job,function=start_job,hostname=ctl1 event="{\\"jobId\\":1,...}" 1712345678000000000\\n

Producer rules: tags sorted by key; `,` `=` and space in tag keys and values get a backslash; empty
tag values are left out (cc-backend's parser refuses them), and so are values the parser could not
read back (line breaks, tabs, backslashes: a partition name is never worth losing a job); in the `event` string field every
backslash becomes `\\\\` and every `"` becomes `\\"` — escaping only the quotes would let the parser
turn a JSON `\\n` into a raw newline and cc-backend would drop the job. The timestamp is required
(a line without one aborts the rest of the message server side): unix seconds → nanoseconds.

`decode_lines` is the reading side, following the same parser rules; the tests use it to check lines.
"""

from __future__ import annotations

from typing import NamedTuple

MEASUREMENT = "job"
NS_PER_S = 1_000_000_000
_TAG_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}  #: after a backslash in a string field


class LineProtocolError(ValueError):
    pass


class Line(NamedTuple):
    measurement: str
    tags: dict[str, str]
    fields: dict[str, str]  #: string fields decoded; any other field as its raw text
    timestamp_ns: int


def is_tag_value(value: str) -> bool:
    """Can `value` be a tag key or value? Not empty, printable (space is), no backslash."""
    return bool(value) and value.isprintable() and "\\" not in value


def encode_job_event(event: str, body_json: bytes, timestamp_s: int, tags: dict[str, str]) -> bytes:
    """One `job` line for `event` ("start_job"/"stop_job") with `function` and `tags` (those that
    is_tag_value refuses are left out); raises LineProtocolError for a body that is not UTF-8."""
    all_tags = {k: v for k, v in tags.items() if is_tag_value(k) and is_tag_value(v)}
    all_tags["function"] = event
    tag_text = "".join(f",{key.translate(_TAG_ESCAPES)}={all_tags[key].translate(_TAG_ESCAPES)}"
                       for key in sorted(all_tags))
    try:
        body = body_json.decode("utf-8")  # cc-backend refuses invalid UTF-8
    except UnicodeDecodeError as e:
        raise LineProtocolError(f"the event body is not UTF-8: {e}") from None
    escaped = body.replace("\\", "\\\\").replace('"', '\\"')
    return f'{MEASUREMENT}{tag_text} event="{escaped}" {int(timestamp_s) * NS_PER_S}\n'.encode()


# --- reading (tests, and anyone who wants to look at what went out) --------------------------


def decode_lines(payload: bytes) -> list[Line]:
    """Every line of a NATS message (blank and # comment lines skipped); raises LineProtocolError
    where cc-backend's parser would stop."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LineProtocolError(f"invalid UTF-8: {e}") from None
    lines, pos = [], 0
    while pos < len(text):
        if text[pos] == "\n":
            pos += 1
            continue
        if text[pos] == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end + 1
            continue
        line, pos = _decode_line(text, pos)
        lines.append(line)
    return lines


def _decode_line(text: str, pos: int) -> tuple[Line, int]:
    measurement, pos = _read_name(text, pos, ", ", "measurement")
    tags: dict[str, str] = {}
    while text[pos] == ",":
        key, pos = _read_name(text, pos + 1, "=", "tag key")
        value, pos = _read_name(text, pos + 1, ", ", f"tag {key}")
        tags[key] = value
    fields: dict[str, str] = {}
    separator = " "
    while separator != "" and text[pos] == separator:
        key, pos = _read_name(text, pos + 1, "=", "field key")
        pos += 1
        if pos < len(text) and text[pos] == '"':
            fields[key], pos = _read_string(text, pos + 1)
        else:
            fields[key], pos = _read_name(text, pos, ", \n", f"field {key}")
        separator = "," if pos < len(text) and text[pos] == "," else ""
    if not fields:
        raise LineProtocolError(f"line without fields at offset {pos}")
    if pos >= len(text) or text[pos] != " ":
        raise LineProtocolError("missing timestamp")
    end = pos + 1
    while end < len(text) and text[end] != "\n":
        end += 1
    stamp = text[pos + 1:end]
    if not stamp.lstrip("-").isdigit():
        raise LineProtocolError(f"timestamp {stamp!r} is not an integer")
    return Line(measurement, tags, fields, int(stamp)), end + 1


def _read_name(text: str, pos: int, stops: str, what: str) -> tuple[str, int]:
    """A measurement, tag key/value or field key: backslash escapes `,` `=` space; ends at `stops`."""
    out = []
    while pos < len(text) and text[pos] not in stops:
        char = text[pos]
        if char in " \t\r\n":
            raise LineProtocolError(f"unescaped whitespace inside {what}")
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in ",= ":
            char, pos = text[pos + 1], pos + 1
        out.append(char)
        pos += 1
    if not out:
        raise LineProtocolError(f"empty {what} at offset {pos}")
    if pos >= len(text) and "\n" not in stops:
        raise LineProtocolError(f"line ends inside {what}")
    return "".join(out), pos


def _read_string(text: str, pos: int) -> tuple[str, int]:
    """A string field value after its opening quote; returns it and the position after the closing one."""
    out = []
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in _STRING_ESCAPES:
            char, pos = _STRING_ESCAPES[text[pos + 1]], pos + 1
        out.append(char)
        pos += 1
    raise LineProtocolError("unterminated string field")
