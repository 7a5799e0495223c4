"""Benchmark `medallion run all` against the plain polars + deltalake floor.

For each size: generate landing files (seeded), scaffold a project with the real
`medallion init --no-sample-data`, then time, each in a fresh process on a fresh lake,
  * `medallion run all` (one process: what a user runs),
  * `medallion run LAYER` for bronze, silver, gold in turn (per-layer wall and peak RSS),
  * the baseline script, all layers and per layer, the same way.
Peak RSS is the child's ru_maxrss (os.wait4). Prints a table and writes bench/.work/results.json.

Then, per size, the incremental case: a full load followed by one `medallion run all` over
a batch of --batch rows (half new events on recent days, a few late, half updates).

    python bench/run.py --rows 1000000 5000000 [--files 10] [--batch 50000] [--only full|incremental]
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
BIN = Path(sys.executable).parent
LAYERS = ("bronze", "silver", "gold")


def measured(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd`` in a child, wait4() it, and return wall seconds and peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
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


def fresh_project(root: Path, landing_src: Path, name: str) -> Path:
    project = root / name
    shutil.rmtree(project, ignore_errors=True)
    subprocess.run([BIN / "medallion", "init", name, "--no-sample-data", "-q", "--directory", root], check=True)
    landing = project / "data" / "landing" / "events"
    for f in landing_src.iterdir():
        link_into(f, landing)
    return project


def bench_incremental(rows: int, files: int, batch: int) -> dict:
    """Full load of ``rows``, then one incremental `run all` over a batch of ``batch`` rows."""
    sys.path.insert(0, str(HERE))
    from generate import events, incremental_batch, write_files

    root = WORK / f"inc_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    landing = root / "landing"
    base = events(rows, seed=7)
    write_files(base, landing, files, "parquet")
    project = fresh_project(root, landing, "m_inc")
    full = measured([BIN / "medallion", "run", "all", "--json", "-q"], project)
    full.pop("stdout")
    delta = incremental_batch(base, batch, seed=21)
    del base
    for path in write_files(delta, root / "batch", 1, "parquet", prefix="increment"):
        link_into(path, project / "data" / "landing" / "events")
    inc = measured([BIN / "medallion", "run", "all", "--json", "-q"], project)
    doc = json.loads(inc.pop("stdout"))
    inc["layers"] = {l["layer"]: {"s": l["duration_s"], "rows_in": l["rows_in"], "rows_out": l["rows_out"],
                                  "window": l["window"]} for l in doc["layers"]}
    shutil.rmtree(root, ignore_errors=True)
    return {"rows": rows, "batch": batch, "full": full, "incremental": inc}


def report_incremental(results: list[dict]) -> None:
    print("\n== incremental `run all` after a full load (same batch on every table size) ==")
    print(f"{'table rows':>12}{'batch':>9}{'full load':>12}{'incremental':>13}{'ratio':>8}   per layer")
    for r in results:
        full, inc = r["full"]["wall_s"], r["incremental"]["wall_s"]
        layers = ", ".join(f"{k} {v['s']:.2f}s" for k, v in r["incremental"]["layers"].items())
        print(f"{r['rows']:>12,}{r['batch']:>9,}{full:>11.2f}s{inc:>12.2f}s{inc / full:>7.0%}   {layers}")


def bench_quality(rows: int, files: int, repeat: int = 3) -> dict:
    """Silver with its pandera gate (template default) against silver with the gate removed."""
    sys.path.insert(0, str(HERE))
    from generate import events, write_files

    root = WORK / f"quality_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    landing = root / "landing"
    write_files(events(rows, seed=7), landing, files, "parquet")
    base = fresh_project(root, landing, "q_base")
    subprocess.run([BIN / "medallion", "run", "bronze", "-q"], cwd=base, check=True)
    out: dict = {"rows": rows}
    for label, strip in (("with_gate", False), ("without_gate", True)):
        best = None
        for _ in range(repeat):
            project = root / f"q_{label}"
            shutil.rmtree(project, ignore_errors=True)
            shutil.copytree(base, project, symlinks=True, ignore=shutil.ignore_patterns("silver_events*", "gold_daily_sales"))
            if strip:
                cfg = project / "conf" / "pipelines" / "silver.yml"
                text = cfg.read_text()
                cfg.write_text(text[: text.index("  quality:")] + text[text.index("  target:"):])
                # Without the gate, rows without an id must still be kept out of the MERGE.
                module = project / "pipelines" / "silver.py"
                module.write_text(module.read_text().replace(
                    "return pl.concat([latest, normalized_events.filter(pl.col(\"event_id\").is_null())]).select(EVENT_COLUMNS)",
                    "return latest.select(EVENT_COLUMNS)"))
            m = measured([BIN / "medallion", "run", "silver", "--json", "-q"], project)
            layer = json.loads(m.pop("stdout"))["layers"][0]
            m["layer_s"] = layer["duration_s"]
            m["quality"] = layer.get("quality")
            if best is None or m["layer_s"] < best["layer_s"]:
                best = m
        out[label] = best
    shutil.rmtree(root, ignore_errors=True)
    return out


def report_quality(results: list[dict]) -> None:
    print("\n== silver with its quality gate (pandera, quarantine) vs without; best of 3 ==")
    for r in results:
        w, wo = r["with_gate"], r["without_gate"]
        q = w["quality"] or {}
        print(f"{r['rows']:,} rows: silver {w['layer_s']:.2f}s with gate vs {wo['layer_s']:.2f}s without "
              f"(+{w['layer_s'] / wo['layer_s'] - 1:.0%}); invalid {q.get('rows_invalid', 0):,} of {q.get('rows_checked', 0):,}; "
              f"peak RSS {w['peak_rss_mib']:.0f} vs {wo['peak_rss_mib']:.0f} MiB")


def bench_s3(rows: int, files: int) -> dict:
    """`medallion run all` with the lake on a moto S3 server (a local process), next to local."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    sys.path.insert(0, str(HERE))
    from generate import events, write_files
    from s3fixtures import MotoS3

    root = WORK / f"s3_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    landing = root / "landing"
    write_files(events(rows, seed=7), landing, files, "parquet")
    server = MotoS3()
    try:
        server.client().create_bucket(Bucket="bench")
        env = {**os.environ, **server.env()}
        subprocess.run([BIN / "medallion", "init", "s3proj", "--no-sample-data", "-q", "--directory", root,
                        "--storage", "s3", "--bucket", "bench"], check=True, env=env)
        for f in landing.iterdir():
            link_into(f, root / "s3proj" / "data" / "landing" / "events")
        old = dict(os.environ)
        os.environ.update(server.env())
        try:
            s3 = measured([BIN / "medallion", "run", "all", "--json", "-q"], root / "s3proj")
        finally:
            os.environ.clear()
            os.environ.update(old)
        doc = json.loads(s3.pop("stdout"))
        s3["layers"] = {l["layer"]: l["duration_s"] for l in doc["layers"]}
        local_project = fresh_project(root, landing, "localproj")
        local = measured([BIN / "medallion", "run", "all", "--json", "-q"], local_project)
        local.pop("stdout")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {"rows": rows, "s3": s3, "local": local}


