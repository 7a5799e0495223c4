"""The built wheel works on its own: templates ship inside it and `init` + `run` work."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_installed_wheel_scaffolds_and_runs(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("medallion_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "medallion_cli/templates/events/conf/pipelines/silver_events.yml" in names
    assert "medallion_cli/templates/events/data/landing/events/events_2024-01-06.parquet" in names

    # Install the wheel alone into its own folder, ahead of any editable checkout on the path.
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "work"
    work.mkdir()

    def medallion(*args: str, cwd: Path = work) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "medallion_cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )

    where = subprocess.run(
        [sys.executable, "-c", "import medallion_cli; print(medallion_cli.__file__)"],
        env=env, capture_output=True, text=True, cwd=work,
    )
    assert where.stdout.strip().startswith(str(site)), where
    r = medallion("init", "shop")
    assert r.returncode == 0, r.stderr
    r = medallion("run", "all", "--json", cwd=work / "shop")
    assert r.returncode == 0, r.stderr
    assert (work / "shop" / "lake" / "gold_daily_sales" / "_delta_log").is_dir()
    script = site / "bin" / "medallion"
    assert script.exists()
