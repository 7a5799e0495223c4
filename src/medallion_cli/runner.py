"""Run a project's layers in dependency order and materialize each output to Delta.

The pipeline modules hold the transforms; this module owns everything around them:
resolving which layers to run, building each DAG's inputs (the source frame, run id,
defaults and ``--set`` overrides), running the DAG through FlowerPower, writing the output
frame to the layer's Delta table with run metadata, and returning a :class:`RunResult`.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import yaml

from medallion_cli import __version__
from medallion_cli.errors import ConflictError, MedallionError, PipelineError, UsageError
from medallion_cli.commits import app_id, build_metadata
from medallion_cli.checks import preflight_inputs, preflight_targets
from medallion_cli.flow import load_flowerpower, resolve_exceptions, run_dag, validate_executor, with_retries
from medallion_cli.graph import project_graph
from medallion_cli.incremental import LayerPlan, Window, plan_layer, snapshot_app_id
from medallion_cli.locks import layer_lock
from medallion_cli.scheduler import default_threads
from medallion_cli.project import LayerConfig, Project, check_target_columns
from medallion_cli.selection import SelectionSpec, parse_selection, select_tables
from medallion_cli.sources import SOURCE_FILE_COLUMN
from medallion_cli.state import StateStore
from medallion_cli.timeparse import iso_utc
from medallion_cli.sync import sync_layer

# Materialization settings a run may override with --set, next to the DAG's inputs.
WRITE_OVERRIDES = ("target_file_size_mb",)


@dataclass(frozen=True)
class LayerResult:
    """What one layer did in a run."""

    layer: str
    table: str
    table_uri: str
    mode: str
    status: str  # written | unchanged | failed | skipped (``error`` names the failed table upstream)
    rows_in: int | None
    rows_out: int | None
    version: int | None
    operation: str | None
    duration_s: float
    metrics: dict[str, Any] = field(default_factory=dict)
    source_files: int | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    kind: str | None = None  # full | incremental | backfill | full_refresh | nothing
    window: str | None = None
    watermark_before: str | None = None
    watermark_after: str | None = None
    files_skipped: int | None = None
    quality: Any = None  # quality.QualityReport (asdict() turns it into JSON-ready data)
    attempts: int = 0  # times the DAG ran: 0 it did not run, >1 retried (the pipeline's medallion.retry)

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
    status: str  # succeeded | failed (any table failed)
    layers: tuple[LayerResult, ...]  # every selected table, in run order
    duration_s: float
    storage_retries: int = 0  # transient object-store faults retried by medallion
    # The run record's document (runrecords.document) when the run was recorded: what
    # to_dict() returns then, so that `run --json` prints what `runs show --json` prints.
    document: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        if self.document is not None:
            return dict(self.document)
        return {
            "storage_retries": self.storage_retries,
            "run_id": self.run_id,
            "project": self.project,
            "started_at": iso_utc(self.started_at),
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "medallion_version": __version__,
            "layers": [layer.to_dict() for layer in self.layers],
            "succeeded": self.tables("succeeded"),
            "failed": self.tables("failed"),
            "skipped": self.tables("skipped"),
        }

    def tables(self, outcome: str) -> list[str]:
        """The tables that ``succeeded`` (written or unchanged), ``failed`` or were ``skipped``."""
        wanted = ("written", "unchanged") if outcome == "succeeded" else (outcome,)
        return [layer.table for layer in self.layers if layer.status in wanted]


class RunFailedError(PipelineError):
    """A table failed; ``result`` holds every selected table (succeeded, failed, skipped).

    ``cause`` is the first failure in run order; its exit code is the run's. The message
    names the other tables that failed, if any (``also_failed``).
    """

    def __init__(self, cause: MedallionError, result: RunResult, also_failed: Sequence[str] = ()) -> None:
        message = cause.message + (f" (also failed: {', '.join(also_failed)})" if also_failed else "")
        super().__init__(message, cause.hint)
        self.exit_code = cause.exit_code
        self.cause = cause
        self.result = result


def new_run_id(now: datetime) -> str:
    """Sortable, readable and unique enough: ``20261128T063400Z-3f9a1c``."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def select_layers(project: Project, names: Sequence[str] | SelectionSpec, exclude: Sequence[str] = ()) -> list[LayerConfig]:
    """The pipelines whose tables the selectors name, in run order (producers first).

    ``names`` are selectors (``all``, a layer tag, a table or pipeline name, ``name+``,
    ``+name``; see :mod:`medallion_cli.selection`) or an already parsed spec; ``exclude``
    selectors are removed after.
    """
    if not isinstance(names, SelectionSpec):
        if not names:
            raise UsageError("name the layers to run",
                             hint=f"e.g. `medallion run all` or `medallion run {project.layer_names[0]}`")
        names = parse_selection(names, exclude)
    by_table = {layer.target.table: layer for layer in project.layers}
    return [by_table[table] for table in select_tables(project_graph(project), names)]


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings to a dict; values typed by YAML (``7`` int, ``[a, b]`` list).

    A key may be scoped to one pipeline or table: ``gold_daily_sales.rolling_window_days``
    (kept as written; :func:`layer_overrides` splits it).
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        scope, name = split_override_key(key)
        if not sep or not key or not name or scope == "":
            raise UsageError(f"--set {pair!r} is not KEY=VALUE or TABLE.KEY=VALUE",
                             hint="e.g. --set rolling_window_days=14 or --set gold_daily_sales.rolling_window_days=14")
        try:
            overrides[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UsageError(f"--set {key}: cannot parse value {raw!r}", hint="quote strings that contain YAML syntax") from None
    return overrides


def split_override_key(key: str) -> tuple[str | None, str]:
    """``scope.name`` to ``(scope, name)``; an unscoped key has scope None. Input names hold
    no dot, so the last dot splits (a table named by a path may hold dots)."""
    scope, dot, name = key.rpartition(".")
    return (scope, name) if dot else (None, key)


def _scoped_to(layer: LayerConfig, scope: str) -> bool:
    return scope in (layer.name, layer.target.table)


def layer_overrides(layer: LayerConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides one pipeline sees: unscoped keys, then the keys scoped to its
    pipeline or table name (which win)."""
    picked = {k: v for k, v in overrides.items() if split_override_key(k)[0] is None}
    for key, value in overrides.items():
        scope, name = split_override_key(key)
        if scope is not None and _scoped_to(layer, scope):
            picked[name] = value
    return picked


def check_overrides(layers: Sequence[LayerConfig], overrides: dict[str, Any]) -> None:
    """Every unscoped override must be an input (or write setting) of at least one selected
    pipeline; a scoped one must name a selected pipeline (or its table) that declares it."""
    known = set(WRITE_OVERRIDES)
    for layer in layers:
        known.update(layer.inputs)
    names = ", ".join(l.name for l in layers)
    for key in overrides:
        scope, name = split_override_key(key)
        if scope is None:
            if name not in known:
                raise UsageError(f"unknown --set key {name!r} for layer(s) {names}",
                                 hint=f"known keys: {', '.join(sorted(known))}")
            continue
        targets = [l for l in layers if _scoped_to(l, scope)]
        if not targets:
            raise UsageError(f"--set {key}: {scope!r} is not a selected table or pipeline",
                             hint=f"selected: {', '.join(t for l in layers for t in dict.fromkeys((l.name, l.target.table)))}")
        for layer in targets:
            declared = set(WRITE_OVERRIDES) | set(layer.inputs)
            if name not in declared:
                raise UsageError(f"unknown --set key {name!r} for {scope!r}", hint=f"its keys: {', '.join(sorted(declared))}")
    for layer in layers:  # scoped by pipeline and by table name, with two values
        given: dict[str, str] = {}
        for key, value in overrides.items():
            scope, name = split_override_key(key)
            if scope is not None and _scoped_to(layer, scope):
                if name in given and overrides[given[name]] != value:
                    raise UsageError(f"--set {given[name]} and --set {key} give {layer.name!r} two values", hint="set it once")
                given[name] = key
    for key, size in overrides.items():
        if split_override_key(key)[1] == "target_file_size_mb" and (
                not isinstance(size, int) or isinstance(size, bool) or size <= 0):
            raise UsageError(f"--set {key} must be a positive integer")
    _check_override_types(layers, overrides)


def _check_override_types(layers: Sequence[LayerConfig], overrides: dict[str, Any]) -> None:
    """Each overridden DAG input has the type its pipeline function declares (as Hamilton
    checks it), for every selected layer, before any layer runs."""
    from medallion_cli.flow import dag_inputs, input_type_ok, type_name

    for layer in layers:
        mine = layer_overrides(layer, overrides)
        keys = [k for k in mine if k in layer.inputs]
        if not keys:
            continue
        module = layer.config_path.parents[2] / "pipelines" / f"{layer.name}.py"
        try:
            declared = dag_inputs(module)
        except (Exception, SystemExit):  # noqa: BLE001 - a module that does not import fails its layer with its own error
            continue
        for key in keys:
            if key in declared and not input_type_ok(declared[key], mine[key]):
                value = mine[key]
                given = next((k for k in overrides if split_override_key(k)[1] == key
                              and _scoped_to(layer, split_override_key(k)[0] or layer.name)
                              and overrides[k] == value), key)
                raise UsageError(
                    f"--set {given}={value!r}: layer {layer.name!r} expects {type_name(declared[key])}, got {type(value).__name__}",
                    hint=f"the value is read as YAML: --set {key}=... needs type {type_name(declared[key])} (default: {layer.inputs[key]!r})",
                )


@dataclass(frozen=True)
class RunOptions:
    """How to run: overrides, executor, window, refresh, locking."""

    overrides: dict[str, Any] = field(default_factory=dict)
    executor: str | None = None
    window: Window = Window()
    full_refresh: bool = False
    wait: float | None = None  # seconds to wait for a busy layer; None fails at once
    # A Project whose tables give bronze's per-file ingestion times for a full refresh
    # (``medallion verify`` rebuilds the live lake's history into a scratch lake).
    reference: Any = None
    quality_policy: str | None = None  # fail | drop | quarantine for every gate, this run only
    threads: int | None = None  # tables run at once; None: scheduler.default_threads(); 1: one after another
    fail_fast: bool = False  # start no table after the first failure
    # engines.EngineConfig: where work units run (None: here); a name (--engine) is
    # resolved against the project's medallion.engine by run_project.
    engine: Any = None

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise UsageError(f"--threads must be at least 1, got {self.threads}", hint="--threads 1 runs the tables one after another")
        if self.window and self.full_refresh:
            raise UsageError("--full-refresh reprocesses everything: it takes no --since/--until")
        from medallion_cli.quality import POLICIES

        if self.quality_policy is not None and self.quality_policy not in POLICIES:
            raise UsageError(f"unknown quality policy {self.quality_policy!r}", hint=f"use one of: {', '.join(POLICIES)}")


def run_project(
    project: Project,
    layer_names: Sequence[str] | SelectionSpec,
    *,
    options: RunOptions = RunOptions(),
    on_layer_start: Callable[[LayerConfig], None] | None = None,
    on_layer_done: Callable[[LayerResult], None] | None = None,
    on_plan: Callable[[list[LayerConfig]], None] | None = None,
    recorder: Any = None,
) -> RunResult:
    """Run the selected tables in dependency order, independent ones at the same time.

    Each table runs under its own lock, first brings the state file in line with its
    table's Delta log, plans its window, runs its DAG and commits data and watermark in
    one Delta commit. A table starts once every selected table it reads has succeeded
    (``options.threads`` at a time; 1 runs them one after another in run order). A failed
    table writes no Delta version and skips the tables downstream of it; the others still
    run and commit, unless ``options.fail_fast``, which starts no table after the first
    failure. Raises :class:`RunFailedError` carrying the whole :class:`RunResult` (every
    selected table: succeeded, failed or skipped) when any table failed.

    The callbacks are called from the calling thread, one at a time: ``on_plan`` once with
    the selected tables in run order, then the others as tables start and finish (skipped
    tables included).

    ``recorder`` (a :class:`runrecords.Recorder`, not started) records the run in the
    state file: started once the selection is valid, each table as it finishes, ended with
    the run's status; the result's (or the error's result's) ``to_dict()`` is then the run
    document.
    """
    layers = select_layers(project, layer_names)
    check_overrides(layers, options.overrides)
    preflight_targets(project, layers)
    preflight_inputs(project, layers)
    executor = validate_executor(options.executor)
    if options.engine is None or isinstance(options.engine, str):
        from medallion_cli.engines import resolve_engine

        options = replace(options, engine=resolve_engine(options.engine, project.engine))
    for layer in layers:
        validate_executor(layer.executor)
        if layer.retry is not None:  # unknown exception names fail before any table runs
            resolve_exceptions(layer.retry, root=project.root, where=str(layer.config_path))

    from medallion_cli.tracker import load_tracker, preflight

    tracker = load_tracker(project)
    if tracker is not None:  # an unreachable server fails the run before any table starts
        preflight(tracker)

    started = datetime.now(timezone.utc)
    run_id = new_run_id(started)
    t0 = time.perf_counter()
    ctx = _Context(project, _SerializedStateStore(project.state_path), run_id, started, options, executor,
                   tracker=tracker)
    try:
        return _run_tables(ctx, layers, layer_names, t0, on_layer_start=on_layer_start, on_layer_done=on_layer_done,
                           on_plan=on_plan, recorder=recorder)
    finally:
        ctx.store.close()  # hooks and later commands find the state file free


def _run_tables(ctx: _Context, layers: list[LayerConfig], layer_names: Sequence[str] | SelectionSpec, t0: float, *,
                on_layer_start: Callable[[LayerConfig], None] | None, on_layer_done: Callable[[LayerResult], None] | None,
                on_plan: Callable[[list[LayerConfig]], None] | None, recorder: Any) -> RunResult:
    """:func:`run_project` once the selection is checked and the run's context made."""
    from medallion_cli.scheduler import FAILED, SKIPPED, Outcome, run_graph

    project, options, run_id, started = ctx.project, ctx.options, ctx.run_id, ctx.started
    by_table = {layer.target.table: layer for layer in layers}
    graph = project_graph(project)
    results: dict[str, LayerResult] = {}
    if recorder is not None:
        recorder.use_store(ctx.store)
        recorder.start(run_id, started, tables=list(by_table), options=_recorded_options(layer_names, options))

    def work(table: str) -> LayerResult:
        layer = by_table[table]
        t_layer = time.perf_counter()
        with _locked(ctx, layer):
            try:
                return _run_layer(ctx, layer, t_layer)
            finally:
                ctx.store.back()  # a table that failed while away

    def started_one(table: str) -> None:
        if on_layer_start:
            on_layer_start(by_table[table])

    def finished(outcome: Outcome) -> None:
        layer = by_table[outcome.name]
        if outcome.status == FAILED:
            result = _failed_result(project, layer, outcome.error, outcome.duration_s)
            result = replace(result, attempts=getattr(outcome.error, "attempts", ctx.attempts.get(layer.name, 0)))
        elif outcome.status == SKIPPED:
            result = _skipped_result(project, layer, outcome)
        else:
            result = outcome.value
        results[outcome.name] = result
        if recorder is not None:
            recorder.table(result)
        if on_layer_done:
            on_layer_done(result)

    if on_plan:
        on_plan(layers)
    try:
        outcomes = run_graph(
            list(by_table), {t: graph.parents(t) for t in by_table}, work,
            threads=options.threads or default_threads(), fail_fast=options.fail_fast, failure=MedallionError,
            on_start=started_one, on_done=finished,
        )
    except BaseException as exc:  # Ctrl-C or a bug: the record says so, the error goes on
        if recorder is not None:
            recorder.abandon(exc)
        raise
    failures = [o for o in outcomes if o.status == FAILED]
    status = "failed" if failures else "succeeded"
    result = RunResult(run_id, project.name, started, status, tuple(results[o.name] for o in outcomes),
                       time.perf_counter() - t0, _retries(project))
    if failures:
        # The first failure in run order, so that the exit code does not depend on timing.
        error = RunFailedError(failures[0].error, result, also_failed=[o.name for o in failures[1:]])
        if recorder is not None:
            error.result = replace(result, document=recorder.finish("failed", error=error,
                                                                    storage_retries=result.storage_retries))
        raise error from failures[0].error
    if recorder is not None:
        result = replace(result, document=recorder.finish("succeeded", storage_retries=result.storage_retries))
    return result


def _recorded_options(layer_names: Sequence[str] | SelectionSpec, options: RunOptions) -> dict[str, Any]:
    """What ``medallion retry`` needs to run tables again as this run did (JSON-ready).
    Overrides whose key names a secret are stored masked (retry refuses them)."""
    from medallion_cli.storage import is_secret

    selection = layer_names if isinstance(layer_names, SelectionSpec) else parse_selection(layer_names)
    return {
        "selectors": str(selection),
        "overrides": {k: ("***" if is_secret(split_override_key(k)[1]) else v) for k, v in options.overrides.items()},
        "executor": options.executor,
        "since": iso_utc(options.window.since) if options.window.since else None,
        "until": iso_utc(options.window.until) if options.window.until else None,
        "full_refresh": options.full_refresh,
        "quality_policy": options.quality_policy,
        "threads": options.threads,
        "fail_fast": options.fail_fast,
    }


def _retries(project: Project) -> int:
    return project.storage.retries if project.storage is not None else 0


def plan_project(project: Project, layer_names: Sequence[str] | SelectionSpec, *, options: RunOptions = RunOptions()) -> list[LayerPlan]:
    """What each selected layer would read and write now, without running anything.

    The chain is planned, not each layer against today's tables: a layer whose source is
    written by an earlier layer of this run is shown as reading what that layer adds
    (``pending``), since its exact window is only known once the upstream commit exists.
    """
    layers = select_layers(project, layer_names)
    check_overrides(layers, options.overrides)
    validate_executor(options.executor)
    store = StateStore(project.state_path)
    started = datetime.now(timezone.utc)
    plans = []
    changing: dict[str, str] = {}  # table -> the layer that writes it in this run
    for layer in layers:
        overrides = layer_overrides(layer, options.overrides)
        inputs = {k: overrides.get(k, v) for k, v in layer.inputs.items()}
        upstream = changing.get(str(layer.source.table)) if layer.source.table else None
        try:
            plan = plan_layer(project, layer, store, started=started, inputs=inputs, window=options.window,
                              full_refresh=options.full_refresh)
        except UsageError as exc:
            if "does not exist yet" not in exc.message:
                raise
            plan = LayerPlan(layer, "pending", "source table is created by an earlier layer of this run")
        if upstream is not None and plan.kind == "nothing":
            plan = LayerPlan(layer, "pending", f"what {upstream} writes to {layer.source.table} in this run",
                             write_mode=plan.write_mode, watermark_column=plan.watermark_column,
                             watermark_before=plan.watermark_before)
        if plan.runs:
            changing[layer.target.table] = layer.name
        plans.append(plan)
    return plans


def count_rows(project: Project, plan: LayerPlan) -> int | None:
    """Rows the plan's source holds (reads the source: used by --plan only)."""
    import polars as pl

    if plan.source is None:
        return 0 if plan.kind == "nothing" else None
    try:
        return int(plan.source.select(pl.len()).collect().item())
    except Exception as exc:  # a landing file polars cannot read: name it, as a run would
        _raise_landing_diagnosis(project, plan)
        raise PipelineError(f"cannot read the source of layer {plan.layer.name!r}: {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc


def _raise_landing_diagnosis(project: Project, plan: LayerPlan) -> None:
    """After a failed read of landing files, raise the error naming the first bad file."""
    from medallion_cli import sources

    layer = plan.layer
    if plan.files and layer.source.landing is not None:
        landing = sources.LandingFiles(project.resolve_path(str(layer.source.landing)), tuple(plan.files))
        diagnosis = sources.diagnose_landing(landing, layer.source, project.storage)
        if diagnosis is not None:
            raise diagnosis from None


@dataclass
class _Context:
    """What every table of one run shares (tables may run in several threads)."""

    project: Project
    store: StateStore
    run_id: str
    started: datetime
    options: RunOptions
    executor: str | None
    tracker: Any = None  # tracker.TrackerConfig: each table's DAG run is sent to the Hamilton UI
    _fp: Any = field(default=None, repr=False)
    attempts: dict[str, int] = field(default_factory=dict)  # per layer: times its DAG ran
    _fp_lock: Any = field(default_factory=threading.Lock, repr=False)

    @property
    def fp_project(self) -> Any:
        """The FlowerPower project, loaded on first use, once (two tables may ask at once).

        FlowerPower runs *different* pipelines from several threads correctly (each run
        re-imports its own module; checked with concurrent runs of two pipelines), so
        DAG execution itself is not serialized.
        """
        if self._fp is None:
            with self._fp_lock:
                if self._fp is None:
                    self._fp = load_flowerpower(self.project.root)
        return self._fp

    @fp_project.setter
    def fp_project(self, value: Any) -> None:
        self._fp = value


# DuckDB shares one database instance between the connections of a process, and two
# threads creating the schema or writing at the same time fail ("Catalog write-write
# conflict"): the tables of one run take turns on the state file.
_STATE_LOCK = threading.RLock()


class _SerializedStateStore(StateStore):
    """The state file as one run uses it: threads take turns, on one connection.

    Opening the file costs 15-20 ms and a run reads and writes it about 30 times (sync,
    plan, record, run records), while a query on an open connection costs under 1 ms: the
    connection is opened on first use and kept between uses. Another process cannot open
    the file while it is open, so it is closed while any table is away (:meth:`leave` to
    :meth:`back`: it runs its DAG and writes Delta, or waits for another run's lock), each
    use then opening and closing it, and by :meth:`close` at the end of the run: other
    commands wait for a run's metadata work, never for its data work.
    """

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self._con: Any = None
        self._away = 0  # threads away doing long work: no connection is kept open meanwhile
        self._depth = 0  # connect() blocks open (nested ones join the outer transaction)
        self._local = threading.local()  # per thread: is it away?

    @contextmanager
    def connect(self, *, write: bool = True) -> Iterator[Any]:
        with _STATE_LOCK:
            if self._depth:  # a block inside a block of this thread (the lock is ours): its transaction
                yield self._con
                return
            if self._con is None and not write and not self.path.exists():
                with super().connect(write=False) as con:  # nothing to read yet: do not create the file
                    yield con
                return
            if self._con is None:
                self._con = self._open()
            self._depth += 1
            try:
                with self._transaction(self._con):
                    yield self._con
            except BaseException:
                self._close()  # start again from a fresh connection after any failure
                raise
            finally:
                self._depth -= 1
                if self._away:
                    self._close()

    def leave(self) -> None:
        """This thread starts long work: the file is not held until it is :meth:`back`."""
        with _STATE_LOCK:
            if not getattr(self._local, "away", False):
                self._local.away = True
                self._away += 1
            self._close()

    def back(self) -> None:
        """This thread's long work is over (a no-op when it is not away)."""
        with _STATE_LOCK:
            if getattr(self._local, "away", False):
                self._local.away = False
                self._away -= 1

    @contextmanager
    def away(self) -> Iterator[None]:
        """A stretch of long work in this thread (see :meth:`leave`)."""
        was_away = getattr(self._local, "away", False)
        self.leave()
        try:
            yield
        finally:
            if not was_away:
                self.back()

    def close(self) -> None:
        with _STATE_LOCK:
            self._close()

    def _close(self) -> None:
        if self._con is not None:
            con, self._con = self._con, None
            con.close()


@contextmanager
def _locked(ctx: _Context, layer: LayerConfig) -> Iterator[None]:
    """Hold ``layer``'s lock; waiting for another run to release it (``--wait``) is done away
    from the state file, which that run may need to finish."""
    lock_dir, run_id, wait = ctx.project.lock_dir, ctx.run_id, ctx.options.wait
    with ExitStack() as stack:
        try:
            stack.enter_context(layer_lock(lock_dir, layer.name, run_id=run_id, wait=None))
        except ConflictError:
            if wait is None:
                raise
            with ctx.store.away():
                stack.enter_context(layer_lock(lock_dir, layer.name, run_id=run_id, wait=wait))
        yield


def _crash_point(layer: LayerConfig, point: str, store: _SerializedStateStore | None = None) -> None:
    """Test hooks: ``MEDALLION_TEST_CRASH_AT=layer:point`` SIGKILLs the process right here;
    ``MEDALLION_TEST_FAIL_AT=layer:point`` raises a run failure instead.

    The kill tests use it to stop a run at exact moments (before the write, after the
    commit but before the state file is updated, ...). ``MEDALLION_TEST_PAUSE_AT=
    layer:point=seconds`` sleeps there instead, holding the layer's lock (after touching
    ``MEDALLION_TEST_PAUSE_FILE``). It does nothing otherwise.
    """
    here = f"{layer.name}:{point}"
    if os.environ.get("MEDALLION_TEST_CRASH_AT") == here:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("MEDALLION_TEST_FAIL_AT") == here:  # a failure instead of a kill
        raise PipelineError(f"injected failure at {here}")
    pause, _, seconds = os.environ.get("MEDALLION_TEST_PAUSE_AT", "").partition("=")  # layer:point=seconds
    if pause == f"{layer.name}:{point}":
        with store.away() if store is not None else nullcontext():  # a pause stands for long work
            if os.environ.get("MEDALLION_TEST_PAUSE_FILE"):
                open(os.environ["MEDALLION_TEST_PAUSE_FILE"], "w").close()  # tells the test the run got here
            time.sleep(float(seconds or 5))


def _run_layer(ctx: _Context, layer: LayerConfig, t_layer: float) -> LayerResult:
    from medallion_cli import materialize

    project, store, options = ctx.project, ctx.store, ctx.options
    target = layer.target
    uri = project.table_uri(target.table)
    _crash_point(layer, "locked", store)
    if layer.incremental is not None:
        sync_layer(project, layer, store, run_id=ctx.run_id)
    overrides = layer_overrides(layer, options.overrides)
    inputs = {k: overrides.get(k, v) for k, v in layer.inputs.items()}
    plan = plan_layer(project, layer, store, started=ctx.started, inputs=inputs, window=options.window,
                      full_refresh=options.full_refresh, reference=options.reference)
    warnings = [f"ignored {name}: not parquet, CSV or JSON lines" for name in plan.ignored] + plan.warnings
    if not plan.runs:
        return _result(layer, uri, plan, "unchanged", None, 0, None, time.perf_counter() - t_layer, warnings)
    store.leave()  # the DAG, the gate and the Delta write: long work, done without holding the state file
    _crash_point(layer, "planned", store)

    storage = project.storage
    if ctx.fp_project is None:
        ctx.fp_project = load_flowerpower(project.root)
    inputs.update({layer.source.input_name: plan.source, **plan.snapshot_frames, "run_id": ctx.run_id,
                   "run_started_at": plan.started_at})
    by = getattr(layer.partition, "by", None)
    if by == "column":  # gold: partition-range units (range_units)
        from medallion_cli import range_units

        ranged = range_units.maybe_run(ctx, layer, plan, inputs, uri, warnings, t_layer)
        if ranged is not None:
            return ranged
    elif by == "key":  # key buckets (keyunits)
        from medallion_cli import keyunits, units

        try:
            result = keyunits.run(ctx, layer, plan, inputs, uri, overrides, warnings, t_layer)
        except units.UnitsNotApplicable as exc:  # nothing was written: run the batch as one unit
            warnings.append(f"{target.table} ran as one unit: {exc}")
        else:
            if result is not None:
                return result
    elif layer.partition is not None:
        from medallion_cli import units

        if units.why_one_unit(layer, plan, uri) is None:
            rank = {name: i for i, name in enumerate(plan.file_order)}
            ordered = sorted(plan.files, key=lambda f: (rank.get(f.name, len(rank)), f.name))
            split = units.plan_units(ordered, budget_mb=project.memory_budget_mb, max_files=layer.partition.max_files,
                                     row_groups=lambda f: units.parquet_row_groups(f, storage))
            if len(split) > 1:
                try:
                    return _run_units(ctx, layer, plan, inputs, split, uri, overrides, warnings, t_layer)
                except units.UnitsNotApplicable as exc:  # nothing was committed: run the batch as one unit
                    warnings.append(f"{target.table} ran as one unit: {exc}")

    def compute() -> tuple[Any, int]:  # the DAG execution: retried on the pipeline's listed exceptions
        adapters = None
        if ctx.tracker is not None:
            from medallion_cli import tracker

            adapters = {"hamilton_tracker": tracker.make_adapter(
                ctx.tracker, dag_name=layer.name,
                tags={"medallion_run_id": ctx.run_id, "table": target.table, "layer": layer.tag})}
        try:
            value = run_dag(
                ctx.fp_project,
                layer=layer.name,
                output=layer.output,
                inputs=inputs,
                executor=ctx.executor or layer.executor,
                pipelines_dir=project.root / "pipelines",
                adapters=adapters,
            )
        finally:
            if adapters:
                tracker.close(adapters["hamilton_tracker"])
        try:
            return _collect(value, plan.source, layer)
        except PipelineError:
            _raise_landing_diagnosis(project, plan)
            raise

    (df, rows_in), attempts, retried = with_retries(compute, layer.retry, root=project.root, where=str(layer.config_path),
                                                    layer=layer.name)
    ctx.attempts[layer.name] = attempts
    warnings += retried
    if plan.output_filter is not None:
        df = df.filter(plan.output_filter)
    if plan.files_changed and plan.write_mode == "replace" and SOURCE_FILE_COLUMN not in df.columns:
        # Without _source_file the earlier rows of a changed file cannot be found: add them again.
        plan.write_mode, plan.predicate = "append", None
        warnings.append(f"{layer.output} has no {SOURCE_FILE_COLUMN} column: the earlier rows of changed files stay "
                        f"in {target.table}")
    check_target_columns(layer, df.columns)
    _crash_point(layer, "computed", store)
    _check_files_unchanged(plan)

    inc = layer.incremental
    wm = plan.watermark_after
    report = None
    if layer.quality is not None:
        from medallion_cli import quality

        gate = quality.with_policy(layer.quality, options.quality_policy)
        df, rejected, report = quality.validate(df, layer, project, gate)
        if rejected is not None or plan.kind == "full_refresh":
            quality.write_quarantine(
                rejected, project.table_uri(quality.quarantine_table(layer)), storage, run_id=ctx.run_id, layer=layer.name,
                at=ctx.started, replace_all=plan.kind == "full_refresh",
                metadata=build_metadata(run_id=ctx.run_id, layer=layer.name, version=__version__, mode=plan.kind),
            )
        _crash_point(layer, "quarantined", store)
    files = _file_records(plan) if inc is not None and inc.strategy == "files" else None
    metadata = build_metadata(
        run_id=ctx.run_id,
        layer=layer.name,
        version=__version__,
        mode=plan.kind,
        watermark_column=plan.watermark_column,
        watermark=wm[0] if wm else None,
        watermark_int=wm[1] if wm else None,
        files=files,
    )
    outcome = materialize.write(
        df,
        uri,
        target,
        metadata=metadata,
        mode=plan.write_mode,
        predicate=plan.predicate,
        app_transaction=(app_id(target.table), wm[1]) if wm else None,
        more_transactions=[(snapshot_app_id(layer, name), v) for name, v in plan.snapshot_versions.items()],
        replace_schema=plan.kind == "full_refresh",
        target_file_size_mb=overrides.get("target_file_size_mb"),
        storage=storage,
    )
    _crash_point(layer, "committed", store)
    store.back()
    warnings += [f"added column {c} to {target.table} (existing rows are null)" for c in outcome.added_columns]
    warnings += [f"column {c} of {target.table} is missing from the output: written as null" for c in outcome.null_filled_columns]
    if inc is not None:
        _record_state(store, layer, uri, plan, outcome.version, ctx.run_id, storage)
    _crash_point(layer, "recorded", store)
    status = "written" if outcome.version is not None else "unchanged"
    rows_out = outcome.rows if outcome.rows is not None else df.height
    result = _result(layer, uri, plan, status, outcome, rows_in, rows_out, time.perf_counter() - t_layer, warnings)
    return replace(result, quality=report, attempts=attempts)


def _run_units(ctx: _Context, layer: LayerConfig, plan: LayerPlan, inputs: dict[str, Any], split: list[list[Any]],
               uri: str, overrides: dict[str, Any], warnings: list[str], t_layer: float) -> LayerResult:
    """Run a bronze batch as work units (``medallion.partition``) and commit them once.

    Each unit reads its own landing files (with the ingestion times the plan gave them),
    runs the DAG, is collected alone and written as a Parquet file; the files of every unit
    are committed in one Delta transaction carrying the same watermark and metadata as the
    one-unit write, so a table never shows part of a batch.
    """
    import polars as pl

    from medallion_cli import sources, units
    from medallion_cli.commits import write_app_id
    from medallion_cli.incremental import from_micros, with_ingestion_times

    project, store, storage, target = ctx.project, ctx.store, ctx.project.storage, layer.target
    columns = plan.source.collect_schema()  # every unit's source gets the whole batch's columns
    attempts = 0

    def compute(files: list[Any]) -> tuple[Any, int]:
        nonlocal attempts
        df, rows_in, tries, retried = compute_unit(project, ctx.fp_project, layer, files, columns=columns,
                                                   file_times=plan.file_times, started_at=plan.started_at,
                                                   inputs=inputs, executor=ctx.executor or layer.executor,
                                                   diagnose=lambda: _raise_landing_diagnosis(project, plan))
        attempts += tries
        warnings.extend(retried)
        return df, rows_in

    execute = None
    placed: dict[int, str] = {}  # unit -> the Ray node it ran on
    if ctx.options.engine is not None and ctx.options.engine.type == "ray":
        from medallion_cli import engines

        def execute(batch: list[list[Any]], exists: bool) -> Any:
            nonlocal attempts
            for out, tries, retried in engines.ray_units(
                    ctx.options.engine, project, layer, batch, columns=columns, file_times=plan.file_times,
                    started_at=plan.started_at, inputs=inputs, executor=ctx.executor or layer.executor, uri=uri,
                    run_id=ctx.run_id, exists=exists, placed=placed):
                attempts += tries
                warnings.extend(retried)
                yield out

    def before_commit() -> None:
        _crash_point(layer, "units_written")
        _check_files_unchanged(plan)

    try:
        actions, schema, rows_in, _rows = units.run_units(
            split, compute, uri, target, run_id=ctx.run_id, storage=storage, before_commit=before_commit,
            on_unit=lambda index: _crash_point(layer, "unit_written"), overwrite=plan.write_mode == "overwrite",
            execute=execute)
    finally:
        ctx.attempts[layer.name] = attempts
    wm = plan.watermark_after
    metadata = build_metadata(
        run_id=ctx.run_id, layer=layer.name, version=__version__, mode=plan.kind,
        watermark_column=plan.watermark_column, watermark=wm[0] if wm else None, watermark_int=wm[1] if wm else None,
        files=_file_records(plan),
    )
    transactions = [(app_id(target.table), wm[1]) if wm else (write_app_id(target.table), time.time_ns() // 1000),
                    *((snapshot_app_id(layer, name), v) for name, v in plan.snapshot_versions.items())]
    outcome = units.commit_units(actions, schema, uri, target, metadata=metadata, transactions=transactions,
                                 storage=storage, overwrite=plan.write_mode == "overwrite")
    outcome = replace(outcome, metrics={**outcome.metrics, "units": len(split),
                                        **({"ray_nodes": len(set(placed.values()))} if placed else {})})
    _crash_point(layer, "committed")
    _record_state(store, layer, uri, plan, outcome.version, ctx.run_id, storage)
    _crash_point(layer, "recorded")
    status = "written" if outcome.version is not None else "unchanged"
    result = _result(layer, uri, plan, status, outcome, rows_in, outcome.rows, time.perf_counter() - t_layer, warnings)
    return replace(result, attempts=attempts)


def compute_unit(project: Project, fp_project: Any, layer: LayerConfig, files: Sequence[Any], *, columns: Any,
                 file_times: dict[str, int], started_at: datetime, inputs: dict[str, Any], executor: str | None,
                 diagnose: Callable[[], None] = lambda: None) -> tuple[Any, int, int, list[str]]:
    """One work unit's output: its landing ``files`` read (with the ingestion times the plan
    gave them and the whole batch's ``columns``), the layer's DAG run on them and collected.
    A unit of one :class:`units.FilePart` reads only those row groups of its Parquet file.

    Returns the frame, its source row count, the DAG attempts and retry warnings. Called on
    the driver (local engine) or in a worker (``engines``): it needs only picklable values
    and a FlowerPower project loaded where it runs.
    """
    import polars as pl

    from medallion_cli import sources, units
    from medallion_cli.incremental import from_micros, with_ingestion_times

    root = project.resolve_path(str(layer.source.landing))
    parts = [f for f in files if isinstance(f, units.FilePart)]
    landing = tuple(f.file if isinstance(f, units.FilePart) else f for f in files)
    scan = sources.scan_landing(sources.LandingFiles(root, landing), layer.source, project.storage)
    source = scan.frame
    if parts:  # row groups of one Parquet file (a unit of its own): polars reads only those
        if len(files) != 1:
            raise ValueError("a unit with part of a file holds nothing else")
        source = source.slice(parts[0].offset, parts[0].rows)
    frame = with_ingestion_times(source, {f.name: from_micros(file_times[f.name]) for f in files}, started_at)
    have = frame.collect_schema()
    frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name) for name, dtype in columns.items()
                               if name not in have).select(list(columns))
    unit_inputs = {**inputs, layer.source.input_name: frame}

    def once() -> tuple[Any, int]:
        value = run_dag(fp_project, layer=layer.name, output=layer.output, inputs=unit_inputs, executor=executor,
                        pipelines_dir=project.root / "pipelines")
        try:
            return _collect(value, frame, layer)
        except PipelineError:
            diagnose()
            raise

    (df, rows_in), tries, retried = with_retries(once, layer.retry, root=project.root, where=str(layer.config_path),
                                                 layer=layer.name)
    check_target_columns(layer, df.columns)
    return df, rows_in, tries, retried


def _record_state(store: StateStore, layer: LayerConfig, uri: str, plan: LayerPlan, version: int | None, run_id: str,
                  storage: Any) -> None:
    """Index what the commit just recorded (the Delta log stays the source of truth)."""
    if version is None and storage.is_table(uri):
        version = storage.table(uri).version()
    table = layer.target.table
    with store.connect() as con:
        if plan.files and layer.incremental.strategy == "files":
            if plan.kind == "full_refresh":
                con.execute("DELETE FROM ingested_files WHERE table_name = ?", [table])
            store.record_files(con, table=table, files=_file_records(plan), delta_version=version, run_id=run_id)
        if plan.watermark_after is not None:
            store.record(
                con,
                table=table,
                column=str(plan.watermark_column),
                value=plan.watermark_after[0],
                value_int=plan.watermark_after[1],
                delta_version=version,
                run_id=run_id,
                action="full_refresh" if plan.kind == "full_refresh" else "advance",
            )
        else:
            con.execute("UPDATE watermarks SET delta_version = ? WHERE table_name = ?", [version, table])


def _check_files_unchanged(plan: LayerPlan) -> None:
    """Refuse to commit landing files that changed while they were read.

    A file still being written (a CSV copied in slowly) would otherwise be ingested half
    written. Local files only: an object-store PUT is atomic. ``medallion.source.settle``
    holds files back before they are read; this catches what it lets through.
    """
    from medallion_cli.errors import SourceError
    from medallion_cli.storage import is_remote

    for f in plan.files:
        if is_remote(f.path):
            continue
        try:
            st = os.stat(f.path)
        except OSError:
            changed = True
        else:
            changed = (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns)
        if changed:
            raise SourceError(
                f"landing file {f.name} changed while it was read (still being written?): nothing was committed",
                hint="run again once the file is complete; to hold young files back, set "
                     "medallion.source.settle.min_age (or a marker) in the layer's YAML",
            )


def _file_records(plan: LayerPlan) -> list[tuple[str, str, int]]:
    """(name, fingerprint, ingestion time in µs) of the files a bronze batch ingests."""
    return [(f.name, f.fingerprint, plan.file_times.get(f.name)) for f in plan.files]


def _result(layer, uri, plan, status, outcome, rows_in, rows_out, duration, warnings) -> LayerResult:
    return LayerResult(
        layer=layer.name,
        table=layer.target.table,
        table_uri=uri,
        mode=plan.write_mode if plan.kind != "nothing" else layer.target.mode,
        status=status,
        rows_in=rows_in,
        rows_out=rows_out,
        version=outcome.version if outcome else None,
        operation=outcome.operation if outcome else None,
        duration_s=round(duration, 3),
        metrics=outcome.metrics if outcome else {},
        source_files=len(plan.files) if layer.source.landing is not None else None,
        warnings=tuple(warnings),
        kind=plan.kind,
        window=plan.window,
        watermark_before=plan.watermark_before,
        watermark_after=plan.watermark_after[0] if plan.watermark_after else plan.watermark_before,
        files_skipped=plan.files_skipped if layer.source.landing is not None else None,
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
        # medallion.streaming (range_units.load_streaming): on by default for gold's rebuilds
        engine = "streaming" if getattr(layer, "streaming", False) else "in-memory"
        df, count = pl.collect_all([value, source.select(pl.len())], engine=engine)
    except Exception as exc:  # a polars error while evaluating the pipeline's plan
        raise PipelineError(
            f"layer {layer.name!r} failed while computing {layer.output!r}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            hint=f"check the transforms in pipelines/{layer.name}.py; run with --debug for details",
        ) from exc
    return df, int(count.item())


def _skipped_result(project: Project, layer: LayerConfig, outcome: Any) -> LayerResult:
    """A table that did not run: a table it reads failed, or ``--fail-fast`` stopped the run."""
    failed = ", ".join(outcome.blocked_by)
    why = (f"not started: {failed} failed and --fail-fast stops the run" if outcome.fail_fast
           else f"upstream {failed} failed")
    return replace(_failed_result(project, layer, None, 0.0), status="skipped", error=why)


def _failed_result(project: Project, layer: LayerConfig, exc: MedallionError | None, duration: float) -> LayerResult:
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
        error=exc.message if exc is not None else None,
    )
