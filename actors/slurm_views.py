"""Views of Slurm's JSON: only the fields we use, tolerant of every release from 22.05 to 26.05.

The Structs here read `sacct --json` jobs[] and the `meta` of every document; slurmctld's live
jobs[] (`squeue --json` / `scontrol show job --json`) are read by actors/slurm_live_views.py with
the same types and normalisers. A field is typed as the union of every shape a release really
prints (reference/slurm-json-across-releases.md), and small normalisers turn that union into one
plain Python value:

* counters and times: a plain int, the no-value object `{"set","infinite","number"}`, null, a
  number written as a string, or the raw 32-bit sentinel (4294967294 NO_VAL, 4294967295 INFINITE)
  -> `int_value()` gives an int or None;
* state and flag fields: "RUNNING" (22.05, 23.02) or ["RUNNING"] (23.11+) -> `first_str()`;
* strings: null (22.05) or "" -> `text()` gives "";
* job_resources: see actors/slurm_live_views.py.

No dec_hook: msgspec decodes the unions natively, which keeps the document decode at a few
microseconds per job.
"""

from __future__ import annotations

import msgspec

#: Slurm's 32-bit "no value" and "infinite" sentinels, written raw into plain fields from v0.0.43
#: and into sacct's time.start of never-started jobs (24.11+ print 4294967294 there).
NO_VAL32 = 4294967294
INFINITE32 = 4294967295
#: The same sentinels through a signed 64-bit field (-2 / -1), e.g. the energy TRES count.
NO_VAL64_SIGNED = -2


class NoValue(msgspec.Struct, gc=False):
    """`{"set": bool, "infinite": bool, "number": n}` (v0.0.39+)."""

    set: bool = True
    infinite: bool = False
    number: int | float = 0


#: Every shape a Slurm counter or timestamp takes in some release.
SlurmInt = int | float | str | NoValue | None
#: "RUNNING" in 22.05/23.02, ["RUNNING"] from 23.11 on; null where unset.
StrOrList = str | list[str] | None


def int_value(value) -> int | None:
    """A Slurm counter/timestamp as an int; None for unset, infinite, NO_VAL or garbage."""
    kind = type(value)
    if kind is int:
        return None if value >= NO_VAL32 else value
    if value is None:
        return None
    if kind is NoValue:
        if not value.set or value.infinite:
            return None
        value = value.number
        kind = type(value)
        if kind is int:
            return None if value >= NO_VAL32 else value
    if kind is str:
        value = value.strip()
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return None
        kind = type(value)
        if kind is int:
            return None if value >= NO_VAL32 else value
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            return None
        value = int(value)
        return None if value >= NO_VAL32 else value
    return None


def first_str(value) -> str:
    """First element of a string-or-list field, without quotes; "" when unset or empty."""
    if type(value) is str:
        return value
    if value:
        first = value[0]
        return first if type(first) is str else ""
    return ""


def text(value) -> str:
    return value if type(value) is str else ""


# --------------------------------------------------------------------------------------- meta

class SlurmVersion(msgspec.Struct, gc=False):
    major: int | str | None = None
    minor: int | str | None = None
    micro: int | str | None = None


class SlurmMeta(msgspec.Struct, gc=False):
    version: SlurmVersion | None = None
    release: str | None = None


class PluginMeta(msgspec.Struct, gc=False):
    type: str | None = None
    data_parser: str | None = None


class Meta(msgspec.Struct, gc=False):
    # 22.05 and 23.02 spell it "Slurm" (ints), 23.11+ "slurm" (strings).
    slurm_old: SlurmMeta | None = msgspec.field(default=None, name="Slurm")
    slurm: SlurmMeta | None = None
    plugin: PluginMeta | None = None  # 22.05 type "openapi/dbv0.0.38"; 23.11+ data_parser
    plugins: PluginMeta | None = None  # 23.02 only


class Release(msgspec.Struct, frozen=True, gc=False):
    major: int
    minor: int
    micro: int
    data_parser: str  #: "openapi/dbv0.0.38", "data_parser/v0.0.42", "" when unknown

    @property
    def text(self) -> str:
        return f"{self.major}.{self.minor:02d}.{self.micro}" if self.major else ""


def _version_number(value) -> int:
    number = int_value(value)
    return number if number is not None and number >= 0 else 0


def release_of(meta: Meta | None) -> Release:
    """The producing Slurm release from `meta` (any release); zeros when it cannot be told."""
    if meta is None:
        return Release(0, 0, 0, "")
    slurm = meta.slurm or meta.slurm_old
    version = slurm.version if slurm is not None else None
    plugin = meta.plugin or meta.plugins
    parser = ""
    if plugin is not None:
        parser = text(plugin.data_parser) or text(plugin.type)
    if version is None:
        return Release(0, 0, 0, parser)
    return Release(_version_number(version.major), _version_number(version.minor),
                   _version_number(version.micro), parser)


# ----------------------------------------------------------------------------- sacct jobs[]

class Tres(msgspec.Struct, gc=False):
    type: str | None = None
    name: str | None = None
    count: SlurmInt = None


class TresLists(msgspec.Struct, gc=False):
    """Both lists stay raw in the document decode and are decoded with TRES_LIST when used: the
    allocated list through a cache keyed by its bytes (jobs of one shape share it), the
    requested one only for a job whose allocated list has no cpu entry. That takes ~15 objects
    per job out of the document decode. (msgspec cannot decode `Raw | None`: null is Raw null.)"""

    requested: msgspec.Raw = msgspec.Raw(b"null")
    allocated: msgspec.Raw = msgspec.Raw(b"null")


