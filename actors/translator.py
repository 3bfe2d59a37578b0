"""translator: turns each Slurm job of a batch into cc-backend start/stop bodies, writes them to the
outbox for every sink, and only then acknowledges the batch to the querier (commit first, ack second).

A job it cannot read is quarantined with its JSON path; the others flow on. A job that crashes
this process (any exception escaping, even an interpreter abort) is found on the next start: the
batch in flight is recorded before work begins, its jobs are then translated one at a time, and a
job that has crashed us MAX_CRASHES times is quarantined without being touched again.
"""

from __future__ import annotations

import os
import sqlite3
import time

import msgspec
import zmq

from actors.logs import job_tag
from actors.messages import BatchDone, OutboxChanged, SlurmBatch, SlurmJobRecord, TranslatorInbox
from actors.outbox import BACKEND_CLUSTERS_KEY, Outbox, OutboxEvent
from actors.runtime import POLL_TIMEOUT_MS, ActorRuntime
from actors.topology import parse_clusters
from actors.translate import TranslateContext, Translation, translate_record

MAX_CRASHES = 3  #: crashes of the translator on one job before that job is quarantined
INFLIGHT_KEY = "translator.inflight"  #: kv: the jobs being translated right now
SUSPECTS_KEY = "translator.suspects"  #: kv: job key -> crashes it was present for
TOPOLOGY_REFRESH_S = 60.0
#: Test-only fault injection: a job id whose translation kills this process (an interpreter abort).
CRASH_ON_JOB_ENV = "CCSA_TEST_CRASH_ON_JOB"


def job_key(record: SlurmJobRecord) -> str:
    return f"{record.cluster}/{record.job_id}"


