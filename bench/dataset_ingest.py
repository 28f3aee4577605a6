"""Benchmark: ingest checks, profile and digest on 1,000,000 rows x 20 columns, against pandera (on pandas and
on polars), a polars and a DuckDB profile of the same columns, and sha256sum.

    .venv/bin/python bench/dataset_ingest.py [--rows N]
    .venv/bin/python bench/dataset_ingest.py --scale-gb 5     # issue 15: streaming ingest of a 5 GB CSV
    .venv/bin/python bench/dataset_ingest.py --scale-gb 5 --generate /tmp/big.csv   # then, on a quiet machine:
    .venv/bin/python bench/dataset_ingest.py --scale-gb 5 --csv /tmp/big.csv

The scale run generates the CSV under /tmp (MLOOP_BENCH_DIR), ingests it end to end in a process whose
address space is capped at 1 GiB (RLIMIT_AS), reads it once more with pyarrow's CSV reader alone (the
limit), prints rows/s, MB/s and peak RSS of each, and deletes the file.

Each contender runs in its own process so peak memory is its own. Prints a table.
The validators run the same checks on the same frame: each column's type, not-null on all 20 columns, a range on
the 15 numeric ones, an allowed set on the 4 text ones, id unique, at least 1000 rows, no column outside the
schema. Each is timed as wall time (best of 5) and as CPU time of all its threads (pandera on pandas runs on one
core; mloop and polars use both).
Targets (issues 3 and 15): validation at least 5x pandera on pandas and ahead of pandera on polars, with the
same checks; profiling at least as fast as polars or DuckDB; digest at least 70% of sha256sum's throughput.
Needs the `bench` extra (pandera[polars], polars, duckdb).
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


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, runs: int = 5) -> dict:
    """The best wall time and the best CPU time (every thread of the process) of a few warm runs: CPU is what a
    run costs whatever the neighbours do; wall time is what a user waits on an otherwise idle machine."""
    walls, cpus = [], []
    for _ in range(runs):
        c0, t0 = process_cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(process_cpu() - c0)
    return {"validate": min(walls), "validate_cpu": min(cpus)}


def run_mloop(frame: pd.DataFrame) -> dict:
    from mloop.api.dataset import SchemaSpec, ValidationRules
    from mloop.data.canonical import canonical_table
    from mloop.data.profile import profile_frame
    from mloop.data.validate import apply_rules, apply_schema

    def validate():
        checked = apply_rules(apply_schema(frame, SchemaSpec.model_validate(mloop_schema())),
                              ValidationRules(min_rows=1000, unique=["id"]))
        assert checked.passed, checked.first_failure()
        return checked

    validation = timed(validate)
    checked = validate()
    t1 = time.perf_counter()
    profile_frame(checked.frame)
    t2 = time.perf_counter()
    canonical_table(checked.frame)
    t3 = time.perf_counter()
    # end to end as the ingest task runs it: 8 MiB batches through checks, cast, canonical form, digest,
    # profile and Parquet row groups
    from mloop.data import pipeline

    with tempfile.TemporaryDirectory() as scratch:
        rows = max(1, (8 << 20) // max(1, int(frame.memory_usage().sum() // len(frame))))
        t4 = time.perf_counter()
        cut = pipeline.run(pipeline.frame_batches(frame, rows), SchemaSpec.model_validate(mloop_schema()),
                           ValidationRules(min_rows=1000, unique=["id"]), str(Path(scratch) / "out.parquet"))
        t5 = time.perf_counter()
    assert cut.passed, cut.first_failure()
    return {**validation, "profile": t2 - t1, "canonical": t3 - t2, "ingest": t5 - t4}


def run_pandera(frame: pd.DataFrame) -> dict:
    import pandera.pandas as pa

    columns = {"id": pa.Column("int64", nullable=False, unique=True)}
    columns |= {f"f{i}": pa.Column("float64", pa.Check.in_range(i - 100, i + 100), nullable=False) for i in range(10)}
    columns |= {f"i{i}": pa.Column("int64", pa.Check.in_range(0, 999), nullable=False) for i in range(5)}
    columns |= {f"c{i}": pa.Column(str, pa.Check.isin(CATEGORIES), nullable=False) for i in range(4)}
    schema = pa.DataFrameSchema(columns, checks=[pa.Check(lambda df: len(df) >= 1000)], strict=True)
    return timed(lambda: schema.validate(frame, lazy=True))


def run_pandera_polars(frame: pd.DataFrame) -> dict:
    """The same checks with pandera's polars backend, on a polars frame (converted before timing)."""
    import pandera.polars as pa
    import polars as pl

    data = pl.from_pandas(frame)
    columns = {"id": pa.Column(pl.Int64, nullable=False, unique=True)}
    columns |= {f"f{i}": pa.Column(pl.Float64, pa.Check.in_range(i - 100, i + 100), nullable=False) for i in range(10)}
    columns |= {f"i{i}": pa.Column(pl.Int64, pa.Check.in_range(0, 999), nullable=False) for i in range(5)}
    columns |= {f"c{i}": pa.Column(pl.String, pa.Check.isin(CATEGORIES), nullable=False) for i in range(4)}
    schema = pa.DataFrameSchema(columns, checks=[pa.Check(lambda d: d.lazyframe.select(pl.len() >= 1000))], strict=True)
    return timed(lambda: schema.validate(data, lazy=True))


