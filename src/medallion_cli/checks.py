"""``medallion check``: validate a project without running it (for CI).

Configs parse, every pipeline module imports, every layer's DAG resolves with the inputs a
run would give it (Hamilton validates names and types), and every schema a quality gate
names imports from schemas.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medallion_cli.errors import MedallionError
from medallion_cli.project import import_file


@dataclass(frozen=True)
class CheckResult:
    layer: str | None
    check: str
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_project(root: Path) -> list[CheckResult]:
    from medallion_cli.flow import EXECUTORS
    from medallion_cli.project import load_project

    try:
        project = load_project(root)
    except MedallionError as exc:
        return [CheckResult(None, "configuration", False, exc.message)]
    results = [CheckResult(None, "configuration", True, f"{len(project.layers)} layers: {', '.join(project.layer_names)}")]
    for layer in project.layers:
        results.append(_check_dag(project, layer))
        ok = layer.executor is None or layer.executor in EXECUTORS
        results.append(CheckResult(layer.name, "executor", ok, layer.executor or "default" if ok else
                                   f"unknown executor {layer.executor!r}: use one of {', '.join(EXECUTORS)}"))
        if layer.quality is not None:
            results.extend(_check_schemas(project, layer))
    return results


def _check_dag(project: Any, layer: Any) -> CheckResult:
    import os

    import polars as pl

    os.environ.setdefault("HAMILTON_AUTOLOAD_EXTENSIONS", "0")
    path = project.root / "pipelines" / f"{layer.name}.py"
    try:
        module = import_file(path)
    except Exception as exc:  # any import-time error of the user's module
        return CheckResult(layer.name, "pipeline", False, f"{path.name} fails to import: {type(exc).__name__}: {exc}")
    from hamilton import driver

    try:
        dr = driver.Builder().with_modules(module).build()
    except Exception as exc:  # Hamilton rejects the module's functions
        return CheckResult(layer.name, "pipeline", False, f"Hamilton cannot build the DAG of {path.name}: {exc}")
    names = {v.name for v in dr.list_available_variables()}
    if layer.output not in names:
        return CheckResult(layer.name, "pipeline", False, f"{path.name} has no node {layer.output!r} (medallion.output)")
    inputs = {**layer.inputs, layer.source.input_name: pl.LazyFrame(), "run_id": "check",
              "run_started_at": datetime.now(timezone.utc)}
    try:
        dr.validate_execution([layer.output], inputs=inputs)
    except Exception as exc:  # Hamilton: missing or mistyped inputs
        text = str(exc).strip().splitlines()
        return CheckResult(layer.name, "pipeline", False, f"the DAG does not resolve: {' '.join(text[:3])}")
    return CheckResult(layer.name, "pipeline", True, f"{path.name}: {layer.output} resolves from its inputs")


def _check_schemas(project: Any, layer: Any) -> list[CheckResult]:
    from medallion_cli.quality import load_schema

    out = []
    for gate in layer.quality.gates:
        try:
            load_schema(project, gate.name)
            out.append(CheckResult(layer.name, "quality", True, f"schema {gate.name} ({gate.policy})"))
        except MedallionError as exc:
            out.append(CheckResult(layer.name, "quality", False, exc.message))
    return out
