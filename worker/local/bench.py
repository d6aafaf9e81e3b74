"""`python -m worker bench`: throughput, latency, start-up and memory through the real path.

A fixed, seeded workload of report-style tests (``bench_workload``: no two names alike once
normalised) goes through a moto SQS server, a ``python -m worker`` process with the packaged model
(and the encoder of ``--encoder``), and SQLite (default) or the PostgreSQL database given with
``--database-url``:

- start-up: from spawning the worker to the first job (already waiting in the queue) done;
- cold: every test name is new (empty mapping memory, names never seen by the process);
- warm: the same reports again (new jobs, names seen before);
  each burst is queued while the worker is paused, and timed from its resumption to the last job
  done: the worker's throughput on a backlog, as the baseline's is measured, not the sender's;
- p50/p95 job latency from send to done, for jobs arriving one by one (5 a second, names seen
  before): what a user waits when the queue is not backed up. The cold and warm bursts' own
  latencies (every job sent at once, so they include the wait behind the burst) come as extras;
- peak RSS of the worker process (and any children), sampled throughout;

then the same cold workload through a naive baseline in this process, the way the app's old
worker did it: the float sentence-transformers model whatever the worker's encoder, one message
per receive, one test at a time, one embedding call per test, cosine against its reference
embeddings, no memory. ``speedup_vs_baseline`` is warm throughput over baseline throughput.

``--biobert-shaped`` swaps the packaged model for a BERT-base with random weights (BertConfig
defaults, mean pooling; built locally, nothing downloaded): the production model's size, for the
memory figure. ``--profile FILE`` runs the worker under cProfile and prints where time goes;
``--stages`` times each stage of the worker's path (receive, decode, memory, normalise, retrieval,
encoder, re-rank, decide, writes) during the cold and warm bursts, without a profiler's distortion.

The moto server runs with :func:`worker.local.emulator.patch_moto_receive`: stock moto scans the whole
queue for each message it returns, which made most of the warm run; ``--stock-moto`` measures it
as released.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

PACED_JOBS = 20
PACED_RATE = 5  # jobs a second, well under the warm capacity
JSON_KEYS = ("cold_tests_per_s", "warm_tests_per_s", "p50_job_latency_s", "p95_job_latency_s", "startup_s",
             "peak_rss_mb", "baseline_tests_per_s", "speedup_vs_baseline")


def note(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the workload


# the specimen a report prints in front of a name measured outside blood
SPECIMEN_WORDS = {"urine": "Urine", "stool": "Stool", "csf": "CSF", "pleural": "Pleural fluid",
                  "peritoneal": "Ascitic fluid", "synovial": "Synovial fluid", "fluid": "Body fluid"}
INVERTED_SHARE = 1 / 3  # of the workload's names, written 'Analyte, qualifier'


def bench_workload(jobs: int, seed: int, engine) -> list[list[dict]]:
    """``jobs`` reports in which no two test names are alike once normalised, seeded.

    Each report has the size of a bundled sample panel (chosen by the seeded generator) and takes
    its tests, each used once, from a pool of report-style names:

    - the names the reference gives each LOINC row (its component and core long name) and the
      synonym table's report terms for it, with the specimen in front when it is not blood
      ("Urine Protein"), and the bundled sample reports' own names;
    - for a third of the tests, such a name written in the inverted 'Analyte, qualifier' order of
      some laboratory systems ("Count, Platelet", "count, Total leukocyte"), which the normaliser
      keeps as it is.

    A name joins the pool only if its normalised form (the mapping memory's key, and the text the
    encoder would read) is new, so no test of the cold run can be answered from the memory or the
    engine's caches. The first kind are mostly names the reference uses (a lookup, no forward
    pass); the second kind need the encoder. ``looked_up_share`` says how many are the first. The warm
    run sends the same reports again.
    """
    from worker.local.sample_jobs import load_sample, sample_names

    rng = random.Random(seed)
    sizes = [len(load_sample(name)) for name in sample_names() if name != "guide_sample"]
    needed = [rng.choice(sizes) for _ in range(jobs)]
    plain, inverted = _name_pool(engine, rng)
    total = sum(needed)
    if total > len(plain) + len(inverted):
        raise ValueError(f"{jobs} jobs need {total} distinct names; the reference gives {len(plain) + len(inverted)}")
    reports = []
    for size in needed:
        tests = []
        for _ in range(size):
            pool = inverted if (rng.random() < INVERTED_SHARE and inverted) or not plain else plain
            tests.append(pool.pop())
        reports.append(tests)
    return reports


def _name_pool(engine, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """(plain, inverted) tests whose normalised names are all different, each list shuffled."""
    from collections import defaultdict

    from worker.local.sample_jobs import load_sample, sample_names
    from worker.mapping.names import entry_core_name, system_group
    from worker.mapping.synonyms import read_synonyms
    from worker.mapping.types import LabTestQuery

    terms = defaultdict(list)
    for synonym in read_synonyms():
        terms[synonym.code].append(synonym.term)
    written: list[dict] = []
    for entry in engine.reference.entries:
        specimen = SPECIMEN_WORDS.get(system_group(entry.system))
        unit = entry.units[0] if entry.units else None
        for name in (entry.component.replace("^", " "), entry_core_name(entry), *terms[entry.code]):
            value = f"{rng.uniform(0.5, 150):.1f}" if entry.scale.lower() == "qn" else rng.choice(
                ("Negative", "Positive", "Nil", "Trace"))
            written.append({"test_name": f"{specimen} {name}" if specimen else name, "test_value": value,
                            "test_unit": unit})
    for sample in sample_names():
        written.extend(load_sample(sample))
    seen: set = set()

    def new(test: dict) -> bool:
        query = LabTestQuery(name=test["test_name"], unit=test.get("test_unit"), value=test.get("test_value"),
                             specimen=test.get("specimen"))
        norm = engine.normalise(query)
        keys = (engine.key(query)[0], norm.expanded)
        if not norm.is_test or not norm.expanded or not seen.isdisjoint(keys):
            return False
        seen.update(keys)
        return True

    plain = [test for test in written if new(test)]
    inverted = []
    for test in written:
        words = test["test_name"].split()
        for split in sorted({1, len(words) - 1} - {0, len(words)}):  # "Count, Platelet"; "count, Total leukocyte"
            variant = {**test, "test_name": f"{' '.join(words[split:])}, {' '.join(words[:split])}"}
            if new(variant):
                inverted.append(variant)
    rng.shuffle(plain)
    rng.shuffle(inverted)
    return plain, inverted


def looked_up_share(engine, reports: list[list[dict]]) -> float:
    """The share of the workload's names the engine looks up (names the reference uses: no forward pass)."""
    from worker.mapping.types import LabTestQuery

    norms = [engine.normalise(LabTestQuery(name=t["test_name"], unit=t.get("test_unit"), value=t.get("test_value"),
                                           specimen=t.get("specimen"))) for report in reports for t in report]
    tests = [n for n in norms if n.is_test and n.expanded]
    return round(sum(engine.retriever.knows(n.expanded) for n in tests) / max(1, len(tests)), 3)


