"""Run a project's layers in dependency order and materialize each output to Delta.

The pipeline modules hold the transforms; this module owns everything around them:
resolving which layers to run, building each DAG's inputs (the source frame, run id,
defaults and ``--set`` overrides), running the DAG through FlowerPower, writing the output
frame to the layer's Delta table with run metadata, and returning a :class:`RunResult`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import yaml

from medallion_cli import __version__
from medallion_cli.errors import MedallionError, PipelineError, UsageError
from medallion_cli.flow import load_flowerpower, run_dag, validate_executor
from medallion_cli.project import LayerConfig, Project

# Materialization settings a run may override with --set, next to the DAG's inputs.
WRITE_OVERRIDES = ("target_file_size_mb",)


@dataclass(frozen=True)
class LayerResult:
    """What one layer did in a run."""

    layer: str
    table: str
    table_uri: str
    mode: str
    status: str  # written | unchanged | failed
    rows_in: int | None
    rows_out: int | None
    version: int | None
    operation: str | None
    duration_s: float
    metrics: dict[str, Any] = field(default_factory=dict)
    source_files: int | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data


@dataclass(frozen=True)
class RunResult:
    """A whole ``medallion run``: its id, the layers it ran and how it ended."""

    run_id: str
    project: str
    started_at: datetime
    status: str  # succeeded | failed
    layers: tuple[LayerResult, ...]
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "project": self.project,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "medallion_version": __version__,
            "layers": [layer.to_dict() for layer in self.layers],
        }


class RunFailedError(PipelineError):
    """A layer failed; ``result`` holds what ran before it and the failure itself."""

    def __init__(self, cause: MedallionError, result: RunResult) -> None:
        super().__init__(cause.message, cause.hint)
        self.exit_code = cause.exit_code
        self.cause = cause
        self.result = result


def new_run_id(now: datetime) -> str:
    """Sortable, readable and unique enough: ``20261128T063400Z-3f9a1c``."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def select_layers(project: Project, names: Sequence[str]) -> list[LayerConfig]:
    """The named layers (or ``all``) in the project's dependency order."""
    if not names:
        raise UsageError("name the layers to run", hint=f"e.g. `medallion run all` or `medallion run {project.layer_names[0]}`")
    known = project.layer_names
    if "all" in names:
        return list(project.layers)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown layer {unknown[0]!r}",
            hint=f"known layers: {', '.join(known)} (or `all`)",
        )
    return [layer for layer in project.layers if layer.name in set(names)]


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings to a dict; values typed by YAML (``7`` int, ``[a, b]`` list)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {pair!r} is not KEY=VALUE", hint="e.g. --set rolling_window_days=14")
        try:
            overrides[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UsageError(f"--set {key}: cannot parse value {raw!r}", hint="quote strings that contain YAML syntax") from None
    return overrides


def check_overrides(layers: Sequence[LayerConfig], overrides: dict[str, Any]) -> None:
    """Every override must be an input (or write setting) of at least one selected layer."""
    known = set(WRITE_OVERRIDES)
    for layer in layers:
        known.update(layer.inputs)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(
            f"unknown --set key {unknown[0]!r} for layer(s) {', '.join(l.name for l in layers)}",
            hint=f"known keys: {', '.join(sorted(known))}",
        )
    size = overrides.get("target_file_size_mb")
    if "target_file_size_mb" in overrides and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise UsageError("--set target_file_size_mb must be a positive integer")


def run_project(
    project: Project,
    layer_names: Sequence[str],
    *,
    overrides: dict[str, Any] | None = None,
    executor: str | None = None,
    on_layer_start: Callable[[LayerConfig], None] | None = None,
    on_layer_done: Callable[[LayerResult], None] | None = None,
) -> RunResult:
    """Run the selected layers in order; stop at the first failure.

    A failed layer writes no Delta version (the write is the last step and is atomic),
    and the layers after it do not run. Raises :class:`RunFailedError` carrying the
    partial :class:`RunResult`.
    """
    overrides = dict(overrides or {})
    layers = select_layers(project, layer_names)
    check_overrides(layers, overrides)
    executor = validate_executor(executor)
    for layer in layers:
        validate_executor(layer.executor)

    started = datetime.now(timezone.utc)
    run_id = new_run_id(started)
    t0 = time.perf_counter()
    done: list[LayerResult] = []
    fp_project = None
    for layer in layers:
        if on_layer_start:
            on_layer_start(layer)
        t_layer = time.perf_counter()
        try:
            if fp_project is None:
                fp_project = load_flowerpower(project.root)
            result = _run_layer(project, fp_project, layer, run_id, started, overrides, executor, t_layer)
        except MedallionError as exc:
            failed = _failed_result(project, layer, exc, time.perf_counter() - t_layer)
            done.append(failed)
            if on_layer_done:
                on_layer_done(failed)
            partial = RunResult(run_id, project.name, started, "failed", tuple(done), time.perf_counter() - t0)
            raise RunFailedError(exc, partial) from exc
        done.append(result)
        if on_layer_done:
            on_layer_done(result)
    return RunResult(run_id, project.name, started, "succeeded", tuple(done), time.perf_counter() - t0)


def _run_layer(
    project: Project,
    fp_project: Any,
    layer: LayerConfig,
    run_id: str,
    started: datetime,
    overrides: dict[str, Any],
    executor: str | None,
    t_layer: float,
) -> LayerResult:
    from medallion_cli import materialize, sources

    warnings: list[str] = []
    source_files = None
    landing = None
    if layer.source.landing is not None:
        landing = sources.list_landing(project.resolve_path(layer.source.landing))
        source_files = landing.count
        warnings += [f"ignored {name}: not parquet, CSV or JSON lines" for name in landing.ignored]
        frame = sources.scan_landing(landing, layer.source.schema)
    else:
        table = str(layer.source.table)
        frame = sources.scan_table(project.table_uri(table), table=table)

    inputs = {k: overrides.get(k, v) for k, v in layer.inputs.items()}
    inputs.update({layer.source.input_name: frame, "run_id": run_id, "run_started_at": started})
    value = run_dag(
        fp_project,
        layer=layer.name,
        output=layer.output,
        inputs=inputs,
        executor=executor or layer.executor,
        pipelines_dir=project.root / "pipelines",
    )
    try:
        df, rows_in = _collect(value, frame, layer)
    except PipelineError:
        if landing is not None:
            diagnosis = sources.diagnose_landing(landing, layer.source.schema)
            if diagnosis is not None:
                raise diagnosis from None
        raise

    target = layer.target
    uri = project.table_uri(target.table)
    outcome = materialize.write(
        df,
        uri,
        target,
        metadata={
            "medallion.run_id": run_id,
            "medallion.layer": layer.name,
            "medallion.version": __version__,
        },
        target_file_size_mb=overrides.get("target_file_size_mb"),
    )
    return LayerResult(
        layer=layer.name,
        table=target.table,
        table_uri=uri,
        mode=target.mode,
        status="written" if outcome.version is not None else "unchanged",
        rows_in=rows_in,
        rows_out=df.height,
        version=outcome.version,
        operation=outcome.operation,
        duration_s=round(time.perf_counter() - t_layer, 3),
        metrics=outcome.metrics,
        source_files=source_files,
        warnings=tuple(warnings),
    )


def _collect(value: Any, source: Any, layer: LayerConfig) -> tuple[Any, int]:
    """Evaluate the output and count the source rows in one pass (scans are shared)."""
    import polars as pl

    if isinstance(value, pl.DataFrame):
        value = value.lazy()
    if not isinstance(value, pl.LazyFrame):
        raise PipelineError(
            f"layer {layer.name!r}: node {layer.output!r} returned {type(value).__name__}, not a polars frame",
            hint="return a pl.DataFrame or pl.LazyFrame from the output node",
        )
    try:
        df, count = pl.collect_all([value, source.select(pl.len())])
    except Exception as exc:  # a polars error while evaluating the pipeline's plan
        raise PipelineError(
            f"layer {layer.name!r} failed while computing {layer.output!r}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            hint=f"check the transforms in pipelines/{layer.name}.py; run with --debug for details",
        ) from exc
    return df, int(count.item())


def _failed_result(project: Project, layer: LayerConfig, exc: MedallionError, duration: float) -> LayerResult:
    return LayerResult(
        layer=layer.name,
        table=layer.target.table,
        table_uri=project.table_uri(layer.target.table),
        mode=layer.target.mode,
        status="failed",
        rows_in=None,
        rows_out=None,
        version=None,
        operation=None,
        duration_s=round(duration, 3),
        error=exc.message,
    )
