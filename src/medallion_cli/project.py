"""Find a medallion project and read its configuration.

A project is a FlowerPower project (``conf/project.yml``, ``conf/pipelines/<layer>.yml``,
``pipelines/<layer>.py``) whose ``pyproject.toml`` has a ``[tool.medallion]`` table. Each
layer's YAML carries, next to FlowerPower's ``run:`` section, a ``medallion:`` section that
says where the layer reads from and how its output is materialized.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import yaml

from medallion_cli.errors import ConfigError, ProjectNotFoundError

PROJECT_CONFIG = Path("conf") / "project.yml"
PIPELINES_CONFIG_DIR = Path("conf") / "pipelines"
PIPELINES_DIR = Path("pipelines")
WRITE_MODES = ("append", "merge", "overwrite")
COLUMN_TYPES = ("string", "int32", "int64", "float32", "float64", "bool", "date", "datetime")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Top-level retry keys FlowerPower 0.37 migrates by rewriting the YAML file.
LEGACY_RUN_KEYS = ("max_retries", "retry_delay", "jitter_factor", "retry_exceptions")

# Inputs medallion itself passes to every layer's DAG (besides the source frame).
RUNTIME_INPUTS = ("run_id", "run_started_at")


EXTRA_COLUMNS = ("ignore", "rescue", "fail")

# Memory a table's work unit may use, by default (conf/project.yml: medallion.memory_budget_mb).
DEFAULT_MEMORY_BUDGET_MB = 1024


@dataclass(frozen=True)
class SettleRule:
    """When a landing file is ready to be read.

    A file modified less than ``min_age`` ago waits (it may still be being written); with
    a ``marker`` (e.g. ``_SUCCESS``) only files in folders holding that file are taken.
    """

    min_age: str = "0s"
    min_age_s: float = 0.0
    marker: str | None = None

    @property
    def active(self) -> bool:
        return self.min_age_s > 0 or self.marker is not None


@dataclass(frozen=True)
class SourceConfig:
    """Where a layer reads from: landing files (with a schema) or an upstream table.

    For landing files: ``null_values`` are the CSV cells read as null (default: the empty
    string); ``extra_columns`` says what happens to columns a file has beyond ``schema``
    (``ignore``, still reported; ``rescue`` into a ``_rescued_data`` JSON column; ``fail``);
    ``settle`` says when a file is ready.
    """

    landing: str | None = None
    table: str | None = None
    schema: dict[str, str] = field(default_factory=dict)
    null_values: tuple[str, ...] = ("",)
    extra_columns: str = "ignore"
    settle: SettleRule = SettleRule()
    name: str | None = None  # the DAG input's name, when given under medallion.inputs

    @property
    def input_name(self) -> str:
        """Name of the DAG input that receives the source frame."""
        if self.name:
            return self.name
        return "landing" if self.landing is not None else str(self.table)


ON_CHANGE = ("recompute", "ignore")


@dataclass(frozen=True)
class SnapshotInput:
    """A project table read whole, at its current version (a dimension).

    ``on_change: recompute`` (default): when the table's version differs from the one the
    consumer's last commit read, the consumer is rebuilt in full, so a changed dimension
    row reaches every row it joins. ``ignore``: new runs read the current version, rows
    already written keep what they joined with (for lookups that must not rewrite history).
    """

    name: str
    table: str
    on_change: str = "recompute"


@dataclass(frozen=True)
class TargetConfig:
    """How a layer's output frame is materialized into its Delta table."""

    table: str
    mode: str
    keys: tuple[str, ...] = ()
    # merge: columns compared in order (lexicographically) to decide which version of a key
    # is newer; the newest valid version wins, in a batch and against the stored row.
    order_by: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    target_file_size_mb: int | None = None
    properties: dict[str, str] = field(default_factory=dict)
    schema_evolution: str = "fail"  # merge: add new output columns to the table


STRATEGIES = ("files", "watermark", "partitions")


@dataclass(frozen=True)
class IncrementalConfig:
    """How a layer processes only what is new.

    * ``files``: each landing file is ingested once (a file whose size or modification
      time changed is ingested again).
    * ``watermark``: rows of the source table whose ``column`` is past the stored
      high-water mark, minus an optional ``lookback`` for late rows.
    * ``partitions``: only the values of ``column`` (e.g. dates) touched by source changes
      since the last run (read from the source's change data feed) are recomputed and
      replaced; ``window_days`` says how many days of source each output day depends on
      (an int, or the name of a run input such as ``rolling_window_days``).
    """

    strategy: str
    column: str | None = None
    lookback: str | None = None
    window_days: int | str | None = None
    # watermark: the column --since/--until select on (e.g. a business date); default `column`.
    backfill_column: str | None = None