def _profile_input(frame: pd.DataFrame):
    """The table every profiler gets: mloop's canonical Arrow table (floats, int64, text)."""
    from mloop.data.canonical import canonical_table

    return canonical_table(frame)


def run_profile_mloop(frame: pd.DataFrame) -> dict:
    from mloop.data.profile import profile_table

    table = _profile_input(frame)
    return {"profile": best_of(lambda: profile_table(table))}


def run_profile_polars(frame: pd.DataFrame) -> dict:
    """What mloop's profile holds, in polars: per column count, nulls, distinct (approximate), and for numbers
    min, max, mean, std, five quantiles and a 100-bin histogram; for text the value counts."""
    import polars as pl

    data = pl.from_arrow(_profile_input(frame))
    numeric = [n for n, t in data.schema.items() if t.is_numeric()]
    text = [n for n in data.columns if n not in numeric]
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)

    def profile() -> None:
        exprs = []
        for n in data.columns:
            c = pl.col(n)
            exprs += [c.count().alias(f"{n}.count"), c.null_count().alias(f"{n}.nulls"),
                      c.approx_n_unique().alias(f"{n}.distinct")]
            if n in numeric:
                exprs += [c.min().alias(f"{n}.min"), c.max().alias(f"{n}.max"), c.mean().alias(f"{n}.mean"),
                          c.std().alias(f"{n}.std")]
                exprs += [c.quantile(q).alias(f"{n}.q{q}") for q in qs]
        data.select(exprs)
        for n in numeric:
            data.get_column(n).hist(bin_count=100)
        for n in text:
            data.get_column(n).value_counts(sort=True)

    return {"profile": best_of(profile)}


def run_profile_duckdb(frame: pd.DataFrame) -> dict:
    """DuckDB's own profile of a table: SUMMARIZE (min, max, approximate distinct, mean, std, quartiles,
    count, null share per column)."""
    import duckdb

    table = _profile_input(frame)
    con = duckdb.connect()
    con.register("t", table)
    return {"profile": best_of(lambda: con.execute("SUMMARIZE t").fetchall())}


def run_digest(frame: pd.DataFrame, out: Path) -> dict:
    import pyarrow as pa

    from mloop.data.canonical import canonical_table, digest_table

    table = canonical_table(frame)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    out.write_bytes(sink.getvalue().to_pybytes())
    return {"digest": best_of(lambda: digest_table(table)), "bytes": out.stat().st_size}


GIB = 1 << 30
SCALE_CAP = GIB  # the scale run's address-space cap (RLIMIT_AS)


def write_csv(path: Path, min_bytes: int) -> int:
    """The benchmark table, generated 500,000 rows at a time (ids keep counting), until the file has min_bytes."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    chunk = pa.Table.from_pandas(make_table(500_000), preserve_index=False)
    rows = 0
    with open(path, "wb") as f:
        while f.tell() < min_bytes:
            ids = pa.array(np.arange(rows, rows + chunk.num_rows, dtype="int64"))
            pacsv.write_csv(chunk.set_column(0, "id", ids), f,
                            write_options=pacsv.WriteOptions(include_header=rows == 0))
            rows += chunk.num_rows
    return rows


def run_stream(path: str, scratch: str) -> dict:
    """Ingest end to end the way the task does: CSV blocks -> checks, cast, canonical, digest, profile,
    Parquet row groups on local disk. Block size from this process's RLIMIT_AS."""
    from mloop.api.dataset import SchemaSpec, ValidationRules
    from mloop.data import pipeline
    from mloop.data.tables import TypeConflict, csv_batches

    schema = SchemaSpec.model_validate(mloop_schema())
    rules = ValidationRules(min_rows=1000, unique=["id"])
    block = pipeline.block_bytes()
    out = str(Path(scratch) / "out.parquet")
    forced: dict = {}
    t0 = time.perf_counter()
    while True:
        try:
            cut = pipeline.run(csv_batches(lambda: path, path, None, block, forced, pipeline.declared_types(schema)),
                               schema, rules, out)
            break
        except TypeConflict as conflict:
            forced[conflict.column] = conflict.type
    seconds = time.perf_counter() - t0
    assert cut.passed, cut.first_failure()
    return {"seconds": seconds, "rows": cut.rows, "block_mb": block / 2**20, "version": cut.digest.version,
            "parquet_mb": os.path.getsize(out) / 1e6}


