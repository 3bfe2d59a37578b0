"""Real Slurm 24.11 JSON rewritten into the shapes of 23.02, 23.11, 24.05 and 25.05 (test helper).

The bench runs Slurm 22.05, 24.11 and 26.05 only. This converter applies to a 24.11 document
(data_parser v0.0.42) the differences reference/slurm-json-across-releases.md documents for each
release's default data_parser in `meta` and in the job fields the adapter reads
(actors/slurm_views.py, actors/slurm_live_views.py), plus sacct's `association`; fields the
adapter does not read stay as 24.11 printed them. Each rule names its section of that reference:

* 25.05 (v0.0.43): sacct `association` account/user/partition are "" (section "Corrections from
  a second, independent reading", first item); nothing the adapter reads changes (§5 item 14).
* 24.05 (v0.0.41): squeue/scontrol print `exclusive` again, [str] (§3 table, §5 item 13).
* 23.11 (v0.0.40): the above, and job_resources in shape 1 (objects keyed by index strings,
  allocated cores only), `{}` for a job without resources (§3.1, §5 items 11 and 12).
* 23.02 (v0.0.39): the above, and `state.current` / `job_state` a plain string (§2 and §3 tables,
  §5 item 9); sacct `exit_code` "obj A′" with 22.05's bug: every normal exit SUCCESS/0, and from
  23.02.5 return_code -127 for a signal (§2 "Exit-code objects", §5 item 6); squeue/scontrol
  timestamps plain ints and `exit_code` the no-value object of the raw wait status (23.02.4+,
  §3 table, §5 item 7); `meta.Slurm` with int versions and `meta.plugins` (§4 table).

Each release is taken at the last micro release the reference read (23.02.8, 23.11.11, 24.05.8,
25.05.8). This bench can run three of those data_parsers inside newer releases (24.11 ships
v0.0.40 and v0.0.41, 26.05 ships v0.0.43; §1): test_translate_intermediate_releases.py checks the
rules against what they print (tests/golden/older-plugins/).
"""

from __future__ import annotations

import copy

#: release -> (micro, data_parser) of the shape produced.
SHAPES = {
    "23.02": (8, "data_parser/v0.0.39"),
    "23.11": (11, "data_parser/v0.0.40"),
    "24.05": (8, "data_parser/v0.0.41"),
    "25.05": (8, "data_parser/v0.0.43"),
}
#: squeue/scontrol timestamps that v0.0.39 prints as plain ints (§3 table).
LIVE_TIMES = ("submit_time", "eligible_time", "start_time", "end_time", "suspend_time", "accrue_time", "resize_time")
NOT_SET = {"set": False, "infinite": False, "number": 0}  #: the no-value object of NO_VAL


def sacct_as(document: dict, release: str) -> dict:
    """A `sacct --json` document of 24.11 in the shape of `release`."""
    out = copy.deepcopy(document)
    out["meta"] = _meta(document["meta"], release)
    for job in out["jobs"]:
        if release == "25.05":
            job["association"].update(account="", user="", partition="")
        if release == "23.02":
            job["state"]["current"] = _first(job["state"]["current"])
            job["exit_code"] = _buggy_exit_code(job["exit_code"])
    return out


def live_as(document: dict, release: str) -> dict:
    """A `squeue --json` or `scontrol show job --json` document of 24.11 in the shape of `release`."""
    out = copy.deepcopy(document)
    out["meta"] = _meta(document["meta"], release)
    if release == "25.05":
        return out
    for job in out["jobs"]:
        job["exclusive"] = _exclusive(job["shared"])
        if release == "24.05":
            continue
        job["job_resources"] = _shape_1(job["job_resources"])
        if release == "23.11":
            continue
        job["job_state"] = _first(job["job_state"])
        for key in LIVE_TIMES:
            if isinstance(job.get(key), dict):
                job[key] = _number(job[key]) or 0
        job["exit_code"] = _raw_status(job["exit_code"])
    return out


def _meta(meta: dict, release: str) -> dict:
    micro, parser = SHAPES[release]
    major, minor = release.split(".")
    if release == "23.02":
        return {"plugins": {"data_parser": parser, "accounting_storage": "accounting_storage/slurmdbd"},
                "command": list(meta.get("command", [])),
                "Slurm": {"version": {"major": int(major), "minor": int(minor), "micro": micro},
                          "release": f"{release}.{micro}"}}
    out = copy.deepcopy(meta)
    out["plugin"]["data_parser"] = parser
    out["slurm"]["version"] = {"major": major, "minor": minor, "micro": str(micro)}
    out["slurm"]["release"] = f"{release}.{micro}"
    return out


def _first(value):
    return value[0] if isinstance(value, list) else value


def _number(value) -> int | None:
    if isinstance(value, dict):
        return value["number"] if value.get("set") and not value.get("infinite") else None
    return value


def _buggy_exit_code(code: dict) -> dict:
    """obj B -> obj A′: a normal exit, zero or not, reads SUCCESS/0; a signal keeps its number."""
    status = _first(code["status"])
    if status in ("SIGNALED", "CORE_DUMPED"):
        signal = _number(code["signal"]["id"])
        return {"status": status, "return_code": -127,
                "signal": {"signal_id": 0 if signal is None else signal, "name": code["signal"]["name"]}}
    if status in ("SUCCESS", "ERROR"):
        return {"status": "SUCCESS", "return_code": 0}
    return {"status": status, "return_code": 0}  # PENDING, INVALID


def _raw_status(code: dict) -> dict:
    """obj B -> the no-value object of the raw wait status (exit << 8, or the signal number)."""
    status = _first(code["status"])
    if status == "SUCCESS":
        raw = 0
    elif status == "ERROR":
        raw = (_number(code["return_code"]) or 0) << 8
    elif status in ("SIGNALED", "CORE_DUMPED"):
        raw = (_number(code["signal"]["id"]) or 0) | (0x80 if status == "CORE_DUMPED" else 0)
    else:  # PENDING: no exit yet
        return dict(NOT_SET)
    return {"set": True, "infinite": False, "number": raw}


def _exclusive(shared: list[str]) -> list[str]:
    """`exclusive` beside `shared` (values true/false/user/mcs, §3 table): ["true"] for a
    whole-node job, [] when the job asked for nothing (as v0.0.40/41 print it on 24.11)."""
    if "none" in shared:
        return ["true"]
    return [word for word in shared if word in ("user", "mcs")]


def _shape_1(resources):
    """job_resources shape 2 -> shape 1 (§3.1)."""
    if not resources:
        return {}
    nodes = resources["nodes"]
    allocated = []
    for node in nodes["allocation"]:
        sockets = {}
        for socket in node["sockets"]:
            cores = {str(core["index"]): "allocated_and_in_use" if "IN_USE" in core["status"] else "allocated"
                     for core in socket["cores"] if "ALLOCATED" in core["status"]}
            if cores:
                sockets[str(socket["index"])] = {"cores": cores}
        allocated.append({"sockets": sockets, "nodename": node["name"], "cpus_used": node["cpus"]["used"],
                          "memory_used": node["memory"]["used"], "memory_allocated": node["memory"]["allocated"]})
    return {"nodes": nodes["list"], "allocated_cores": sum(len(s["cores"]) for n in allocated for s in n["sockets"].values()),
            "allocated_cpus": 0, "allocated_hosts": nodes["count"], "allocated_nodes": allocated}