@dataclass(frozen=True)
class PartitionConfig:
    """How a table's work may split into units (``medallion.partition``).

    ``by: files`` (bronze): each unit reads a subset of the batch's landing files, at most
    ``max_files`` of them and no more than the project's memory budget holds (estimated
    from the files' sizes); every unit's files are committed in one Delta transaction.

    ``by: key`` (a merge target): unit ``b`` of ``buckets`` reads the source rows whose
    merge keys hash to ``b`` (``"auto"``: as many as the memory budget needs; see
    :mod:`medallion_cli.keyunits`).
    """

    by: str
    max_files: int | None = None
    buckets: int | str | None = None  # by: key — a positive integer or "auto"


@dataclass(frozen=True)
class LayerConfig:
    """One layer: a FlowerPower pipeline plus medallion's source and target."""

    name: str
    config_path: Path
    source: SourceConfig
    output: str
    target: TargetConfig
    inputs: dict[str, Any]
    executor: str | None
    incremental: IncrementalConfig | None = None
    quality: Any = None  # quality.QualityConfig
    layer_tag: str | None = None  # medallion.layer: the layer it belongs to (default: its name)
    snapshots: tuple[SnapshotInput, ...] = ()  # further inputs, read whole
    retry: Any = None  # flow.NodeRetry: re-run the DAG on the listed exceptions (None: no retries)
    partition: PartitionConfig | None = None  # None: the table runs as one unit
    streaming: bool = False  # medallion.streaming: collect with polars' streaming engine (range_units.streaming)

    @property
    def input_names(self) -> tuple[str, ...]:
        return (self.source.input_name, *(s.name for s in self.snapshots))

    @property
    def tag(self) -> str:
        """The layer this pipeline's table belongs to, for selection and display."""
        return self.layer_tag or self.name


@dataclass(frozen=True)
class Project:
    """A loaded project: its root, name, lake location and layers in dependency order."""

    root: Path
    name: str
    lake_root: str
    layers: tuple[LayerConfig, ...]
    tool: dict[str, Any]
    state_path: Path = Path(".medallion/state.duckdb")
    storage: Any = None  # storage.Storage: options for object-store URIs
    memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB  # what one work unit may use (tables with medallion.partition)
    engine: Any = None  # engines.EngineConfig from medallion.engine (None: the local engine)

    @property
    def lock_dir(self) -> Path:
        return self.root / ".medallion" / "locks"

    def layer(self, name: str) -> LayerConfig:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def table_uri(self, table: str) -> str:
        """URI of a table: verbatim if it is a URI or absolute path, else under the lake root."""
        if "://" in table or table.startswith("/"):
            return table
        return join_uri(self.resolve_path(self.lake_root), table)

    @property
    def lake_uri(self) -> str:
        return self.resolve_path(self.lake_root)

    def resolve_path(self, path: str) -> str:
        """A configured path: URIs and absolute paths as they are, others under the project."""
        if "://" in path or Path(path).is_absolute():
            return path
        return str((self.root / path).resolve())


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


_IMPORTED: dict[tuple[str, int, int], Any] = {}


def import_file(path: Path) -> Any:
    """Import a project's Python file (schemas.py, a pipeline module) by path.

    The module gets a name unique to its path, so two projects in one process do not
    collide; it is executed once per version of the file (size and mtime).
    """
    import hashlib
    import importlib.util
    import sys

    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key in _IMPORTED:
        return _IMPORTED[key]
    name = f"medallion_project_{path.stem}_{hashlib.sha1(key[0].encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _IMPORTED[key] = module
    return module


def find_project_root(start: Path | None = None) -> Path:
    """Walk up from ``start`` (default: the working directory) to the project root.

    The root is the first directory holding ``conf/project.yml`` and a ``pyproject.toml``
    with a ``[tool.medallion]`` table.
    """
    start = (start or Path.cwd()).resolve()
    if not start.exists():
        raise ProjectNotFoundError(
            f"directory {start} does not exist", hint="pass an existing project directory"
        )
    for candidate in (start, *start.parents):
        if (candidate / PROJECT_CONFIG).is_file() and _has_tool_table(candidate / "pyproject.toml"):
            return candidate
    raise ProjectNotFoundError(
        f"no medallion project found at or above {start}",
        hint="cd into a project, pass --project DIR, or create one with `medallion init NAME`",
    )