def run_reader(path: str) -> dict:
    """The limit: pyarrow's multi-threaded CSV reader alone, reading and discarding every batch."""
    import pyarrow.csv as pacsv

    t0 = time.perf_counter()
    rows = 0
    for batch in pacsv.open_csv(path, read_options=pacsv.ReadOptions(use_threads=True)):
        rows += batch.num_rows
    return {"seconds": time.perf_counter() - t0, "rows": rows}


def capped_env() -> dict:
    # RLIMIT_AS counts reserved address space, not memory used: glibc's per-thread arenas and jemalloc's
    # reservations would use the cap up untouched, so the capped process uses the system allocator.
    return {**os.environ, "MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system",
            "MALLOC_MMAP_THRESHOLD_": "1048576"}


def cap_address_space(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, 1 << 20))  # idle thread stacks reserve 8 MiB each
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def scale(gigabytes: float, given: str = "") -> None:
    """The scale run. `given`: a CSV written earlier by --generate (so a shared machine is held only while
    measuring); it is deleted at the end like a generated one."""
    import shutil

    directory = os.environ.get("MLOOP_BENCH_DIR", "/tmp")
    need = gigabytes * 1e9 * (0.8 if given else 1.8)  # the CSV and the Parquet output
    free = shutil.disk_usage(directory).free
    if free < need:
        sys.exit(f"{directory}: {free / 1e9:.1f} GB free, the scale run needs {need / 1e9:.1f} GB")
    with tempfile.TemporaryDirectory(dir=directory, prefix="mloop-scale-") as scratch:
        path = Path(given) if given else Path(scratch) / "big.csv"
        try:
            if not given:
                t0 = time.perf_counter()
                write_csv(path, int(gigabytes * 1e9))
                print(f"generated {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            size = path.stat().st_size
            reader = measure_file("reader", str(path), scratch)
            ingest = measure_file("stream", str(path), scratch, cap=SCALE_CAP)
            rows = reader["rows"]
            assert ingest["rows"] == rows, (ingest["rows"], rows)
        finally:
            path.unlink(missing_ok=True)
    load = os.getloadavg()
    lines = [
        f"Scale run: {rows:,} rows x 20 columns, {size / 1e9:.2f} GB CSV, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} after the run",
        "",
        "| run | rows/s | MB/s | peak RSS MB | memory cap | share of the reader |",
        "|---|---|---|---|---|---|",
        f"| pyarrow CSV reader alone (multi-threaded, discards batches) | {rows / reader['seconds']:,.0f} "
        f"| {size / 1e6 / reader['seconds']:,.0f} | {reader['peak_mb']:,.0f} | none | 100% |",
        f"| mloop ingest end to end (validate, profile, canonicalise, digest, Parquet; {ingest['block_mb']:.0f} MiB "
        f"blocks) | {rows / ingest['seconds']:,.0f} | {size / 1e6 / ingest['seconds']:,.0f} "
        f"| {ingest['peak_mb']:,.0f} | RLIMIT_AS {SCALE_CAP / GIB:.0f} GiB "
        f"| {reader['seconds'] / ingest['seconds']:.0%} (target >= 50%) |",
        "",
        f"version {ingest['version']}, Parquet output {ingest['parquet_mb']:,.0f} MB; peak RSS target < 1024 MB",
    ]
    print("\n".join(lines))


def measure_file(part: str, path: str, scratch: str, cap: int | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", part, "--file", path, "--scratch", scratch],
                          capture_output=True, text=True, env=capped_env() if cap else None,
                          preexec_fn=cap_address_space(cap) if cap else None)
    if proc.returncode != 0:
        sys.exit(f"{part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker(part: str, rows: int, scratch: str, file: str = "") -> None:
    if part in ("stream", "reader"):
        result = run_stream(file, scratch) if part == "stream" else run_reader(file)
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    frame = make_table(rows)
    if part == "mloop":
        result = run_mloop(frame)
    elif part == "pandera":
        result = run_pandera(frame)
    elif part == "pandera-polars":
        result = run_pandera_polars(frame)
    elif part.startswith("profile-"):
        result = {"profile-mloop": run_profile_mloop, "profile-polars": run_profile_polars,
                  "profile-duckdb": run_profile_duckdb}[part](frame)
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
    parser.add_argument("--file", default="")
    parser.add_argument("--generate", default="", help="with --scale-gb: only write the CSV to this path")
    parser.add_argument("--csv", default="", help="with --scale-gb: measure this CSV (from --generate), then delete it")
    parser.add_argument("--scale-gb", type=float, default=0.0,
                        help="instead: generate a CSV of this many GB under /tmp (or MLOOP_BENCH_DIR), ingest it "
                             "with memory capped at 1 GiB, compare with the CSV reader alone, delete it")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.rows, args.scratch, args.file)
        return
    if args.generate:
        rows = write_csv(Path(args.generate), int(args.scale_gb * 1e9))
        print(f"{args.generate}: {rows:,} rows, {Path(args.generate).stat().st_size / 1e9:.2f} GB")
        return
    if args.scale_gb:
        scale(args.scale_gb, args.csv)
        return
    with tempfile.TemporaryDirectory() as scratch:
        base = measure("baseline", 1000, scratch)  # interpreter + numpy + pandas, for reference
        ours = measure("mloop", args.rows, scratch)
        theirs = measure("pandera", args.rows, scratch)
        polars = measure("pandera-polars", args.rows, scratch)
        profiles = {name: measure(f"profile-{name}", args.rows, scratch)["profile"]
                    for name in ("mloop", "polars", "duckdb")}
        digest = measure("digest", args.rows, scratch)
        path = Path(scratch) / "table.ipc"
        sha_time = best_of(lambda: subprocess.run(["sha256sum", str(path)], check=True, capture_output=True))
    rows = args.rows
    mb = digest["bytes"] / 1e6
    speedup = theirs["validate"] / ours["validate"]
    digest_ratio = (mb / digest["digest"]) / (mb / sha_time)
    lines = [
        f"Dataset ingest benchmark: {rows:,} rows x 20 columns ({mb:.0f} MB canonical), {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} after the run",
        "",
        "| measure | mloop | peer | ratio | target |",
        "|---|---|---|---|---|",
        f"| validate (same checks) rows/s | {rows / ours['validate']:,.0f} | pandera on pandas "
        f"{rows / theirs['validate']:,.0f} | {speedup:.1f}x | >= 5x |",
        f"| validate (same checks) rows/s | {rows / ours['validate']:,.0f} | pandera on polars "
        f"{rows / polars['validate']:,.0f} | {polars['validate'] / ours['validate']:.1f}x | > 1x |",
        f"| validate CPU ms per run (all threads) | {ours['validate_cpu'] * 1e3:,.1f} | pandera on pandas "
        f"{theirs['validate_cpu'] * 1e3:,.1f} | {theirs['validate_cpu'] / ours['validate_cpu']:.1f}x | - |",
        f"| validate CPU ms per run (all threads) | {ours['validate_cpu'] * 1e3:,.1f} | pandera on polars "
        f"{polars['validate_cpu'] * 1e3:,.1f} | {polars['validate_cpu'] / ours['validate_cpu']:.1f}x | - |",
        f"| profile (same canonical table) rows/s | {rows / profiles['mloop']:,.0f} | polars "
        f"{rows / profiles['polars']:,.0f} | {profiles['polars'] / profiles['mloop']:.1f}x | >= 1x |",
        f"| profile (same canonical table) rows/s | {rows / profiles['mloop']:,.0f} | DuckDB SUMMARIZE "
        f"{rows / profiles['duckdb']:,.0f} | {profiles['duckdb'] / profiles['mloop']:.1f}x | >= 1x |",
        f"| ingest end to end rows/s (streaming pipeline: validate, profile, canonicalise, digest, Parquet) "
        f"| {rows / ours['ingest']:,.0f} | - | - | - |",
        f"| profile from a pandas frame (canonicalise + profile) rows/s | {rows / ours['profile']:,.0f} | - | - | - |",
        f"| canonicalise rows/s | {rows / ours['canonical']:,.0f} | - | - | - |",
        f"| digest MB/s | {mb / digest['digest']:,.0f} | sha256sum {mb / sha_time:,.0f} | {digest_ratio:.0%} | >= 70% |",
        f"| peak RSS MB (validate+profile) | {ours['peak_mb']:,.0f} | pandera {theirs['peak_mb']:,.0f} | - | - |",
        f"| peak RSS MB (interpreter baseline) | {base['peak_mb']:,.0f} | | | |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
