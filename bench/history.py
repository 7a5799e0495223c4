"""Time `medallion history` on a table with many versions (default 1,000 appends).

    python bench/history.py [--versions 1000]
Prints the wall time of the whole command (process start included) and of the library call.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from deltalake import write_deltalake

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=1000)
    args = parser.parse_args()
    table = HERE / ".work" / f"history_{args.versions}"
    if not (table / "_delta_log").is_dir() or len(list((table / "_delta_log").glob("*.json"))) < args.versions:
        shutil.rmtree(table, ignore_errors=True)
        t0 = time.perf_counter()
        for i in range(args.versions):
            write_deltalake(str(table), pl.DataFrame({"i": [i], "v": [f"row {i}"]}), mode="append")
        print(f"wrote {args.versions} versions in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    # This checkout's medallion, not whatever the venv installed.
    src = str(HERE.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    for flags in ([], ["--json"], ["--limit", "20"]):
        best = min(_wall([sys.executable, "-m", "medallion_cli", "history", str(table), *flags], env) for _ in range(3))
        print(f"medallion history {' '.join(flags) or '(table)':<12} {best:.3f}s wall (best of 3)")
    sys.path.insert(0, str(HERE.parent / "src"))
    from medallion_cli import delta

    t0 = time.perf_counter()
    entries = delta.history(delta.TableRef(table.name, str(table)))
    print(f"library history(): {len(entries)} entries in {time.perf_counter() - t0:.3f}s")


def _wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