class SacctArray(msgspec.Struct, gc=False):
    job_id: SlurmInt = None
    task_id: SlurmInt = None


class SacctHet(msgspec.Struct, gc=False):
    """A component of a heterogeneous job: `job_id` is the leader's id (0 when not het)."""

    job_id: SlurmInt = None
    job_offset: SlurmInt = None


class SacctRequired(msgspec.Struct, gc=False):
    CPUs: SlurmInt = None


class SacctState(msgspec.Struct, gc=False):
    current: StrOrList = None


class SacctTime(msgspec.Struct, gc=False):
    submission: SlurmInt = None
    start: SlurmInt = None
    end: SlurmInt = None
    limit: SlurmInt = None  #: minutes


class ExitSignal(msgspec.Struct, gc=False):
    signal_id: SlurmInt = None  # 22.05 / v0.0.39
    id: SlurmInt = None  # v0.0.40+
    name: str | None = None


class ExitCode(msgspec.Struct, gc=False):
    """sacct obj A (22.05, v0.0.39: status str, broken for normal exits) or obj B (v0.0.40+)."""

    status: StrOrList = None
    return_code: SlurmInt = None
    signal: ExitSignal | None = None


class Comment(msgspec.Struct, gc=False):
    job: str | None = None


class SacctJob(msgspec.Struct, gc=False):
    job_id: int
    cluster: str | None = None
    partition: str | None = None
    account: str | None = None
    user: str | None = None
    name: str | None = None
    qos: str | None = None
    nodes: str | None = None
    allocation_nodes: SlurmInt = None
    array: SacctArray | None = None
    required: SacctRequired | None = None
    tres: TresLists | None = None
    state: SacctState | None = None
    time: SacctTime | None = None
    exit_code: ExitCode | None = None
    comment: Comment | None = None
    working_directory: str | None = None
    script: str | None = None  # 23.02+
    exclusive: str | None = None  # v0.0.45 (26.05+)
    oversubscribe: str | None = None  # v0.0.45 (26.05+)
    het: SacctHet | None = None


class SacctDocument(msgspec.Struct, gc=False):
    jobs: list[SacctJob]
    meta: Meta | None = None


class SacctRawDocument(msgspec.Struct, gc=False):
    """The slow path: one Raw per job, to find the record that does not decode."""

    jobs: list[msgspec.Raw]
    meta: Meta | None = None


# One decoder per shape, built once and reused (docs/perf-tips.rst).
SACCT_DOCUMENT = msgspec.json.Decoder(SacctDocument)
SACCT_RAW_DOCUMENT = msgspec.json.Decoder(SacctRawDocument)
SACCT_JOB = msgspec.json.Decoder(SacctJob)
TRES_LIST = msgspec.json.Decoder(list[Tres] | None)


# ------------------------------------------------------------------------------ hostlists

#: More hosts than this in one expression is not a job allocation but a typo or an attack.
MAX_HOSTS = 65536
_NONE_ASSIGNED = "none assigned"


def expand_hostlist(expression: str) -> list[str]:
    """Slurm hostlist syntax -> hostnames in Slurm's order, duplicates dropped.

    `n[1-3,5],gpu[01-02]` -> n1 n2 n3 n5 gpu01 gpu02; several bracket groups in one term
    (`r[1-2]n[01-02]`) expand as a product; `"None assigned"` and "" give [].
    Raises ValueError for unbalanced brackets, bad ranges, or more than MAX_HOSTS names.
    """
    expression = expression.strip()
    if not expression or expression.lower() == _NONE_ASSIGNED:
        return []
    hosts: list[str] = []
    for term in _split_outside_brackets(expression):
        if term:
            hosts.extend(_expand_term(term))
            if len(hosts) > MAX_HOSTS:
                raise ValueError(f"more than {MAX_HOSTS} hosts")
    return list(dict.fromkeys(hosts)) if len(hosts) > 1 else hosts


def _split_outside_brackets(expression: str) -> list[str]:
    if "[" not in expression:
        return [part.strip() for part in expression.split(",")]
    terms, depth, start = [], 0, 0
    for i, char in enumerate(expression):
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError("nested '['")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError("']' without '['")
        elif char == "," and depth == 0:
            terms.append(expression[start:i].strip())
            start = i + 1
    if depth:
        raise ValueError("'[' without ']'")
    terms.append(expression[start:].strip())
    return terms


def _expand_term(term: str) -> list[str]:
    open_at = term.find("[")
    if open_at < 0:
        if "]" in term:
            raise ValueError("']' without '['")
        return [term]
    close_at = term.index("]", open_at)
    prefix, group, rest = term[:open_at], term[open_at + 1:close_at], term[close_at + 1:]
    tails = _expand_term(rest) if rest else [""]
    names = []
    for part in group.split(","):
        low, dash, high = part.strip().partition("-")
        if not (low.isdigit() and low.isascii()) or (dash and not (high.isdigit() and high.isascii())):
            raise ValueError(f"bad range {part!r}")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"range {part!r} runs backwards")
        if (last - first + 1) * len(tails) + len(names) > MAX_HOSTS:
            raise ValueError(f"more than {MAX_HOSTS} hosts")
        width = len(low)
        for number in range(first, last + 1):
            digits = str(number).zfill(width)
            for tail in tails:
                names.append(prefix + digits + tail)
    return names
