"""Benchmark the table graph against the plain polars + deltalake floor.

For each size: generate events (--rows, in --files files) and --customers customers
(seeded), scaffold a project with the real `medallion init --no-sample-data`, land them in
data/landing/events and data/landing/customers, then time, each in a fresh process:
  * `medallion run all` (the whole graph, one process: what a user runs),
  * `medallion run +gold_daily_sales` (the events chain, one process), compared with
    `bench/baseline.py ... all`, the same chain hand-written (the floor),
  * `medallion run TABLE` for every table in turn, one process each (wall, rows/s, peak RSS),
    and the baseline per layer.
Peak RSS is the child's ru_maxrss (os.wait4). medallion runs as `python -m medallion_cli`
with this repository's src first on PYTHONPATH, so a worktree benchmarks its own code.
Prints tables (with the load average) and writes bench/.work/results.json.

Then, per size, the incremental case: a full load followed by one `medallion run all` over
a batch of --batch events (half new events on recent days, a few late, half updates).

    python bench/run.py --rows 1000000 5000000 [--customers 100000] [--files 10] [--batch 50000]
        [--only full|incremental|quality|s3|scale] [--landing /work/bigdata/events-20m]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
SRC = HERE.parent / "src"
LAYERS = ("bronze", "silver", "gold")
EVENTS_CHAIN = ("bronze_events", "silver_events", "gold_daily_sales")
CUSTOMER_TABLES = ("bronze_customers", "silver_customers")
TABLES = (*EVENTS_CHAIN, *CUSTOMER_TABLES, "gold_sales_by_segment")
LANDING: Path | None = None  # --landing


def medallion(*args: object) -> list[str]:
    """The medallion command of this checkout (not whatever `medallion` the venv installed)."""
    return [sys.executable, "-m", "medallion_cli", *map(str, args)]


def child_env(extra: dict | None = None) -> dict:
    """The environment with this repository's src first on PYTHONPATH."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return env


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