# --------------------------------------------------------------------------------------------
# the BioBERT-shaped model


def build_biobert_shaped(directory: Path, seed: int = 0) -> str:
    """A SentenceTransformer directory: BERT-base (BertConfig defaults) with random weights, mean pooling.

    The tokenizer is the packaged model's (bert-base-uncased's vocabulary, 30,522 tokens, the
    BertConfig default). Nothing is downloaded.
    """
    try:  # the engine's own builder, if it provides one
        from worker.mapping.benchmark import build_biobert_shaped as engine_builder  # type: ignore
    except ImportError:
        engine_builder = None
    if engine_builder is not None:
        return str(engine_builder(directory))
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from worker.mapping.model import packaged_model_dir

    target = directory / "biobert-shaped"
    if (target / "modules.json").exists():
        return str(target)
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.manual_seed(seed)
    bert_dir = directory / "bert-base-random"
    BertModel(BertConfig()).save_pretrained(bert_dir)
    AutoTokenizer.from_pretrained(packaged_model_dir()).save_pretrained(bert_dir)
    transformer = models.Transformer(str(bert_dir), max_seq_length=128)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(target))
    shutil.rmtree(bert_dir, ignore_errors=True)
    return str(target)


# --------------------------------------------------------------------------------------------
# measuring the worker process


class RssMonitor:
    """Samples the RSS of a process and its children until stopped; keeps the peak of the sum."""

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def start(self) -> RssMonitor:
        self._thread.start()
        return self

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                total = self.process.memory_info().rss
                for child in self.process.children(recursive=True):
                    try:
                        total += child.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak / (1024 * 1024)


