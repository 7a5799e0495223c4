"""What a `medallion` process costs before it does any real work (issue 11, "Fixed costs").

Scaffolds a project with the real `medallion init` (the six-table template and its sample
data) under bench/.work/fixed_costs, runs it once, then times, each in a fresh process
(best and median of --repeat):
  * `medallion --help`,
  * `medallion run all` with nothing new,
  * `medallion run all` over a small new landing batch (a copy of the ran project each time,
    with --batch new events dropped into data/landing/events: four tables run their DAGs).
Then one probed run of each kind (`--threads 1`, in-process, this file as the wrapper) says
where the time goes: import time per package (from `python -X importtime`), the number of
DuckDB state connections and the time spent opening them, and per phase wall time (sync,
plan, FlowerPower load, DAG, quality gate, Delta write, run records).

medallion runs as `python -m medallion_cli` with this checkout's src first on PYTHONPATH.
Prints a report (with the load average) and writes bench/.work/fixed_costs.json.

    python bench/fixed_costs.py [--repeat 5] [--batch 2000] [--label after] [--src OTHER/src] [--no-probe]

`--src` times another checkout's code (e.g. `git archive` of an older commit) with the same
script: run the two alternately on a busy machine and compare best figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "fixed_costs"
SRC = HERE.parent / "src"

# Top-level packages reported on their own; everything else is summed as "other".
PACKAGES = ("typer", "click", "rich", "yaml", "pydantic", "polars", "pyarrow", "numpy", "pandas", "deltalake", "duckdb",
            "pandera", "flowerpower", "hamilton", "fsspec", "s3fs", "aiobotocore", "botocore", "loguru", "msgspec",
            "medallion_cli", "tenacity", "jinja2")


def child_env() -> dict:
    env = dict(os.environ)
    src = os.environ.get("MEDALLION_BENCH_SRC", str(SRC))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def medallion(*args: object) -> list[str]:
    return [sys.executable, "-m", "medallion_cli", *map(str, args)]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def land_batch(project: Path, rows: int, n: int) -> None:
    """``rows`` new events (new ids, a day after the sample's last) in one parquet file."""
    import polars as pl

    landing = project / "data" / "landing" / "events"
    sample = pl.read_parquet(next(landing.glob("*.parquet")))
    base = pl.concat([sample] * (-(-rows // sample.height))).head(rows)
    batch = base.with_row_index("i").with_columns(
        (pl.lit(f"b{n}-") + pl.col("i").cast(pl.String)).alias("event_id"),
        pl.col("event_date") + pl.duration(days=30), pl.col("updated_at") + pl.duration(days=30),
    ).drop("i")
    batch.write_parquet(landing / f"batch_{n:03d}.parquet")
    past = time.time() - 3600  # as old as the sample files: no settle rule holds it back
    os.utime(landing / f"batch_{n:03d}.parquet", (past, past))


def scaffold() -> Path:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    subprocess.run(medallion("init", "fc", "-q", "--directory", WORK), check=True, env=child_env())
    project = WORK / "fc"
    subprocess.run(medallion("run", "all", "-q"), cwd=project, check=True, env=child_env())
    return project


def fresh_copy(base: Path, name: str) -> Path:
    target = WORK / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(base, target, symlinks=True)
    return target


def stats(values: list[float]) -> dict:
    return {"best_s": round(min(values), 3), "median_s": round(statistics.median(values), 3), "n": len(values)}


# -- the probe: one run in-process, instrumented ------------------------------------------------
def probe(out: Path, argv: list[str]) -> None:
    """Run ``medallion ARGV`` in this process with timers around the phases (and fd 2 left
    alone, so that ``-X importtime`` reaches its file); write what they saw to ``out``."""
    import contextlib
    import functools
    import threading
    from collections import defaultdict

    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def add(name: str, seconds: float) -> None:
        with lock:
            totals[name] += seconds
            counts[name] += 1

    def wrap(module, attr: str, name: str) -> None:
        fn = getattr(module, attr)

        @functools.wraps(fn)
        def timed_fn(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                add(name, time.perf_counter() - t0)

        setattr(module, attr, timed_fn)

    from medallion_cli.cli import app

    app._native_stderr_hidden = lambda enabled: contextlib.nullcontext()
    if argv[:1] == ["run"]:  # --help: nothing to time but the imports, and none added here
        _instrument(wrap, add)
    t0 = time.perf_counter()
    code = 0
    try:
        app.main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    wall = time.perf_counter() - t0
    out.write_text(json.dumps({"exit_code": code, "wall_s": wall, "phases": totals, "calls": counts,
                               "modules": sorted(m.split(".")[0] for m in sys.modules if "." not in m)}))


def _instrument(wrap, add) -> None:
    import duckdb

    from medallion_cli import materialize, quality, runner, runrecords

    real_connect = duckdb.connect

    def counting_connect(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_connect(*a, **k)
        finally:
            add("state: duckdb.connect", time.perf_counter() - t0)

    duckdb.connect = counting_connect
    wrap(runner, "sync_layer", "sync (state vs Delta log)")
    wrap(runner, "plan_layer", "plan")
    wrap(runner, "load_flowerpower", "FlowerPower load (import + project)")
    wrap(runner, "run_dag", "DAG (FlowerPower/Hamilton run)")
    wrap(runner, "preflight_targets", "preflight (target schemas)")
    wrap(quality, "validate", "quality gate (pandera)")
    wrap(quality, "write_quarantine", "quarantine write")
    wrap(materialize, "write", "Delta write")
    wrap(runner, "_record_state", "record state")
    from medallion_cli.storage import Storage

    wrap(Storage, "is_table", "Delta: is_table")
    wrap(Storage, "table", "Delta: open table (log read)")
    for attr in ("start", "table", "finish"):
        wrap(runrecords.Recorder, attr, f"run record: {attr}")


def import_times(path: Path) -> dict[str, float]:
    """Cumulative import seconds per top-level package, from ``-X importtime`` output."""
    per: dict[str, float] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( +)(\S+)", line)
        if not m or len(m.group(2)) != 1:  # top-level imports only (their time includes their children)
            continue
        top = m.group(3).split(".")[0]
        key = top if top in PACKAGES else "other"
        per[key] = per.get(key, 0.0) + int(m.group(1)) / 1e6
    return dict(sorted(per.items(), key=lambda kv: -kv[1]))


def probed(project: Path, args: list[str], tag: str) -> dict:
    trace, result = WORK / f"importtime_{tag}.txt", WORK / f"probe_{tag}.json"
    with open(trace, "w") as err:
        subprocess.run([sys.executable, "-X", "importtime", __file__, "--probe", str(result), "--", *args],
                       cwd=project, check=True, env=child_env(), stdout=subprocess.DEVNULL, stderr=err)
    data = json.loads(result.read_text())
    data["imports"] = import_times(trace)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000, help="rows in the small new landing batch")
    parser.add_argument("--label", default="", help="a name for this measurement in the JSON file (before, after, ...)")
    parser.add_argument("--src", type=Path, help="the src folder whose medallion_cli to time (default: this checkout's)")
    parser.add_argument("--no-probe", action="store_true", help="only the fresh-process timings")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.probe:
        probe(args.probe, rest[1:] if rest[:1] == ["--"] else rest)
        return
    if args.src:
        os.environ["MEDALLION_BENCH_SRC"] = str(args.src.resolve())

    load_before = load()
    base = scaffold()
    figures: dict[str, dict] = {}
    figures["help"] = stats([timed(medallion("--help"), base) for _ in range(args.repeat)])
    nothing = fresh_copy(base, "nothing")
    timed(medallion("run", "all", "-q"), nothing)  # warm the file cache
    figures["nothing_new"] = stats([timed(medallion("run", "all", "-q"), nothing) for _ in range(args.repeat)])
    batch_times = []
    for i in range(args.repeat):
        project = fresh_copy(base, "batch")
        land_batch(project, args.batch, i)
        batch_times.append(timed(medallion("run", "all", "-q"), project))
    figures["small_batch"] = stats(batch_times)

    project = fresh_copy(base, "batch")
    land_batch(project, args.batch, 99)
    probes = {} if args.no_probe else {"nothing_new": probed(nothing, ["run", "all", "-q", "--threads", "1"], "nothing"),
              "small_batch": probed(project, ["run", "all", "-q", "--threads", "1"], "batch"),
              "help": probed(base, ["--help"], "help")}
    doc = {"label": args.label, "src": os.environ.get("MEDALLION_BENCH_SRC", str(SRC)), "load_before": load_before, "load_after": load(), "repeat": args.repeat,
           "batch_rows": args.batch, "figures": figures, "probes": probes}
    results = WORK.parent / "fixed_costs.json"
    history = json.loads(results.read_text()) if results.exists() else []
    history.append(doc)
    results.write_text(json.dumps(history, indent=1))

    print(f"== fixed costs, fresh processes, best / median of {args.repeat} ({load_before} before, {doc['load_after']} after) ==")
    for name, f in figures.items():
        print(f"{name:>14}: {f['best_s']:.3f} s / {f['median_s']:.3f} s")
    for name, p in probes.items():
        print(f"\n-- probe: medallion {'--help' if name == 'help' else 'run all --threads 1'} ({name}), "
              f"{p['wall_s']:.3f} s in-process --")
        imports = p["imports"]
        print(f"   imports {sum(imports.values()):.3f} s: " + ", ".join(f"{k} {v:.3f}" for k, v in imports.items() if v >= 0.005))
        for phase, seconds in sorted(p["phases"].items(), key=lambda kv: -kv[1]):
            print(f"   {phase:<38}{seconds:>7.3f} s  ({p['calls'][phase]} call(s))")
        heavy = [m for m in ("flowerpower", "hamilton", "pandera", "pandas", "s3fs", "fsspec", "pyarrow") if m in p["modules"]]
        print(f"   heavy modules loaded: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
