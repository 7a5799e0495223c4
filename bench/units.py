"""Peak RSS and rows/s of `medallion run bronze_events` with and without work units, and
with the units as Ray tasks (`--engine ray`, a local Ray started by the run; `--no-ray` skips it).

Generates --rows events in --files Parquet files (seeded, bench/generate.py in a child),
scaffolds two projects with the real `medallion init --no-sample-data`, lands the same
files in both, declares `medallion.partition: {by: files, max_files: N}` in the second,
and runs `medallion run bronze_events` in each, in a fresh child (wall, peak RSS of the
driver from wait4: Ray's workers are not counted), then checks the tables hold the same rows.

    python bench/units.py [--rows 5000000] [--files 20] [--max-files 2] [--no-ray]

With ``--silver`` it times `medallion run silver_events` instead, with one unit and with
key buckets (``partition: {by: key, buckets: B}``, ``--buckets auto`` by default): bronze is
ingested once (as units) from the first half of the files and copied into both projects;
silver then runs twice in each, a first run that creates the table (unit files, one commit)
and, after the second half is ingested, a run that MERGEs into it (staged units, one
streamed MERGE). Each silver run is a fresh child (wall, peak RSS via wait4).

    python bench/units.py --silver [--rows 5000000] [--files 20] [--buckets auto|N] [--only-units]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import WORK, child_env, fresh_project, generate, link_into, load, measured, medallion, set_partition  # noqa: E402


def declare_units(project: Path, max_files: int) -> None:
    set_partition(project, "bronze_events", f"{{by: files, max_files: {max_files}}}")


def declare_key_units(project: Path, buckets: str) -> None:
    set_partition(project, "silver_events", f"{{by: key, buckets: {buckets}}}")


def bench_silver(rows: int, files: int, buckets: str, max_files: int, only_units: bool = False) -> dict:
    root = WORK / f"silver_units_{rows}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    events, _ = generate(root, rows, files)
    names = sorted(f.name for f in events.iterdir())
    first, second = root / "first", root / "second"
    for folder, part in ((first, names[: len(names) // 2]), (second, names[len(names) // 2:])):
        folder.mkdir()
        for name in part:
            shutil.move(str(events / name), folder / name)
    base = fresh_project(root, first, "base", units=False)
    declare_units(base, max_files)
    measured(medallion("run", "bronze_events", "-q"), base)
    results: dict = {"rows": rows, "files": files, "buckets": buckets}
    projects = {}
    for name in (("key_units",) if only_units else ("one_unit", "key_units")):
        project = root / name
        shutil.copytree(base, project, symlinks=True)
        if name == "key_units":
            declare_key_units(project, buckets)
        projects[name] = project
    for step, landing in (("create", None), ("merge", second)):
        for name, project in projects.items():
            if landing is not None:
                for f in landing.iterdir():
                    link_into(f, project / "data" / "landing" / "events")
                measured(medallion("run", "bronze_events", "-q"), project)
            m = measured(medallion("run", "silver_events", "--json", "-q"), project)
            silver = json.loads(m.pop("stdout"))["layers"][0]
            results[f"{name}_{step}"] = {**m, "rows_in": silver["rows_in"], "rows_out": silver["rows_out"],
                                         "operation": silver["operation"], "metrics": silver["metrics"], "load": load()}
            print(f"{name:<9} {step:<6} wall {m['wall_s']:6.2f}s  peak RSS {m['peak_rss_mib']:7.0f} MiB  "
                  f"rows in {silver['rows_in']:,}  units {silver['metrics'].get('units', 1)}  ({load()})", file=sys.stderr)
    if only_units:
        return results
    check = subprocess.run([sys.executable, "-c", (
        "import polars as pl, sys; a, b = (pl.scan_delta(p).drop('_ingested_at') for p in sys.argv[1:]);"
        "cols = a.collect_schema().names();"
        "print(a.sort(cols, nulls_last=True).collect().equals(b.sort(cols, nulls_last=True).collect()))"),
        *(str(p / "lake" / "silver_events") for p in projects.values())], capture_output=True, text=True, env=child_env())
    results["same_rows"] = check.stdout.strip() == "True"
    # (the second half is ingested into bronze by each project: only _ingested_at differs)
    print(f"same silver_events: {results['same_rows']} {check.stderr.strip()[-300:]}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--max-files", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="skip the --engine ray run")
    parser.add_argument("--silver", action="store_true", help="time silver_events: one unit vs key buckets")
    parser.add_argument("--buckets", default="auto", help="with --silver: buckets: auto or a number")
    parser.add_argument("--only-units", action="store_true", help="with --silver: skip the one-unit project")
    args = parser.parse_args()
    if args.silver:
        result = bench_silver(args.rows, args.files, args.buckets, args.max_files, args.only_units)
        (WORK / f"silver_units_results_{args.rows}.json").write_text(json.dumps(result, indent=2))
        return
    root = WORK / f"units_{args.rows}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    events, _ = generate(root, args.rows, args.files)
    results = {}
    runs = [("one_unit", None, ()), ("units", args.max_files, ())]
    if not args.no_ray:
        runs.append(("units_ray", args.max_files, ("--engine", "ray")))
    for name, units, extra in runs:
        project = fresh_project(root, events, name, units=False)
        if units:
            declare_units(project, units)
        m = measured(medallion("run", "bronze_events", "--json", "-q", *extra), project)
        doc = json.loads(m.pop("stdout"))
        bronze = doc["layers"][0]
        results[name] = {**m, "rows": bronze["rows_out"], "rows_per_s": round(bronze["rows_out"] / m["wall_s"]),
                         "metrics": bronze["metrics"], "load": load()}
        print(f"{name:<9} wall {m['wall_s']:6.2f}s  peak RSS {m['peak_rss_mib']:7.0f} MiB  "
              f"{results[name]['rows_per_s']:>10,} rows/s  {bronze['metrics']}  ({load()})", file=sys.stderr)
    for name, *_ in runs[1:]:
        check = subprocess.run([sys.executable, "-c", (
            "import polars as pl, sys; a, b = (pl.scan_delta(p).drop('_ingested_at', '_run_id') for p in sys.argv[1:]);"
            "cols = a.collect_schema().names();"
            "print(a.sort(cols, nulls_last=True).collect().equals(b.sort(cols, nulls_last=True).collect()))"),
            str(root / "one_unit" / "lake" / "bronze_events"), str(root / name / "lake" / "bronze_events")],
            capture_output=True, text=True, env=child_env())
        results[f"same_rows_{name}"] = check.stdout.strip() == "True"
        print(f"same rows ({name}): {results[f'same_rows_{name}']} {check.stderr.strip()[-300:]}", file=sys.stderr)
    (WORK / "units_results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