def _as_epoch(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:  # SQLite hands back naive datetimes; the store writes UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def completion_times(engine, job_ids: set[str]) -> dict[str, float]:
    """completed_at (epoch seconds) of the given jobs that are done."""
    import sqlalchemy

    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text(
            "select job_id, completed_at from lab_jobs where status = 'done'")).all()
    return {job_id: _as_epoch(done) for job_id, done in rows if job_id in job_ids and done is not None}


def send_jobs(sqs, queue_url: str, reports: list[list[dict]], user_id: int = 77, first_document: int = 1) \
        -> dict[str, tuple[float, int]]:
    """Send one job per report, 10 per SendMessageBatch call; returns job id -> (send time, tests)."""
    from worker.contract import new_job

    sent: dict[str, tuple[float, int]] = {}
    jobs = [new_job(user_id, first_document + i, tests) for i, tests in enumerate(reports)]
    for start in range(0, len(jobs), 10):
        chunk = jobs[start:start + 10]
        entries = [{"Id": str(i), "MessageBody": job.to_body(), "MessageAttributes": job.message_attributes()}
                   for i, job in enumerate(chunk)]
        now = time.time()
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {response['Failed']}")
        for job in chunk:
            sent[job.job_id] = (now, len(job.tests))
    return sent


def queue_backlog(worker: subprocess.Popen, sqs, queue_url: str, reports: list[list[dict]], first_document: int) \
        -> tuple[dict[str, tuple[float, int]], float]:
    """Send a burst while the worker is paused (SIGSTOP), then let it go; returns the sent jobs and the
    time it resumed. The run's window then starts with the whole backlog queued, as the baseline's
    does, and measures the worker rather than how fast this process can send."""
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        sent = send_jobs(sqs, queue_url, reports, first_document=first_document)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    return sent, time.time()


@dataclass
class RunFigures:
    tests: int
    jobs: int
    wall_s: float
    tests_per_s: float
    latencies: list[float] = field(default_factory=list)
    done: dict[str, float] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        if len(ordered) == 1:
            return ordered[0]
        return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def wait_for_jobs(engine, sent: dict[str, tuple[float, int]], timeout: float,
                  worker: subprocess.Popen | None = None, started: float | None = None) -> RunFigures:
    """Poll the database until every sent job is done; figures from send (or ``started``, when the
    jobs were queued before the worker could see them) and completion times."""
    wanted = set(sent)
    deadline = time.monotonic() + timeout
    done: dict[str, float] = {}
    while time.monotonic() < deadline:
        done = completion_times(engine, wanted)
        if len(done) == len(wanted):
            break
        if worker is not None and worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode} before the run finished")
        time.sleep(0.05)
    else:
        raise TimeoutError(f"{len(wanted) - len(done)} of {len(wanted)} jobs not done within {timeout:.0f} s")
    began = started if started is not None else min(when for when, _ in sent.values())
    last_done = max(done.values())
    tests = sum(count for _, count in sent.values())
    wall = max(1e-6, last_done - began)
    latencies = [max(0.0, done[job] - max(sent[job][0], began)) for job in wanted]
    return RunFigures(tests=tests, jobs=len(wanted), wall_s=wall, tests_per_s=tests / wall, latencies=latencies,
                      done=done)


# --------------------------------------------------------------------------------------------
# the naive baseline (the app's old worker)