class Translator:
    def __init__(self, rt: ActorRuntime, outbox: Outbox):
        self.rt = rt
        self.log = rt.log
        self.outbox = outbox
        self.sinks = sinks_of(rt.config)
        self.encoder = msgspec.json.Encoder()
        self.context = TranslateContext.from_config(rt.config)
        self.topology_text = None
        self.topology_checked_at = 0.0
        self.suspects: dict[str, int] = msgspec.json.decode(outbox.kv_get(SUSPECTS_KEY) or b"{}")
        self._blame_crashed_batch()
        rt.facts.update({"batches": 0, "jobs": 0, "quarantined": 0, "skipped": 0, "sinks": ",".join(self.sinks)})

    def _blame_crashed_batch(self) -> None:
        inflight = msgspec.json.decode(self.outbox.kv_get(INFLIGHT_KEY) or b"[]")
        if not inflight:
            return
        for key in inflight:
            self.suspects[key] = self.suspects.get(key, 0) + 1
        self.log.error("the previous translator died while translating %d job(s): %s", len(inflight),
                       ", ".join(inflight[:10]))
        self.outbox.kv_set(SUSPECTS_KEY, self.encoder.encode(self.suspects))
        self.outbox.kv_set(INFLIGHT_KEY, b"[]")

    def refresh_topology(self, now: float) -> None:
        # Until rest_submitter has stored cc-backend's topology, look at every batch (one kv read):
        # jobs translated without it lose their SMT siblings for good.
        if self.topology_text is not None and now - self.topology_checked_at < TOPOLOGY_REFRESH_S:
            return
        self.topology_checked_at = now
        text = self.outbox.kv_get(BACKEND_CLUSTERS_KEY)
        if text and text != self.topology_text:
            try:
                self.context = TranslateContext.from_config(self.rt.config, parse_clusters(text))
                self.topology_text = text
                self.log.info("using cc-backend's cluster topology for hardware thread ids")
            except (msgspec.DecodeError, ValueError) as e:
                self.log.warning("cc-backend's cluster description is unusable (%s); numbering cores as Slurm does", e)

    def handle(self, batch: SlurmBatch) -> BatchDone:
        """Translate every job, write the outbox in one transaction, return the acknowledgement."""
        self.refresh_topology(time.time())
        careful = [r for r in batch.records if job_key(r) in self.suspects]
        normal = [r for r in batch.records if job_key(r) not in self.suspects]
        events, quarantined, skipped = [], 0, 0
        self.outbox.kv_set(INFLIGHT_KEY, self.encoder.encode([job_key(r) for r in normal]))
        for record in normal:
            q, s = self._translate_into(record, batch, events)
            quarantined, skipped = quarantined + q, skipped + s
        self.outbox.enqueue(events, seen=[(r.cluster, r.job_id, batch.source) for r in normal],
                            clear_kv=INFLIGHT_KEY)
        for record in careful:  # one at a time: a crash now blames exactly this job
            q, s = self._translate_suspect(record, batch)
            quarantined, skipped = quarantined + q, skipped + s
        facts = self.rt.facts
        facts["batches"] += 1
        facts["jobs"] += len(batch.records)
        facts["quarantined"] += quarantined
        facts["skipped"] += skipped
        return BatchDone(batch_id=batch.batch_id, translated=len(batch.records) - quarantined - skipped,
                         quarantined=quarantined, skipped=skipped)

    def _translate_suspect(self, record: SlurmJobRecord, batch: SlurmBatch) -> tuple[int, int]:
        key = job_key(record)
        if self.suspects[key] >= MAX_CRASHES:
            self._quarantine(record, batch, "$", f"the translator crashed {self.suspects[key]} times on this job")
            return 1, 0
        self.outbox.kv_set(INFLIGHT_KEY, self.encoder.encode([key]))
        events: list[OutboxEvent] = []
        q, s = self._translate_into(record, batch, events)
        self.outbox.enqueue(events, seen=[(record.cluster, record.job_id, batch.source)], clear_kv=INFLIGHT_KEY)
        del self.suspects[key]  # it went through: not the culprit
        self.outbox.kv_set(SUSPECTS_KEY, self.encoder.encode(self.suspects))
        return q, s

    def _translate_into(self, record: SlurmJobRecord, batch: SlurmBatch, events: list) -> tuple[int, int]:
        """Adds the record's outbox events; returns (quarantined, skipped) counts for it."""
        if str(record.job_id) == os.environ.get(CRASH_ON_JOB_ENV):
            os.abort()
        try:
            result = translate_record(bytes(record.sacct), bytes(record.live), record.job_script, self.context)
        except Exception as e:  # a bug in the mapping must cost one job, not the batch
            self.log.exception("%s: translation failed", job_tag(record.cluster, record.job_id))
            result = Translation(quarantine=("$", f"{type(e).__name__}: {e}"))
        if result.warning:
            self.log.warning("%s: %s", job_tag(record.cluster, record.job_id), result.warning)
        if result.quarantine is not None:
            self._quarantine(record, batch, *result.quarantine)
            return 1, 0
        if result.start is None:
            self.log.debug("%s: nothing to send (%s)", job_tag(record.cluster, record.job_id), result.skip_reason)
            return 0, 1
        events.extend(self.events_for(result))
        return 0, 0

    def events_for(self, result: Translation) -> list[OutboxEvent]:
        start = result.start
        start_body = self.encoder.encode(start)
        events = [OutboxEvent(sink=s, cluster=start.cluster, job_id=start.job_id, start_time=start.start_time,
                              event="start_job", body=start_body) for s in self.sinks]
        if result.stop is not None:
            stop_body = self.encoder.encode(result.stop)
            events += [OutboxEvent(sink=s, cluster=start.cluster, job_id=start.job_id, start_time=start.start_time,
                                   event="stop_job", body=stop_body) for s in self.sinks]
        return events

    def on_store_error(self, batch: SlurmBatch, error: sqlite3.Error) -> None:
        """The outbox cannot be written (stateDir full or read-only): the batch is not acknowledged,
        so the querier sends it again and its window stays; this process and its suspects stay as they are."""
        self.rt.facts["store_error"] = f"outbox: {error}"
        self.log.error("cannot write the outbox (%s): batch %d not acknowledged, slurm_querier sends it again",
                       error, batch.batch_id)
        try:  # the jobs of this batch did not crash us: do not blame them if something else does
            self.outbox.kv_delete(INFLIGHT_KEY)
        except sqlite3.Error:
            pass

    def _quarantine(self, record: SlurmJobRecord, batch: SlurmBatch, path: str, error: str) -> None:
        if self.outbox.quarantine_add(record.cluster, record.job_id, path, error, bytes(record.sacct), batch.release):
            self.log.error("%s quarantined: %s at %s (ccctl quarantine show %s)", job_tag(record.cluster, record.job_id),
                           error, path, record.job_id)


def sinks_of(config) -> list[str]:
    sinks = []
    if config.cc_rest_submit_jobs:
        sinks.append("rest")
    if config.nats_server:
        sinks.append("nats")
    return sinks


def run(rt: ActorRuntime) -> int:
    inbox = rt.socket(zmq.PULL, bind=rt.pipes.translator)
    inbox.setsockopt(zmq.RCVHWM, 20)
    to_querier = rt.socket(zmq.PUSH, connect=rt.pipes.querier)
    news = rt.socket(zmq.PUB, bind=rt.pipes.outbox_news)
    decoder = msgspec.json.Decoder(TranslatorInbox)
    outbox = Outbox(rt.config.outbox_path)
    translator = Translator(rt, outbox)
    poller = zmq.Poller()
    poller.register(inbox, zmq.POLLIN)
    while rt.keep_running():
        if not poller.poll(POLL_TIMEOUT_MS):
            continue
        # one batch at a time: a 10 000-job poll is 20 batches of ~5 MB waiting here at once
        batch = rt.receive_one(inbox, decoder)
        if batch is None:
            continue
        try:
            done = translator.handle(batch)
        except sqlite3.Error as e:
            translator.on_store_error(batch, e)
            continue
        rt.facts.pop("store_error", None)
        rt.send(news, OutboxChanged(rows=done.translated))
        rt.send(to_querier, done)
    outbox.close()
    return 0
