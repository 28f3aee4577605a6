"""Benchmark: ingest checks and digests on 1,000,000 rows x 20 columns, against pandera and sha256sum.

    .venv/bin/python bench/dataset_ingest.py [--rows N]

Each contender runs in its own process so peak memory is its own. Prints a table.
Targets (issue 3): validation at least 3x pandera's speed on the same checks; digest
throughput at least 70% of sha256sum over the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = ["red", "green", "blue", "amber"]


def make_table(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    data: dict[str, object] = {"id": np.arange(rows, dtype="int64")}
    for i in range(10):
        data[f"f{i}"] = rng.normal(loc=i, scale=1.0, size=rows)
    for i in range(5):
        data[f"i{i}"] = rng.integers(0, 1000, size=rows, dtype="int64")
    for i in range(4):
        data[f"c{i}"] = rng.choice(CATEGORIES, size=rows)
    return pd.DataFrame(data)


def mloop_schema() -> dict:
    columns = [{"name": "id", "type": "integer", "nullable": False, "role": "id"}]
    columns += [{"name": f"f{i}", "type": "float", "nullable": False, "min": i - 100, "max": i + 100} for i in range(10)]
    columns += [{"name": f"i{i}", "type": "integer", "nullable": False, "min": 0, "max": 999} for i in range(5)]
    columns += [{"name": f"c{i}", "type": "category", "nullable": False, "allowedValues": CATEGORIES} for i in range(4)]
    return {"columns": columns}


def best_of(fn, runs: int = 3) -> float:
    """Warm timing: the best of a few runs, so neither side pays its first-call imports."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run_mloop(frame: pd.DataFrame) -> dict:
    from mloop.api.dataset import SchemaSpec, ValidationRules
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mloop.data.canonical import canonical_table, digest_table
    from mloop.data.profile import profile_frame
    from mloop.data.validate import apply_rules, apply_schema

    def validate():
        checked = apply_rules(apply_schema(frame, SchemaSpec.model_validate(mloop_schema())),
                              ValidationRules(min_rows=1000, unique=["id"]))
        assert checked.passed, checked.first_failure()
        return checked

    validate_time = best_of(validate)
    checked = validate()
    t1 = time.perf_counter()
    profile_frame(checked.frame)
    t2 = time.perf_counter()
    table = canonical_table(checked.frame)
    t3 = time.perf_counter()
    digest_table(table)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    t4 = time.perf_counter()
    return {"validate": validate_time, "profile": t2 - t1, "canonical": t3 - t2,
            "ingest": validate_time + (t4 - t1)}


def run_pandera(frame: pd.DataFrame) -> dict:
    import pandera.pandas as pa

    columns = {"id": pa.Column("int64", nullable=False, unique=True)}
    columns |= {f"f{i}": pa.Column("float64", pa.Check.in_range(i - 100, i + 100), nullable=False) for i in range(10)}
    columns |= {f"i{i}": pa.Column("int64", pa.Check.in_range(0, 999), nullable=False) for i in range(5)}
    columns |= {f"c{i}": pa.Column(str, pa.Check.isin(CATEGORIES), nullable=False) for i in range(4)}
    schema = pa.DataFrameSchema(columns, checks=[pa.Check(lambda df: len(df) >= 1000)], strict=True)
    return {"validate": best_of(lambda: schema.validate(frame, lazy=True))}


def run_digest(frame: pd.DataFrame, out: Path) -> dict:
    import pyarrow as pa

    from mloop.data.canonical import canonical_table, digest_table

    table = canonical_table(frame)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    out.write_bytes(sink.getvalue().to_pybytes())
    return {"digest": best_of(lambda: digest_table(table)), "bytes": out.stat().st_size}


def worker(part: str, rows: int, scratch: str) -> None:
    frame = make_table(rows)
    if part == "mloop":
        result = run_mloop(frame)
    elif part == "pandera":
        result = run_pandera(frame)
    elif part == "baseline":
        result = {}
    else:
        result = run_digest(frame, Path(scratch) / "table.ipc")
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(part: str, rows: int, scratch: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", part, "--rows", str(rows), "--scratch", scratch],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--worker")
    parser.add_argument("--scratch", default="")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.rows, args.scratch)
        return
    with tempfile.TemporaryDirectory() as scratch:
        base = measure("baseline", 1000, scratch)  # interpreter + numpy + pandas, for reference
        ours = measure("mloop", args.rows, scratch)
        theirs = measure("pandera", args.rows, scratch)
        digest = measure("digest", args.rows, scratch)
        path = Path(scratch) / "table.ipc"
        sha_time = best_of(lambda: subprocess.run(["sha256sum", str(path)], check=True, capture_output=True))
    rows = args.rows
    mb = digest["bytes"] / 1e6
    speedup = theirs["validate"] / ours["validate"]
    digest_ratio = (mb / digest["digest"]) / (mb / sha_time)
    lines = [
        f"Dataset ingest benchmark: {rows:,} rows x 20 columns ({mb:.0f} MB canonical), {os.cpu_count()} cores",
        "",
        "| measure | mloop | peer | ratio | target |",
        "|---|---|---|---|---|",
        f"| validate (same checks) rows/s | {rows / ours['validate']:,.0f} | pandera {rows / theirs['validate']:,.0f} "
        f"| {speedup:.1f}x | >= 3x |",
        f"| ingest end to end rows/s (validate, profile, canonicalise, digest, Parquet) "
        f"| {rows / ours['ingest']:,.0f} | - | - | - |",
        f"| profile rows/s | {rows / ours['profile']:,.0f} | - | - | - |",
        f"| canonicalise rows/s | {rows / ours['canonical']:,.0f} | - | - | - |",
        f"| digest MB/s | {mb / digest['digest']:,.0f} | sha256sum {mb / sha_time:,.0f} | {digest_ratio:.0%} | >= 70% |",
        f"| peak RSS MB (validate+profile) | {ours['peak_mb']:,.0f} | pandera {theirs['peak_mb']:,.0f} | - | - |",
        f"| peak RSS MB (interpreter baseline) | {base['peak_mb']:,.0f} | | | |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