def run_baseline(model_name: str, index_dir, engine_, store, sqs, queue_url: str, timeout: float) -> RunFigures:
    """One message per receive, one test at a time, one embedding call per test, no memory.

    The old worker's model, whatever encoder the worker runs: the sentence-transformers model in
    full precision, with its own reference embeddings (the engine batches and caches, which is
    exactly what the baseline must not do); results are written through the store like the
    worker's, one transaction per job.
    """
    import numpy as np

    from worker.contract import decode_job
    from worker.mapping.encoder import SentenceEncoder, load_or_build_index
    from worker.mapping.model import load_sentence_model, resolve_index_dir
    from worker.store import repository

    if engine_.encoder.kind == "torch":
        model = engine_.encoder.model
    else:
        model = load_sentence_model(model_name)
    embeddings = load_or_build_index(engine_.reference, SentenceEncoder(model), model_name,
                                     resolve_index_dir(index_dir))
    entries = engine_.reference.entries
    version = f"baseline+{engine_.model_version}"
    tests = jobs = 0
    began = time.monotonic()
    deadline = began + timeout
    idle = 0
    while time.monotonic() < deadline and idle < 2:
        response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=0,
                                       MessageAttributeNames=["All"], AttributeNames=["All"])
        messages = response.get("Messages", [])
        if not messages:
            idle += 1
            continue
        idle = 0
        message = messages[0]
        job = decode_job(message["Body"], message["MessageId"])
        row = repository.JobRow(job.job_id, message["MessageId"], job.user_id, job.document_id, job.priority,
                                len(job.tests))
        repository.claim_jobs(store, [row])
        results = []
        for index, test in enumerate(job.tests):
            vector = model.encode([test.test_name], convert_to_numpy=True, normalize_embeddings=True,
                                  show_progress_bar=False)[0]
            scores = embeddings @ np.asarray(vector, dtype=np.float32)
            best = int(np.argmax(scores))
            entry = entries[best]
            results.append(repository.ResultRow(index, test.test_name, test.test_value, test.test_unit,
                                                entry.category, entry.code, entry.long_common_name,
                                                float(scores[best]), "embedding", False, version))
        repository.complete_job(store, row, results)
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        tests += len(results)
        jobs += 1
    wall = max(1e-6, time.monotonic() - began)
    return RunFigures(tests=tests, jobs=jobs, wall_s=wall, tests_per_s=tests / wall)


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class BenchConfig:
    jobs: int = 100
    seed: int = 7
    database_url: str | None = None
    biobert_shaped: bool = False
    profile: Path | None = None
    stages: bool = False
    encoder: str | None = None  # the worker's (ML_WORKER_ENCODER, else the default)
    timeout: float = 900
    baseline: bool = True
    stock_moto: bool = False


def worker_env(endpoint: str, queue_url: str, database_url: str, model: str, encoder: str, index_dir: str | None,
               work_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("ML_WORKER_", "POSTGRES_")) or key in ("AWS_PROFILE", "ECS_AGENT_URI"):
            env.pop(key)
    env.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "ML_WORKER_SQS_QUEUE_URL": queue_url,
        "ML_WORKER_WAIT_TIME": "2",
        "ML_WORKER_VISIBILITY_TIMEOUT": "120",
        "ML_WORKER_SHUTDOWN_DEADLINE": "30",
        "ML_WORKER_HEALTH_FILE": str(work_dir / "health"),
        "ML_WORKER_MODEL": model,
        "ML_WORKER_ENCODER": encoder,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    })
    if index_dir:
        env["ML_WORKER_INDEX_DIR"] = index_dir
    if os.environ.get("ML_WORKER_CALIBRATION"):  # the BioBERT-shaped model borrows one (see run_bench)
        env["ML_WORKER_CALIBRATION"] = os.environ["ML_WORKER_CALIBRATION"]
    return env


# Runs ``python -m worker`` with cProfile in every thread (the consumer maps each batch in its own
# thread, which a plain ``python -m cProfile`` would miss) and merges the threads' stats on exit.
# Each thread is timed by its own CPU clock: on a shared machine a wall clock would charge
# whatever function happened to be running when the process was preempted.
PROFILE_BOOTSTRAP = r"""
import cProfile, pstats, runpy, sys, threading, time
out = sys.argv[1]
profiles, lock = [], threading.Lock()
original_run = threading.Thread.run
def run(self):
    profile = cProfile.Profile(time.thread_time)
    with lock:
        profiles.append((self.name, profile))
    profile.enable()
    try:
        original_run(self)
    finally:
        profile.disable()
threading.Thread.run = run
main = cProfile.Profile(time.thread_time)
profiles.append(("MainThread", main))
sys.argv = ["worker"]
main.enable()
try:
    runpy.run_module("worker", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    main.disable()
    merged = {}
    with lock:
        for name, profile in profiles:
            try:
                profile.create_stats()
            except Exception:
                continue
            if not profile.stats:
                continue
            for key in ("all", "handler" if name == "batch-handler" else None):
                if key is None:
                    continue
                if key in merged:
                    merged[key].add(profile)
                else:
                    merged[key] = pstats.Stats(profile)
    for key, stats in merged.items():
        stats.dump_stats(out if key == "all" else out + ".handler")
"""