def _has_tool_table(pyproject: Path) -> bool:
    if not pyproject.is_file():
        return False
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return "medallion" in data.get("tool", {})


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping, turning syntax errors into one clear line with the position."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing", hint="restore it, or re-create the project with `medallion init`") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: invalid YAML{where}: {exc.problem}",
            hint="fix the YAML syntax (indentation, quotes, colons) and run again",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}", hint="fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_project(root: Path, *, storage_overrides: Iterable[str] = ()) -> Project:
    """Read and validate a project's configuration (cheap: no heavy imports).

    ``storage_overrides`` are ``KEY=VALUE`` storage options from the command line.
    """
    overrides = list(storage_overrides)
    root = root.resolve()
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    tool = pyproject.get("tool", {}).get("medallion", {})
    project_path = root / PROJECT_CONFIG
    data = read_yaml(project_path)
    name = data.get("name") or root.name
    section = _mapping(data.get("medallion", {}), project_path, "medallion")
    lake_root = section.get("lake_root", "lake")
    if not isinstance(lake_root, str) or not lake_root:
        raise ConfigError(f"{project_path}: medallion.lake_root must be a path or URI")
    layer_names = _pipeline_names(root, section.get("layers"), project_path)
    layers = tuple(_load_layer(root, layer) for layer in layer_names)
    _check_one_writer_per_table(layers)
    from medallion_cli.graph import build_graph

    # Run order comes from what each table reads, not from how the layers are listed.
    order = build_graph(layers, where=str(project_path)).tables
    layers = tuple(sorted(layers, key=lambda layer: order.index(layer.target.table)))
    state = section.get("state") or tool.get("state") or ".medallion/state.duckdb"
    if not isinstance(state, str) or "://" in state:
        raise ConfigError(f"{project_path}: medallion.state must be a local file path", hint="e.g. .medallion/state.duckdb")
    state_path = Path(state) if Path(state).is_absolute() else root / state
    from medallion_cli.storage import RetryPolicy, Storage

    storage = Storage.resolve(
        _mapping(section.get("storage_options"), project_path, "medallion.storage_options"),
        overrides, where=str(project_path),
        retry=RetryPolicy.from_config(section.get("retry"), where=str(project_path)),
    )
    budget = section.get("memory_budget_mb", DEFAULT_MEMORY_BUDGET_MB)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 64:
        raise ConfigError(f"{project_path}: medallion.memory_budget_mb must be an integer of at least 64, got {budget!r}",
                          hint=f"e.g. `memory_budget_mb: {DEFAULT_MEMORY_BUDGET_MB}`")
    from medallion_cli.engines import parse_engine

    engine = parse_engine(section.get("engine"), where=str(project_path))
    return Project(root=root, name=str(name), lake_root=lake_root, layers=layers, tool=tool, state_path=state_path,
                   storage=storage, memory_budget_mb=budget, engine=engine)


def _pipeline_names(root: Path, listed: Any, project_path: Path) -> list[str]:
    """The project's pipelines: every ``conf/pipelines/NAME.yml`` with a ``medallion:`` section.

    ``medallion.layers`` is optional; when kept (projects made before tables had inputs), the
    pipelines it names come first, in its order, which only matters for display: the run
    order always comes from the inputs. A listed pipeline must exist.
    """
    if listed is not None and (not isinstance(listed, list) or not all(isinstance(n, str) for n in listed)):
        raise ConfigError(f"{project_path}: medallion.layers must be a list of pipeline names",
                          hint="e.g. `layers: [bronze, silver, gold]`, or remove it: pipelines are found in conf/pipelines/")
    listed = list(listed or [])
    twice = sorted({n for n in listed if listed.count(n) > 1})
    if twice:
        raise ConfigError(f"{project_path}: layer {twice[0]!r} is listed more than once in medallion.layers",
                          hint="list each pipeline once")
    found = []
    folder = root / PIPELINES_CONFIG_DIR
    for path in sorted(folder.glob("*.yml")) if folder.is_dir() else ():
        if path.stem not in listed and "medallion" in read_yaml(path):
            found.append(path.stem)
    names = listed + found
    if not names:
        raise ConfigError(f"{folder}: no pipeline has a `medallion:` section",
                          hint="add conf/pipelines/NAME.yml and pipelines/NAME.py (see `medallion init`)")
    return names