def report_s3(results: list[dict]) -> None:
    print("\n== `medallion run all` with the lake on S3 (moto server on 127.0.0.1) vs local ==")
    for r in results:
        s3, local = r["s3"], r["local"]
        layers = ", ".join(f"{k} {v:.2f}s" for k, v in s3["layers"].items())
        print(f"{r['rows']:,} rows: S3 {s3['wall_s']:.2f}s ({r['rows'] / s3['wall_s']:,.0f} rows/s; {layers}) "
              f"vs local {local['wall_s']:.2f}s ({r['rows'] / local['wall_s']:,.0f} rows/s)")


def bench_size(rows: int, files: int) -> dict:
    sys.path.insert(0, str(HERE))
    from generate import events, write_files

    root = WORK / f"rows_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    landing = root / "landing"
    t0 = time.perf_counter()
    write_files(events(rows, seed=7), landing, files, "parquet")
    print(f"[{rows:,} rows] generated {files} files in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    result: dict = {"rows": rows, "files": files}
    # medallion, all layers in one process
    project = fresh_project(root, landing, "m_all")
    m_all = measured([BIN / "medallion", "run", "all", "--json", "-q"], project)
    doc = json.loads(m_all.pop("stdout"))
    result["medallion_all"] = {**m_all, "layers": {l["layer"]: l["duration_s"] for l in doc["layers"]},
                               "rows_out": {l["layer"]: l["rows_out"] for l in doc["layers"]}}
    # medallion, one process per layer
    project = fresh_project(root, landing, "m_layers")
    result["medallion_layer"] = {}
    for layer in LAYERS:
        m = measured([BIN / "medallion", "run", layer, "--json", "-q"], project)
        m.pop("stdout")
        result["medallion_layer"][layer] = m
    # baseline
    lake = root / "b_all"
    shutil.rmtree(lake, ignore_errors=True)
    b_all = measured([sys.executable, HERE / "baseline.py", landing, lake, "all"], root)
    b_all.pop("stdout")
    result["baseline_all"] = b_all
    lake = root / "b_layers"
    shutil.rmtree(lake, ignore_errors=True)
    result["baseline_layer"] = {}
    for layer in LAYERS:
        b = measured([sys.executable, HERE / "baseline.py", landing, lake, layer], root)
        b.pop("stdout")
        result["baseline_layer"][layer] = b
    shutil.rmtree(root, ignore_errors=True)
    return result


def report(results: list[dict]) -> None:
    for r in results:
        rows = r["rows"]
        print(f"\n== {rows:,} rows in {r['files']} parquet files ==")
        print(f"{'':<10}{'medallion wall':>16}{'rows/s':>12}{'peak RSS':>11}   {'baseline wall':>14}{'rows/s':>12}{'peak RSS':>11}")
        for layer in LAYERS:
            m, b = r["medallion_layer"][layer], r["baseline_layer"][layer]
            print(f"{layer:<10}{m['wall_s']:>15.2f}s{rows / m['wall_s']:>12,.0f}{m['peak_rss_mib']:>8.0f}MiB"
                  f"   {b['wall_s']:>13.2f}s{rows / b['wall_s']:>12,.0f}{b['peak_rss_mib']:>8.0f}MiB")
        m, b = r["medallion_all"], r["baseline_all"]
        print(f"{'run all':<10}{m['wall_s']:>15.2f}s{rows / m['wall_s']:>12,.0f}{m['peak_rss_mib']:>8.0f}MiB"
              f"   {b['wall_s']:>13.2f}s{rows / b['wall_s']:>12,.0f}{b['peak_rss_mib']:>8.0f}MiB")
        print(f"run all ratio medallion/baseline: {m['wall_s'] / b['wall_s']:.2f}x  "
              f"(inside medallion: " + ", ".join(f"{k} {v:.2f}s" for k, v in m["layers"].items()) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--batch", type=int, default=50_000, help="incremental batch rows (default: 1%% of 5M)")
    parser.add_argument("--only", choices=["full", "incremental", "quality", "s3"], help="run one part of the benchmark")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    results: dict = {}
    if args.only in (None, "full"):
        results["full"] = [bench_size(rows, args.files) for rows in args.rows]
    if args.only in (None, "incremental"):
        results["incremental"] = [bench_incremental(rows, args.files, args.batch) for rows in args.rows]
    if args.only in (None, "quality"):
        results["quality"] = [bench_quality(rows, args.files) for rows in args.rows if rows >= 5_000_000 or args.only]
    if args.only == "s3":
        results["s3"] = [bench_s3(rows, args.files) for rows in args.rows]
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    if "full" in results:
        report(results["full"])
    if "incremental" in results:
        report_incremental(results["incremental"])
    if results.get("quality"):
        report_quality(results["quality"])
    if results.get("s3"):
        report_s3(results["s3"])


if __name__ == "__main__":
    main()