# The worker's path, stage by stage: (stage, module, function). ``--stages`` wraps each function with a
# wall-clock timer in the worker process (cheap, unlike a profiler, which inflates pure-Python code
# many times over); a nested stage (indented) is part of the one above it.
PATH_STAGES = (
    ("receive (SQS)", "worker.consumer", "Consumer._receive"),
    ("decode (job contract)", "worker.handler", "LabCategorizationHandler.decode"),
    ("claim jobs", "worker.store.repository", "claim_jobs"),
    ("memory lookup", "worker.store.repository", "lookup_mappings"),
    ("normalise (memory key)", "worker.handler", "LabCategorizationHandler._key"),
    ("engine.map", "worker.mapping.engine", "MappingEngine.map"),
    ("  retrieve", "worker.mapping.retrieve", "Retriever.gather"),
    ("    lexical (fuzzy scores)", "worker.mapping.retrieve", "Retriever._lexical_scores"),
    ("    encoder (torch)", "worker.mapping.encoder", "SentenceEncoder.encode"),
    ("    encoder (ONNX Runtime)", "worker.mapping.encoder", "OnnxEncoder.encode"),
    ("    name similarity", "worker.mapping.retrieve", "Retriever._name_similarity"),
    ("  re-rank", "worker.mapping.rerank", "Reranker.rank"),
    ("  decide", "worker.mapping.decide", "Decider.decide"),
    ("memory write", "worker.store.repository", "remember_mappings"),
    ("result write", "worker.store.repository", "complete_jobs"),
    ("delete (SQS)", "worker.consumer", "Consumer._delete"),
)

# Runs ``python -m worker`` with PATH_STAGES timed; on each SIGUSR1 writes the totals so far,
# {stage: [seconds, calls]}, as JSON to FILE.N (N counting from 0), so the bench can take the cold
# burst's share as the difference of two snapshots.
STAGES_BOOTSTRAP = r"""
import importlib, json, os, runpy, signal, sys, threading, time
out, stages = sys.argv[1], json.loads(sys.argv[2])
totals, lock, written = {}, threading.Lock(), []
def snapshot(signum, frame):
    with lock:
        data = dict(totals)
    path = f"{out}.{len(written)}"
    written.append(path)
    with open(path + ".tmp", "w") as handle:
        json.dump(data, handle)
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR1, snapshot)
def wrap(label, owner, name):
    raw = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    static = isinstance(raw, staticmethod)
    function = raw.__func__ if static else raw
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            with lock:
                seconds, calls = totals.get(label, (0.0, 0))
                totals[label] = (seconds + time.perf_counter() - started, calls + 1)
    setattr(owner, name, staticmethod(timed) if static else timed)
for label, module, qualname in stages:
    owner = importlib.import_module(module)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    wrap(label, owner, name)
sys.argv = ["worker"]
runpy.run_module("worker", run_name="__main__", alter_sys=True)
"""