def _mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: `{key}` must be a mapping, got {type(value).__name__}")
    return value


def _load_layer(root: Path, name: str) -> LayerConfig:
    if not _IDENTIFIER.match(name):
        raise ConfigError(f"{root / PROJECT_CONFIG}: layer name {name!r} is not a valid identifier")
    path = root / PIPELINES_CONFIG_DIR / f"{name}.yml"
    if not path.is_file():
        raise ConfigError(
            f"layer {name!r} has no configuration: {path} is missing",
            hint=f"create {PIPELINES_CONFIG_DIR / (name + '.yml')} or remove {name!r} from medallion.layers",
        )
    if not (root / PIPELINES_DIR / f"{name}.py").is_file():
        raise ConfigError(
            f"layer {name!r} has no pipeline module: {root / PIPELINES_DIR / (name + '.py')} is missing",
            hint=f"restore the module, or delete {PIPELINES_CONFIG_DIR / (name + '.yml')} if the table is gone",
        )
    data = read_yaml(path)
    run = _mapping(data.get("run"), path, "run")
    legacy = [k for k in LEGACY_RUN_KEYS if k in run]
    if legacy:
        # FlowerPower "migrates" these by rewriting the whole file, dropping every key it
        # does not know, medallion's section and all comments included.
        raise ConfigError(
            f"{path}: run.{legacy[0]} is a legacy FlowerPower setting that makes FlowerPower rewrite this file",
            hint=f"move {', '.join(legacy)} under run.retry (e.g. `retry: {{max_retries: 0}}`)",
        )
    med = _mapping(data.get("medallion"), path, "medallion")
    if not med:
        raise ConfigError(f"{path}: the `medallion:` section is missing", hint="see the project README for its keys")

    source, incremental_section, snapshots = _load_inputs(med, path)
    output = med.get("output")
    if not isinstance(output, str) or not _IDENTIFIER.match(output):
        raise ConfigError(f"{path}: medallion.output must name the DAG node whose frame is written")
    target = _load_target(_mapping(med.get("target"), path, "medallion.target"), path)
    evolution = med.get("schema_evolution", "fail")
    if evolution not in ("merge", "fail"):
        raise ConfigError(f"{path}: medallion.schema_evolution must be `merge` or `fail`, got {evolution!r}")
    target = replace(target, schema_evolution=evolution)

    inputs = _mapping(run.get("inputs"), path, "run.inputs")
    clash = sorted(set(inputs) & {*RUNTIME_INPUTS, source.input_name, *(x.name for x in snapshots)})
    if clash:
        raise ConfigError(f"{path}: run.inputs may not set {', '.join(clash)}: medallion provides them")
    executor = _mapping(run.get("executor"), path, "run.executor").get("type")
    incremental = _load_incremental(incremental_section, path, source, target, inputs)
    from medallion_cli.quality import load_config as load_quality

    quality = load_quality(med.get("quality"), path)
    from medallion_cli.flow import load_node_retry

    retry = load_node_retry(med.get("retry"), path)
    from medallion_cli import range_units  # gold: streaming and partition-range units

    streaming = range_units.load_streaming(med.get("streaming"), path, source, target)
    if range_units.is_column_partition(med.get("partition")):
        partition = range_units.load_partition(med["partition"], path, target, incremental)
    else:
        partition = _load_partition(med.get("partition"), path, source, target)
    return LayerConfig(
        name=name,
        config_path=path,
        source=source,
        output=output,
        target=target,
        inputs=dict(inputs),
        executor=executor,
        incremental=incremental,
        quality=quality,
        layer_tag=_layer_tag(med.get("layer"), path),
        snapshots=snapshots,
        retry=retry,
        partition=partition,
        streaming=streaming,
    )