def measured(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` in a child, wait4() it, and return wall seconds and peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env or child_env())
    out = proc.stdout.read()
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed with exit code {proc.returncode}")
    return {"wall_s": round(wall, 3), "peak_rss_mib": round(rusage.ru_maxrss / 1024, 1), "stdout": out.decode()}


def link_into(path: Path, folder: Path) -> None:
    """A hard link (a copy across file systems): medallion refuses landing symlinks that
    leave the landing folder."""
    try:
        os.link(path, folder / path.name)
    except OSError:
        shutil.copy2(path, folder / path.name)


def land(project: Path, events_src: Path, customers_src: Path | None = None) -> None:
    for src, feed in ((events_src, "events"), (customers_src, "customers")):
        if src is not None:
            for f in src.iterdir():
                link_into(f, project / "data" / "landing" / feed)


def set_partition(project: Path, pipeline: str, spec: str | None) -> None:
    """Replace the ``partition:`` line the template gives ``pipeline`` with ``spec`` (YAML
    flow text such as ``{by: files, max_files: 2}``); None removes it: the table runs as one unit."""
    path = project / "conf" / "pipelines" / f"{pipeline}.yml"
    lines = path.read_text().splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.startswith("  partition:")]
    if len(at) != 1:
        raise SystemExit(f"{path}: expected one `  partition:` line, found {len(at)}")
    if spec is None:
        del lines[at[0]]
    else:
        lines[at[0]] = f"  partition: {spec}\n"
    path.write_text("".join(lines))


def fresh_project(root: Path, events_src: Path, name: str, customers_src: Path | None = None, *,
                  units: bool = True) -> Path:
    """A new project from `medallion init` with the landing files linked in. ``units=False``
    removes the template's work units (``medallion.partition``): every table runs as one unit."""
    project = root / name
    shutil.rmtree(project, ignore_errors=True)
    subprocess.run(medallion("init", name, "--no-sample-data", "-q", "--directory", root), check=True, env=child_env())
    if not units:
        for pipeline in TABLES:
            set_partition(project, pipeline, None)
    land(project, events_src, customers_src)
    return project


def generate(root: Path, rows: int, files: int, n_customers: int = 0) -> tuple[Path, Path | None]:
    """Seeded landing files under ``root``: events in ``files`` files, customers in 2.

    In a child process: a child's peak RSS (ru_maxrss) starts from its parent's at fork, so
    the parent must never hold the generated frames."""
    if LANDING is not None:  # --landing: files generated earlier (e.g. /work/bigdata/events-20m)
        events_dir, customers_dir = LANDING / "landing_events", LANDING / "landing_customers"
        if not events_dir.is_dir():
            raise SystemExit(f"--landing {LANDING}: no landing_events folder")
        root.mkdir(parents=True, exist_ok=True)
        return events_dir, (customers_dir if n_customers and customers_dir.is_dir() else None)
    events_dir, customers_dir = root / "landing_events", root / "landing_customers"
    cmd = [sys.executable, HERE / "generate.py", events_dir, "--rows", rows, "--files", files, "--seed", 7]
    if rows > 20_000_000:  # independent seeded chunks of 10M: bounded memory while generating
        cmd += ["--chunks", -(-rows // 10_000_000)]
    if n_customers:
        cmd += ["--customers", n_customers, "--customers-out", customers_dir]
    t0 = time.perf_counter()
    subprocess.run(list(map(str, cmd)), check=True)
    print(f"[{rows:,} events, {n_customers:,} customers] generated in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)
    return events_dir, (customers_dir if n_customers else None)


def tables_of(doc: dict) -> dict:
    return {t["table"]: {"s": t["duration_s"], "rows_in": t["rows_in"], "rows_out": t["rows_out"],
                         "status": t["status"], "window": t.get("window")} for t in doc["layers"]}


def bench_incremental(rows: int, files: int, batch: int, n_customers: int) -> dict:
    """Full load of ``rows`` events and the customers, then one incremental `run all` over a
    batch of ``batch`` events. (Generated in this process, which holds the frames: the peak
    RSS of these runs is not reported.)"""
    sys.path.insert(0, str(HERE))
    from generate import customers, events, incremental_batch, write_files

    root = WORK / f"inc_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    base = events(rows, seed=7)
    write_files(base, root / "landing_events", files, "parquet")
    write_files(customers(n_customers, seed=7), root / "landing_customers", 2, "parquet", prefix="customers")
    project = fresh_project(root, root / "landing_events", "m_inc", root / "landing_customers")
    full = measured(medallion("run", "all", "--json", "-q"), project)
    full.pop("stdout")
    delta = incremental_batch(base, batch, seed=21)
    del base
    for path in write_files(delta, root / "batch", 1, "parquet", prefix="increment"):
        link_into(path, project / "data" / "landing" / "events")
    inc = measured(medallion("run", "all", "--json", "-q"), project)
    inc["layers"] = tables_of(json.loads(inc.pop("stdout")))
    shutil.rmtree(root, ignore_errors=True)
    return {"rows": rows, "customers": n_customers, "batch": batch, "load": load(), "full": full, "incremental": inc}


def report_incremental(results: list[dict]) -> None:
    print("\n== incremental `run all` (whole graph) after a full load, the same events batch on every size ==")
    print(f"{'events':>12}{'batch':>9}{'full load':>12}{'incremental':>13}{'share':>8}   per table (s, inside the run)")
    for r in results:
        full, inc = r["full"]["wall_s"], r["incremental"]["wall_s"]
        tables = ", ".join(f"{k} {v['s']:.2f}" for k, v in r["incremental"]["layers"].items())
        print(f"{r['rows']:>12,}{r['batch']:>9,}{full:>11.2f}s{inc:>12.2f}s{inc / full:>7.0%}   {tables}  ({r['load']})")


def bench_quality(rows: int, files: int, repeat: int = 3) -> dict:
    """silver_events with its pandera gate (template default) against silver_events with the
    gate removed."""
    root = WORK / f"quality_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    landing, _ = generate(root, rows, files)
    base = fresh_project(root, landing, "q_base")
    subprocess.run(medallion("run", "bronze_events", "-q"), cwd=base, check=True, env=child_env())
    out: dict = {"rows": rows, "load": load()}
    for label, strip in (("with_gate", False), ("without_gate", True)):
        best = None
        for _ in range(repeat):
            project = root / f"q_{label}"
            shutil.rmtree(project, ignore_errors=True)
            shutil.copytree(base, project, symlinks=True, ignore=downstream_tables)
            if strip:
                cfg = project / "conf" / "pipelines" / "silver_events.yml"
                text = cfg.read_text()
                cfg.write_text(text[: text.index("  quality:")] + text[text.index("  target:"):])
                # Without the gate, rows without an id must still be kept out of the MERGE.
                module = project / "pipelines" / "silver_events.py"
                old = 'return normalized_events.select(*EVENT_COLUMNS, "_ingested_at", "_source_file")'
                text = module.read_text()
                if old not in text:
                    raise SystemExit(f"bench_quality: {module.name} changed; update the gate-less variant")
                module.write_text(text.replace(old, 'return normalized_events.filter(pl.col("event_id").is_not_null())'
                                                    '.select(*EVENT_COLUMNS, "_ingested_at", "_source_file")'))
            m = measured(medallion("run", "silver_events", "--json", "-q"), project)
            layer = json.loads(m.pop("stdout"))["layers"][0]
            m["layer_s"] = layer["duration_s"]
            m["quality"] = layer.get("quality")
            if best is None or m["layer_s"] < best["layer_s"]:
                best = m
        out[label] = best
    shutil.rmtree(root, ignore_errors=True)
    return out


def downstream_tables(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: the lake's silver_events* and gold tables (not the pipelines named so)."""
    if Path(folder).name != "lake":
        return []
    return [n for n in names if n.startswith(("silver_events", "gold_"))]


def report_quality(results: list[dict]) -> None:
    print("\n== silver_events with its quality gate (pandera, quarantine) vs without; best of 3 ==")
    for r in results:
        w, wo = r["with_gate"], r["without_gate"]
        q = w["quality"] or {}
        print(f"{r['rows']:,} rows: silver_events {w['layer_s']:.2f}s with gate vs {wo['layer_s']:.2f}s without "
              f"(+{w['layer_s'] / wo['layer_s'] - 1:.0%}); invalid {q.get('rows_invalid', 0):,} of {q.get('rows_checked', 0):,}; "
              f"peak RSS {w['peak_rss_mib']:.0f} vs {wo['peak_rss_mib']:.0f} MiB  ({r['load']})")


def bench_s3(rows: int, files: int, n_customers: int) -> dict:
    """`medallion run all` (whole graph) with the lake on a moto S3 server (a local process),
    next to local."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from s3fixtures import MotoS3

    root = WORK / f"s3_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    events_src, customers_src = generate(root, rows, files, n_customers)
    server = MotoS3()
    try:
        server.client().create_bucket(Bucket="bench")
        env = child_env(server.env())
        subprocess.run(medallion("init", "s3proj", "--no-sample-data", "-q", "--directory", root,
                                 "--storage", "s3", "--bucket", "bench"), check=True, env=env)
        land(root / "s3proj", events_src, customers_src)
        s3 = measured(medallion("run", "all", "--json", "-q"), root / "s3proj", env=env)
        s3["layers"] = {k: v["s"] for k, v in tables_of(json.loads(s3.pop("stdout"))).items()}
        local_project = fresh_project(root, events_src, "localproj", customers_src)
        local = measured(medallion("run", "all", "--json", "-q"), local_project)
        local.pop("stdout")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {"rows": rows, "customers": n_customers, "load": load(), "s3": s3, "local": local}


def report_s3(results: list[dict]) -> None:
    print("\n== `medallion run all` (whole graph) with the lake on S3 (moto server on 127.0.0.1) vs local ==")
    for r in results:
        s3, local = r["s3"], r["local"]
        tables = ", ".join(f"{k} {v:.2f}s" for k, v in s3["layers"].items())
        print(f"{r['rows']:,} events + {r['customers']:,} customers: S3 {s3['wall_s']:.2f}s "
              f"({r['rows'] / s3['wall_s']:,.0f} events/s; {tables}) "
              f"vs local {local['wall_s']:.2f}s ({r['rows'] / local['wall_s']:,.0f} events/s)  ({r['load']})")


def bench_size(rows: int, files: int, n_customers: int) -> dict:
    root = WORK / f"rows_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    events_src, customers_src = generate(root, rows, files, n_customers)
    result: dict = {"rows": rows, "files": files, "customers": n_customers, "load_before": load()}

    def run(project: Path, *args: str) -> dict:
        m = measured(medallion("run", *args, "--json", "-q"), project)
        m["tables"] = tables_of(json.loads(m.pop("stdout")))
        return m

    # The events chain in one process and the floor (the same chain hand-written, one
    # process) back to back, so that their ratio sees the same machine load.
    result["medallion_chain"] = run(fresh_project(root, events_src, "m_chain", customers_src), "+gold_daily_sales")
    b_all = measured([sys.executable, HERE / "baseline.py", events_src, root / "b_all", "all"], root)
    b_all.pop("stdout")
    result["baseline_all"] = b_all
    # The whole graph in one process: what a user runs.
    result["medallion_all"] = run(fresh_project(root, events_src, "m_all", customers_src), "all")
    result["customer_rows"] = result["medallion_all"]["tables"]["bronze_customers"]["rows_in"]
    # One process per table, upstream first; the baseline one process per layer.
    project = fresh_project(root, events_src, "m_tables", customers_src)
    result["medallion_table"] = {table: run(project, table) for table in TABLES}
    lake = root / "b_layers"
    result["baseline_layer"] = {}
    for layer in LAYERS:
        b = measured([sys.executable, HERE / "baseline.py", events_src, lake, layer], root)
        b.pop("stdout")
        result["baseline_layer"][layer] = b
    result["load_after"] = load()
    shutil.rmtree(root, ignore_errors=True)
    return result


def bench_scale(rows: int, files: int, n_customers: int) -> dict:
    """`medallion run all` once on a fresh project with the template's work units (what a
    user gets): wall, peak RSS, and per table its time, rows and units. No baseline (it holds
    everything in memory: 6 GiB at 20M events)."""
    root = WORK / f"scale_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    events_src, customers_src = generate(root, rows, files, n_customers)
    project = fresh_project(root, events_src, "m_scale", customers_src)
    m = measured(medallion("run", "all", "--json", "-q"), project)
    doc = json.loads(m.pop("stdout"))
    m["tables"] = {t["table"]: {"s": t["duration_s"], "rows_in": t["rows_in"], "units": t["metrics"].get("units")}
                   for t in doc["layers"]}
    shutil.rmtree(root, ignore_errors=True)
    return {"rows": rows, "files": files, "load": load(), **m}


def report_scale(results: list[dict]) -> None:
    print("\n== `medallion run all` with the template's work units (memory_budget_mb 1024) ==")
    for r in results:
        tables = ", ".join(f"{k} {v['s']:.1f}s" + (f" ({v['units']} units)" if v["units"] else "")
                           for k, v in r["tables"].items())
        print(f"{r['rows']:,} events in {r['files']} files: {r['wall_s']:.1f}s, {r['rows'] / r['wall_s']:,.0f} events/s, "
              f"peak RSS {r['peak_rss_mib']:,.0f} MiB; {tables}  ({r['load']})")


def report(results: list[dict]) -> None:
    head = (f"{'':<34}{'wall':>8}{'rows/s':>11}{'peak RSS':>10}{'rows out':>11}   "
            f"{'baseline':<8}{'wall':>8}{'rows/s':>11}{'peak RSS':>10}")
    for r in results:
        rows, crows = r["rows"], r["customer_rows"]
        print(f"\n== {rows:,} events in {r['files']} parquet files + {r['customers']:,} customers "
              f"({crows:,} rows in 2 files); {r['load_before']} before, {r['load_after']} after ==")
        print(head)

        def line(label: str, m: dict, n: int, rows_out: int | None, base: tuple[str, dict] | None = None) -> None:
            out = f"{rows_out:>11,}" if rows_out is not None else f"{'':>11}"
            text = f"{label:<34}{m['wall_s']:>7.2f}s{n / m['wall_s']:>11,.0f}{m['peak_rss_mib']:>7.0f}MiB{out}"
            if base:
                name, b = base
                text += f"   {name:<8}{b['wall_s']:>7.2f}s{rows / b['wall_s']:>11,.0f}{b['peak_rss_mib']:>7.0f}MiB"
            print(text)

        for table, layer in zip(EVENTS_CHAIN, LAYERS):
            m = r["medallion_table"][table]
            line(f"run {table}", m, rows, m["tables"][table]["rows_out"], (layer, r["baseline_layer"][layer]))
        chain, b_all = r["medallion_chain"], r["baseline_all"]
        line("run +gold_daily_sales (one proc)", chain, rows, None, ("all", b_all))
        for table in CUSTOMER_TABLES:
            m = r["medallion_table"][table]
            line(f"run {table}", m, crows, m["tables"][table]["rows_out"])
        m = r["medallion_table"]["gold_sales_by_segment"]
        line("run gold_sales_by_segment", m, rows, m["tables"]["gold_sales_by_segment"]["rows_out"])
        whole = r["medallion_all"]
        line("run all (whole graph, one proc)", whole, rows + crows, None)
        print(f"events chain medallion/baseline: {chain['wall_s'] / b_all['wall_s']:.2f}x "
              f"({chain['wall_s']:.2f}s vs {b_all['wall_s']:.2f}s); whole graph `run all` {whole['wall_s']:.2f}s "
              f"= {whole['wall_s'] / b_all['wall_s']:.2f}x the baseline events chain")
        print("inside `run all` (tables overlap, --threads default): "
              + ", ".join(f"{k} {v['s']:.2f}s" for k, v in whole["tables"].items()))
        print("rows/s: events in (customer rows in for the customer tables, both for run all)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000], help="events per size")
    parser.add_argument("--customers", type=int, default=100_000, help="customers (default 100000)")
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--batch", type=int, default=50_000, help="incremental batch rows (default: 1%% of 5M)")
    parser.add_argument("--only", choices=["full", "incremental", "quality", "s3", "scale"],
                        help="run one part of the benchmark (scale: `run all` alone, for big sizes)")
    parser.add_argument("--landing", type=Path,
                        help="use DIR/landing_events and DIR/landing_customers instead of generating (full, quality "
                             "and s3 parts; one --rows value: the files' row count, for the report)")
    args = parser.parse_args()
    global LANDING
    LANDING = args.landing
    WORK.mkdir(exist_ok=True)
    results: dict = {}
    if args.only in (None, "full"):
        results["full"] = [bench_size(rows, args.files, args.customers) for rows in args.rows]
    if args.only in (None, "incremental"):
        results["incremental"] = [bench_incremental(rows, args.files, args.batch, args.customers) for rows in args.rows]
    if args.only in (None, "quality"):
        results["quality"] = [bench_quality(rows, args.files) for rows in args.rows if rows >= 5_000_000 or args.only]
    if args.only == "s3":
        results["s3"] = [bench_s3(rows, args.files, args.customers) for rows in args.rows]
    if args.only == "scale":
        results["scale"] = [bench_scale(rows, args.files, args.customers) for rows in args.rows]
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    if "full" in results:
        report(results["full"])
    if "incremental" in results:
        report_incremental(results["incremental"])
    if results.get("quality"):
        report_quality(results["quality"])
    if results.get("s3"):
        report_s3(results["s3"])
    if results.get("scale"):
        report_scale(results["scale"])


if __name__ == "__main__":
    main()