def stage_snapshot(worker: subprocess.Popen, path: Path, number: int, timeout: float = 30) -> dict[str, list]:
    """Ask a worker run under STAGES_BOOTSTRAP for its stage totals so far (snapshot ``number``)."""
    target = Path(f"{path}.{number}")
    os.kill(worker.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not target.exists():
        if time.monotonic() > deadline or worker.poll() is not None:
            raise RuntimeError("the worker wrote no stage snapshot")
        time.sleep(0.05)
    return json.loads(target.read_text())


def stage_difference(after: dict[str, list], before: dict[str, list]) -> dict[str, list]:
    return {label: [seconds - before.get(label, [0.0, 0])[0], calls - before.get(label, [0.0, 0])[1]]
            for label, (seconds, calls) in after.items()}


def stage_table(totals: dict[str, list], tests: int) -> str:
    """Wall seconds and milliseconds per test of each stage of the worker's path."""
    path_total = sum(seconds for label, (seconds, _) in totals.items() if not label.startswith(" ")) or 1.0
    lines = [f"{'stage':30s} {'seconds':>8s} {'ms/test':>8s} {'share':>6s}"]
    for label, _, _ in PATH_STAGES:
        seconds, _ = totals.get(label, (0.0, 0))
        lines.append(f"{label:30s} {seconds:8.2f} {1000 * seconds / tests:8.3f} {seconds / path_total:6.1%}")
    lines.append(f"{'the path (top-level stages)':30s} {path_total:8.2f} {1000 * path_total / tests:8.3f}")
    return "\n".join(lines)


def print_profile(path: Path, limit: int = 20) -> None:
    """The batch handler's threads (the hot path: decode, memory, engine, store), then the whole process."""
    import io
    import pstats

    handler = Path(str(path) + ".handler")
    sections = [(handler, "tottime"), (handler, "cumulative")] if handler.exists() else []
    sections.append((path, "cumulative"))
    for source, order in sections:
        stream = io.StringIO()
        pstats.Stats(str(source), stream=stream).strip_dirs().sort_stats(order).print_stats(limit)
        what = "batch-handler threads" if source == handler else "whole worker process"
        print(f"--- profile of the {what} (thread CPU time), top {limit} by {order} ---", file=sys.stderr)
        print(stream.getvalue(), file=sys.stderr)


def run_bench(config: BenchConfig) -> dict:
    import boto3
    import sqlalchemy

    from worker.local.emulator import MotoServer, stop_process
    from worker.mapping.engine import MappingEngine
    from worker.mapping.model import packaged_model_dir
    from worker.store.db import make_engine, upgrade

    figures: dict = {}
    with ExitStack() as cleanup:
        work_dir = Path(tempfile.mkdtemp(prefix="mlw-bench-"))
        cleanup.callback(shutil.rmtree, work_dir, True)
        os.environ["HF_HUB_OFFLINE"] = "1"
        # One intra-op thread, as the image sets it (images/base: OMP_NUM_THREADS=1) for a 0.5 vCPU
        # task; the worker and the baseline get the same.
        threads = os.environ.setdefault("OMP_NUM_THREADS", "1")

        # The model and its reference index, built here first, as the image bakes them in.
        index_dir = None
        if config.biobert_shaped:
            note("building the BioBERT-shaped model (BERT-base, random weights)")
            model = build_biobert_shaped(work_dir)
            index_dir = str(work_dir / "index")
            # speed and memory only: random weights have no meaningful calibration, so it borrows one, explicitly
            from worker.mapping.decide import calibration_path

            os.environ["ML_WORKER_CALIBRATION"] = str(calibration_path("all-MiniLM-L6-v2"))
        else:
            model = os.environ.get("ML_WORKER_MODEL") or packaged_model_dir()
            index_dir = os.environ.get("ML_WORKER_INDEX_DIR")
        began = time.monotonic()
        engine_ = MappingEngine.load(model, index_dir, encoder_kind=config.encoder)
        import torch

        torch.set_num_threads(int(threads))
        note(f"engine ready in {time.monotonic() - began:.1f} s ({len(engine_.reference)} reference entries, "
             f"model {engine_.model_version})")

        database_url = config.database_url or f"sqlite:///{work_dir / 'bench.db'}"
        store = make_engine(database_url)
        cleanup.callback(store.dispose)
        upgrade(store)
        with store.connect() as connection:
            remembered = connection.execute(sqlalchemy.text("select count(*) from lab_test_mappings")).scalar()
        if remembered:
            note(f"warning: the mapping memory already holds {remembered} rows; the workload's names are new "
                 "all the same")

        moto = MotoServer(work_dir / "moto.log", constant_receive=not config.stock_moto)
        moto.start()
        cleanup.callback(moto.stop)
        sqs = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        queue_url = sqs.create_queue(QueueName="ml-worker-bench", Attributes={"VisibilityTimeout": "120"})["QueueUrl"]
        baseline_url = sqs.create_queue(QueueName="ml-worker-bench-baseline",
                                        Attributes={"VisibilityTimeout": "120"})["QueueUrl"]

        load_before = os.getloadavg()[0]
        reports = bench_workload(config.jobs, config.seed, engine_)
        tests = sum(len(r) for r in reports)
        looked_up = looked_up_share(engine_, reports)
        note(f"workload: {len(reports)} jobs, {tests} tests, every name distinct once normalised (seed "
             f"{config.seed}); {looked_up:.0%} are names the reference uses (looked up, no forward pass)")

        # Start-up: the first job already waits in the queue when the worker is spawned.
        from worker.local.sample_jobs import load_sample

        probe = send_jobs(sqs, queue_url, [load_sample("guide_sample")], user_id=123, first_document=456)
        env = worker_env(moto.endpoint, queue_url, database_url, model, engine_.encoder.kind, index_dir, work_dir)
        command = [sys.executable, "-m", "worker"]
        stages_path = work_dir / "stages.json"
        if config.profile:
            command = [sys.executable, "-c", PROFILE_BOOTSTRAP, str(config.profile)]
        elif config.stages:
            command = [sys.executable, "-c", STAGES_BOOTSTRAP, str(stages_path), json.dumps(PATH_STAGES)]
        log_path = work_dir / "worker.log"
        spawned = time.time()
        with open(log_path, "wb") as sink:
            worker = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        cleanup.callback(stop_process, worker, 60)
        monitor = RssMonitor(worker.pid).start()
        try:
            startup = wait_for_jobs(store, probe, timeout=300, worker=worker)
            startup_s = max(startup.done.values()) - spawned
            note(f"start-up to first job done: {startup_s:.2f} s")

            before = stage_snapshot(worker, stages_path, 0) if config.stages else {}
            cold_sent, resumed = queue_backlog(worker, sqs, queue_url, reports, first_document=10_000)
            cold = wait_for_jobs(store, cold_sent, timeout=config.timeout, worker=worker, started=resumed)
            note(f"cold: {cold.tests} tests in {cold.wall_s:.2f} s = {cold.tests_per_s:.1f} tests/s")
            if config.stages:
                cold_stages = stage_difference(stage_snapshot(worker, stages_path, 1), before)
                note(f"the cold burst's path, stage by stage (wall clock in the worker):\n"
                     f"{stage_table(cold_stages, cold.tests)}")

            before = stage_snapshot(worker, stages_path, 2) if config.stages else {}
            warm_sent, resumed = queue_backlog(worker, sqs, queue_url, reports, first_document=20_000)
            warm = wait_for_jobs(store, warm_sent, timeout=config.timeout, worker=worker, started=resumed)
            note(f"warm: {warm.tests} tests in {warm.wall_s:.2f} s = {warm.tests_per_s:.1f} tests/s")
            if config.stages:
                warm_stages = stage_difference(stage_snapshot(worker, stages_path, 3), before)
                note(f"the warm burst's path, stage by stage:\n{stage_table(warm_stages, warm.tests)}")

            paced_sent: dict[str, tuple[float, int]] = {}
            for number, tests_ in enumerate(reports[:PACED_JOBS]):
                paced_sent.update(send_jobs(sqs, queue_url, [tests_], first_document=40_000 + number))
                time.sleep(1 / PACED_RATE)
            paced = wait_for_jobs(store, paced_sent, timeout=config.timeout, worker=worker)
            note(f"paced: {paced.jobs} jobs at {PACED_RATE}/s, latency p50 {paced.percentile(50):.3f} s, "
                 f"p95 {paced.percentile(95):.3f} s")
        except Exception:
            note(f"worker log tail:\n{log_path.read_text(errors='replace')[-3000:]}")
            raise
        finally:
            code = stop_process(worker, 60)
            peak_mb = monitor.stop()
        note(f"worker stopped (exit {code}); peak RSS {peak_mb:.0f} MB")
        if config.profile:
            note("under --profile every figure is inflated by the profiler (start-up most): "
                 "take the figures from a run without it")
            if config.profile.exists():
                print_profile(config.profile)
            else:
                note("no profile written (the worker did not exit through its normal path)")

        baseline = None
        if config.baseline:
            send_jobs(sqs, baseline_url, reports, first_document=30_000)
            baseline = run_baseline(model, index_dir, engine_, store, sqs, baseline_url, timeout=config.timeout)
            note(f"baseline: {baseline.tests} tests in {baseline.wall_s:.2f} s = "
                 f"{baseline.tests_per_s:.1f} tests/s")

        figures = {
            "cold_tests_per_s": round(cold.tests_per_s, 2),
            "warm_tests_per_s": round(warm.tests_per_s, 2),
            "p50_job_latency_s": round(paced.percentile(50), 4),
            "p95_job_latency_s": round(paced.percentile(95), 4),
            "startup_s": round(startup_s, 3),
            "peak_rss_mb": round(peak_mb, 1),
            "baseline_tests_per_s": round(baseline.tests_per_s, 2) if baseline else None,
            "speedup_vs_baseline": round(warm.tests_per_s / baseline.tests_per_s, 2) if baseline else None,
            # context (not part of the fixed keys above)
            "cold_burst_p50_job_latency_s": round(cold.percentile(50), 4),
            "cold_burst_p95_job_latency_s": round(cold.percentile(95), 4),
            "warm_burst_p50_job_latency_s": round(warm.percentile(50), 4),
            "warm_burst_p95_job_latency_s": round(warm.percentile(95), 4),
            "cold_speedup_vs_baseline": round(cold.tests_per_s / baseline.tests_per_s, 2) if baseline else None,
            "jobs": len(reports),
            "tests": tests,
            "cold_names_looked_up": looked_up,
            "encoder": engine_.encoder.kind,
            "model": "bert-base-random (BioBERT-shaped)" if config.biobert_shaped else engine_.model_version,
            "database": "postgresql" if database_url.startswith("postgres") else "sqlite",
            "sqs": f"moto {moto_version()}" + (" (stock)" if config.stock_moto else " (receive O(1) per message)"),
            "cpus": os.cpu_count(),
            "torch_threads": int(threads),
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
    return figures


def moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


def render(figures: dict) -> str:
    lines = [
        f"workload        {figures['jobs']} jobs, {figures['tests']} tests, every name distinct once normalised "
        f"({figures['cold_names_looked_up']:.0%} names the reference uses); model {figures['model']}, "
        f"encoder {figures['encoder']}; "
        f"{figures['database']}; SQS {figures['sqs']}; "
        f"{figures['cpus']} CPUs, {figures['torch_threads']} torch thread(s) "
        f"(load average {figures['load_avg_1m'][0]:.1f} before, "
        f"{figures['load_avg_1m'][1]:.1f} after)",
        f"cold            {figures['cold_tests_per_s']:.1f} tests/s (every name new)",
        f"warm            {figures['warm_tests_per_s']:.1f} tests/s (names seen before)",
        f"job latency     p50 {figures['p50_job_latency_s']:.3f} s, p95 {figures['p95_job_latency_s']:.3f} s "
        f"(jobs arriving {PACED_RATE} a second)",
        f"burst latency   warm p50 {figures['warm_burst_p50_job_latency_s']:.2f} s, "
        f"p95 {figures['warm_burst_p95_job_latency_s']:.2f} s; "
        f"cold p50 {figures['cold_burst_p50_job_latency_s']:.2f} s, "
        f"p95 {figures['cold_burst_p95_job_latency_s']:.2f} s (all {figures['jobs']} jobs sent at once)",
        f"start-up        {figures['startup_s']:.2f} s to the first message processed",
        f"peak RSS        {figures['peak_rss_mb']:.0f} MB (worker process and children)",
    ]
    if figures.get("baseline_tests_per_s"):
        lines.append(f"naive baseline  {figures['baseline_tests_per_s']:.1f} tests/s; warm is "
                     f"{figures['speedup_vs_baseline']:.1f}x, cold {figures['cold_speedup_vs_baseline']:.1f}x")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        json_output: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        biobert_shaped: Annotated[bool, typer.Option(
            "--biobert-shaped", help="BERT-base with random weights instead of the packaged model")] = False,
        jobs: Annotated[int, typer.Option("--jobs", min=1, help="jobs in the workload (one report panel each)")] = 100,
        seed: Annotated[int, typer.Option("--seed")] = 7,
        database_url: Annotated[str | None, typer.Option(
            "--database-url", help="PostgreSQL URL (default: a SQLite file)")] = None,
        profile: Annotated[Path | None, typer.Option(
            "--profile", help="run the worker under cProfile and write its stats here")] = None,
        stages: Annotated[bool, typer.Option(
            "--stages", help="time each stage of the worker's path during the cold and warm bursts")] = False,
        no_baseline: Annotated[bool, typer.Option("--no-baseline", help="skip the naive baseline")] = False,
        stock_moto: Annotated[bool, typer.Option(
            "--stock-moto", help="moto as released: its ReceiveMessage scans the whole queue per message")] = False,
        encoder: Annotated[str | None, typer.Option(
            "--encoder", help="the worker's encoder: torch, onnx or onnx-int8 (default: ML_WORKER_ENCODER, "
            "else the worker's default); the baseline always runs the float model")] = None,
    ) -> None:
        """Benchmark the worker: cold/warm throughput, latency, start-up, peak RSS, naive baseline."""
        config = BenchConfig(jobs=jobs, seed=seed, database_url=database_url, biobert_shaped=biobert_shaped,
                             profile=profile, stages=stages, baseline=not no_baseline, stock_moto=stock_moto,
                             encoder=encoder)
        figures = run_bench(config)
        if json_output:
            print(json.dumps(figures))
        else:
            print(render(figures))