def _load_partition(value: Any, path: Path, source: SourceConfig, target: TargetConfig) -> PartitionConfig | None:
    """``medallion.partition``: how the table's work may split into units (None: one unit)."""
    if value is None:
        return None
    spec = _mapping(value, path, "medallion.partition")
    if spec.get("by") == "key":
        from medallion_cli.keyunits import load_key_partition

        return load_key_partition(spec, path, target)
    unknown = sorted(set(spec) - {"by", "max_files"})
    if unknown:
        raise ConfigError(f"{path}: unknown medallion.partition key {unknown[0]!r}", hint="keys: by, max_files")
    by = spec.get("by")
    if by != "files":
        raise ConfigError(f"{path}: medallion.partition.by must be `files`, `key` or `column`, got {by!r}",
                          hint="`partition: {by: files, max_files: 4}` splits a bronze batch by landing files; "
                               "`partition: {by: key}` a merge table's batch by key; "
                               "`partition: {by: column, column: event_date}` a partitions table's rebuild by date ranges")
    if source.landing is None or target.mode != "append":
        raise ConfigError(f"{path}: medallion.partition {{by: files}} needs a landing source and target mode append",
                          hint="remove medallion.partition: the table then runs as one unit")
    max_files = spec.get("max_files")
    if max_files is not None and (not isinstance(max_files, int) or isinstance(max_files, bool) or max_files < 1):
        raise ConfigError(f"{path}: medallion.partition.max_files must be a positive integer, got {max_files!r}")
    return PartitionConfig(by="files", max_files=max_files)


def _load_inputs(med: dict[str, Any], path: Path) -> tuple[SourceConfig, Any, tuple[SnapshotInput, ...]]:
    """``medallion.inputs`` (name: source), or the one-input shorthand ``source:`` + ``incremental:``.

    Exactly one input is read incrementally (landing files, or a table with its own
    ``incremental:`` or none); the others are tables with ``read: snapshot``.
    """
    if "inputs" not in med:
        return _load_source(_mapping(med.get("source"), path, "medallion.source"), path), med.get("incremental"), ()
    if "source" in med or "incremental" in med:
        raise ConfigError(f"{path}: use either medallion.inputs or medallion.source (+ incremental), not both")
    entries = _mapping(med.get("inputs"), path, "medallion.inputs")
    if not entries:
        raise ConfigError(f"{path}: medallion.inputs is empty", hint="name at least one input")
    primary: list[tuple[str, dict[str, Any]]] = []
    snapshots: list[SnapshotInput] = []
    for name, spec in entries.items():
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise ConfigError(f"{path}: input name {name!r} is not a valid identifier (it is a DAG input)")
        spec = _mapping(spec, path, f"medallion.inputs.{name}")
        read = spec.get("read", "incremental")
        if read == "snapshot":
            unknown = sorted(set(spec) - {"table", "read", "on_change"})
            if unknown:
                raise ConfigError(f"{path}: medallion.inputs.{name}: unknown key {unknown[0]!r} for a snapshot input",
                                  hint="keys: table, read, on_change")
            table, on_change = spec.get("table"), spec.get("on_change", "recompute")
            if not isinstance(table, str) or not table:
                raise ConfigError(f"{path}: medallion.inputs.{name}: a snapshot input needs `table:`")
            if on_change not in ON_CHANGE:
                raise ConfigError(f"{path}: medallion.inputs.{name}.on_change must be one of {', '.join(ON_CHANGE)}")
            snapshots.append(SnapshotInput(name, table, on_change))
        elif read == "incremental":
            primary.append((name, spec))
        else:
            raise ConfigError(f"{path}: medallion.inputs.{name}.read must be `incremental` (default) or `snapshot`")
    if len(primary) != 1:
        raise ConfigError(
            f"{path}: medallion.inputs needs exactly one input that is not `read: snapshot`, found {len(primary)}"
            + (f" ({', '.join(n for n, _ in primary)})" if primary else ""),
            hint="mark dimensions read whole with `read: snapshot`",
        )
    name, spec = primary[0]
    if snapshots and "landing" in spec:
        raise ConfigError(f"{path}: snapshot inputs need the incremental input to be a table, not landing files",
                          hint="join dimensions in silver or gold, after the landing files are in bronze")
    incremental = spec.get("incremental")
    source = replace(_load_source({k: v for k, v in spec.items() if k not in ("incremental", "read")}, path), name=name)
    return source, incremental, tuple(snapshots)


def _layer_tag(value: Any, path: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigError(f"{path}: medallion.layer must be a layer name such as silver, got {value!r}")
    return value


def _load_incremental(
    value: Any, path: Path, source: SourceConfig, target: TargetConfig, inputs: dict[str, Any]
) -> IncrementalConfig | None:
    if value is None:
        return None
    med = _mapping(value, path, "medallion.incremental")
    strategy = med.get("strategy")
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"{path}: medallion.incremental.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
    column = med.get("column")
    if strategy == "files":
        if source.landing is None:
            raise ConfigError(f"{path}: incremental strategy `files` needs a landing source")
    else:
        if source.table is None:
            raise ConfigError(f"{path}: incremental strategy `{strategy}` needs a table source")
        if not isinstance(column, str) or not _IDENTIFIER.match(column):
            raise ConfigError(f"{path}: incremental strategy `{strategy}` needs `column:` (a column of the source)")
    lookback = med.get("lookback")
    if lookback is not None:
        from medallion_cli.timeparse import parse_duration

        parse_duration(str(lookback), what=f"{path}: medallion.incremental.lookback")
        lookback = str(lookback)
    window = med.get("window_days")
    if strategy == "partitions":
        if target.mode != "overwrite":
            raise ConfigError(f"{path}: incremental strategy `partitions` needs target mode `overwrite`")
        if window is None:
            window = 1
        if isinstance(window, str) and window not in inputs:
            raise ConfigError(f"{path}: window_days {window!r} is neither an integer nor a run input")
        if not isinstance(window, str) and (not isinstance(window, int) or window < 1):
            raise ConfigError(f"{path}: window_days must be a positive integer or the name of a run input")
    backfill = med.get("backfill_column")
    if backfill is not None:
        if strategy != "watermark":
            raise ConfigError(f"{path}: backfill_column applies to the `watermark` strategy only")
        if not isinstance(backfill, str) or not _IDENTIFIER.match(backfill):
            raise ConfigError(f"{path}: backfill_column must name a column of the source")
    return IncrementalConfig(strategy=strategy, column=column, lookback=lookback, window_days=window,
                             backfill_column=backfill)


def _load_source(med: dict[str, Any], path: Path) -> SourceConfig:
    landing, table = med.get("landing"), med.get("table")
    if (landing is None) == (table is None):
        raise ConfigError(
            f"{path}: medallion.source needs exactly one of `landing: PATH` or `table: NAME`"
        )
    schema = med.get("schema") or {}
    if landing is not None:
        if not isinstance(schema, dict) or not schema:
            raise ConfigError(f"{path}: a landing source needs `schema:` (column: type)")
        bad = {c: t for c, t in schema.items() if t not in COLUMN_TYPES}
        if bad:
            col, typ = next(iter(bad.items()))
            raise ConfigError(
                f"{path}: column {col!r} has unknown type {typ!r}",
                hint=f"use one of: {', '.join(COLUMN_TYPES)}",
            )
    elif not isinstance(table, str) or not table:
        raise ConfigError(f"{path}: medallion.source.table must be a table name or URI")
    landing_only = [k for k in ("null_values", "extra_columns", "settle") if k in med]
    if landing is None:
        if landing_only:
            raise ConfigError(f"{path}: medallion.source.{landing_only[0]} applies to landing sources only")
        return SourceConfig(table=table, schema=dict(schema))
    nulls = med.get("null_values", [""])
    if isinstance(nulls, str):
        nulls = [nulls]
    if not isinstance(nulls, list) or not all(isinstance(v, str) for v in nulls):
        raise ConfigError(f"{path}: medallion.source.null_values must be a list of strings", hint='e.g. ["NA", ""]')
    extra = med.get("extra_columns", "ignore")
    if extra not in EXTRA_COLUMNS:
        raise ConfigError(f"{path}: medallion.source.extra_columns must be one of {', '.join(EXTRA_COLUMNS)}, got {extra!r}")
    return SourceConfig(landing=landing, schema=dict(schema), null_values=tuple(nulls), extra_columns=extra,
                        settle=_load_settle(med.get("settle"), path))


def _load_settle(value: Any, path: Path) -> SettleRule:
    where = "medallion.source.settle"
    med = _mapping(value, path, where)
    unknown = sorted(set(med) - {"min_age", "marker"})
    if unknown:
        raise ConfigError(f"{path}: unknown {where} key {unknown[0]!r}", hint="keys: min_age, marker")
    min_age = med.get("min_age") or "0s"
    if isinstance(min_age, bool) or not isinstance(min_age, (str, int, float)):
        raise ConfigError(f"{path}: {where}.min_age must be a duration", hint='e.g. "30s" or "2 minutes"')
    if isinstance(min_age, (int, float)):
        min_age = f"{min_age}s"
    from medallion_cli.timeparse import parse_duration

    seconds = parse_duration(str(min_age), what=f"{path}: {where}.min_age").total_seconds()
    marker = med.get("marker")
    if marker is not None and (not isinstance(marker, str) or not marker or "/" in marker or marker in (".", "..")):
        raise ConfigError(f"{path}: {where}.marker must be a file name", hint="e.g. _SUCCESS")
    return SettleRule(min_age=str(min_age), min_age_s=seconds, marker=marker)


def _load_target(med: dict[str, Any], path: Path) -> TargetConfig:
    table = med.get("table")
    if not isinstance(table, str) or not table:
        raise ConfigError(f"{path}: medallion.target.table must name the Delta table to write")
    mode = med.get("mode", "append")
    if mode not in WRITE_MODES:
        raise ConfigError(
            f"{path}: unknown write mode {mode!r}", hint=f"use one of: {', '.join(WRITE_MODES)}"
        )
    keys = _columns(med.get("keys"), path, "keys")
    if mode == "merge" and not keys:
        raise ConfigError(f"{path}: mode `merge` needs `keys:` (the columns that identify a row)")
    order_by = _columns(med.get("order_by"), path, "order_by")
    partition_by = _columns(med.get("partition_by"), path, "partition_by")
    properties = _mapping(med.get("properties"), path, "medallion.target.properties")
    size = med.get("target_file_size_mb")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ConfigError(f"{path}: target_file_size_mb must be a positive integer")
    return TargetConfig(
        table=table,
        mode=mode,
        keys=keys,
        order_by=order_by,
        partition_by=partition_by,
        target_file_size_mb=size,
        properties={str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in properties.items()},
    )


def _columns(value: Any, path: Path, key: str) -> tuple[str, ...]:
    """``keys``/``partition_by``/``order_by``: a list of column names; a single string is one column."""
    if value is None or value == []:
        return ()
    cols = [value] if isinstance(value, str) else value
    if not isinstance(cols, list):
        raise ConfigError(f"{path}: medallion.target.{key} must be a column name or a list of them, got {value!r}")
    for col in cols:
        if not isinstance(col, str) or not _IDENTIFIER.match(col):
            raise ConfigError(f"{path}: medallion.target.{key}: {col!r} is not a valid column name",
                              hint=f"e.g. `{key}: [event_id]`; several columns are a YAML list, not a comma-separated string")
    if len(set(cols)) != len(cols):
        raise ConfigError(f"{path}: medallion.target.{key} names a column twice: {cols}")
    return tuple(cols)


def target_columns(target: TargetConfig) -> dict[str, tuple[str, ...]]:
    """The output columns a target's settings name, by setting."""
    named = {"keys": target.keys, "partition_by": target.partition_by, "order_by": target.order_by}
    return {k: v for k, v in named.items() if v}


def missing_target_columns(layer: LayerConfig, columns: Iterable[str]) -> str | None:
    """Why ``columns`` (a layer's output, or its table) cannot be written as configured, or None."""
    have = set(columns)
    for key, cols in target_columns(layer.target).items():
        missing = [c for c in cols if c not in have]
        if missing:
            return (f"medallion.target.{key} of layer {layer.name!r} names column {missing[0]!r}, "
                    f"which the output {layer.output!r} does not have")
    return None


def check_target_columns(layer: LayerConfig, columns: Iterable[str]) -> None:
    """Refuse, before writing, an output that lacks a column its target's settings name."""
    columns = list(columns)
    problem = missing_target_columns(layer, columns)
    if problem:
        raise ConfigError(f"{layer.config_path}: {problem}",
                          hint=f"output columns: {', '.join(columns)}; fix the YAML or the pipeline")


def _check_one_writer_per_table(layers: tuple[LayerConfig, ...]) -> None:
    writer: dict[str, str] = {}
    for layer in layers:
        other = writer.setdefault(layer.target.table, layer.name)
        if other != layer.name:
            raise ConfigError(
                f"layers {other!r} and {layer.name!r} both write table {layer.target.table!r}",
                hint="give each layer its own medallion.target.table",
            )
