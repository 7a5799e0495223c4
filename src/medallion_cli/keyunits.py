"""Key-bucket work units: a merge table's batch in pieces that fit the memory budget.

A table whose target merges on ``keys`` may declare ``medallion.partition: {by: key,
buckets: N}`` (or ``buckets: auto``, the default). Unit ``b`` of ``N`` runs the pipeline's DAG
on the plan's lazy source filtered to the rows whose merge keys hash to ``b``
(:func:`bucket_expr`: a seeded hash of the key columns as a struct, so a null key lands in a
bucket too); the filter is lazy, so the scan streams and only the bucket is collected (with
polars' streaming engine). Every row of a unit's output must hash to the unit's bucket by
the *output* keys: then a key never spans two units, and the quality gate, the quarantine
and ``latest_per_key`` of each unit give exactly the one-unit result. A pipeline that
changes its keys so that a row would leave its bucket is detected and the batch runs as one
unit (:class:`~medallion_cli.units.UnitsNotApplicable`).

Writing, with one Delta version per run either way:

* a new or empty table, or a full refresh: each unit writes its de-duplicated rows as a
  Parquet file under the table root, and the driver commits every file in one transaction
  (:func:`medallion_cli.units.commit_units`), as bronze units do;
* an existing table: each unit stages its de-duplicated rows as Parquet in
  ``.medallion/staging/<table>/<run_id>/`` (local disk, also for an object-store lake), and
  the driver runs ONE MERGE whose source streams the staged files
  (:func:`medallion_cli.materialize.merge_stream`). The staging folder is removed after the
  run, also when it fails; one left by a killed run is removed by the table's next run.

Invalid rows of every unit are gathered and written to the quarantine table once, after
all units and just before the commit, exactly as the one-unit run writes them.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medallion_cli.errors import ConfigError, QualityError
from medallion_cli.storage import is_remote

if TYPE_CHECKING:
    import polars as pl

    from medallion_cli.project import LayerConfig, PartitionConfig, Project, TargetConfig

MB = 1024 * 1024
SEED = 0x6D656461  # any fixed seed: buckets need only agree within one run
MAX_BUCKETS = 4096
# Bytes a source row takes in memory when its size is unknown (no Delta stats, no files).
DEFAULT_ROW_BYTES = 200
# A unit's working set per source row byte: the streamed scan's buffers, the DAG's output,
# the quality gate's indexed copy, the de-duplication and the Parquet being encoded
# (measured: 4 buckets of 625k bronze rows of ~100 B each peaked ~325 MiB above the
# process's fixed size, about 5x).
WORKING_SET = 5.0


def load_key_partition(spec: dict[str, Any], path: Path, target: TargetConfig) -> PartitionConfig:
    """``medallion.partition: {by: key, buckets: N | auto}`` checked against the target."""
    from medallion_cli.project import PartitionConfig

    unknown = sorted(set(spec) - {"by", "buckets"})
    if unknown:
        raise ConfigError(f"{path}: unknown medallion.partition key {unknown[0]!r} for `by: key`",
                          hint="keys: by, buckets (e.g. `partition: {by: key, buckets: 8}` or `buckets: auto`)")
    if target.mode != "merge" or not target.keys:
        raise ConfigError(f"{path}: medallion.partition {{by: key}} needs a target with mode merge and keys",
                          hint="buckets hash the merge keys; remove medallion.partition to run the table as one unit")
    buckets = spec.get("buckets", "auto")
    if buckets != "auto" and (not isinstance(buckets, int) or isinstance(buckets, bool)
                              or not 1 <= buckets <= MAX_BUCKETS):
        raise ConfigError(f"{path}: medallion.partition.buckets must be `auto` or an integer from 1 to {MAX_BUCKETS}, "
                          f"got {buckets!r}", hint="e.g. `partition: {by: key, buckets: 8}`")
    return PartitionConfig(by="key", buckets=buckets)


def bucket_expr(keys: tuple[str, ...] | list[str], buckets: int) -> pl.Expr:
    """The bucket (0..buckets-1) of each row's merge key: a seeded hash of the key columns
    as one struct, so that composite keys and null keys are hashed as a whole."""
    import polars as pl

    return pl.struct(list(keys)).hash(seed=SEED) % buckets


def rows_per_bucket_budget(row_bytes: float, budget_mb: int) -> int:
    """Source rows one bucket may hold: its working set (rows times ``row_bytes`` times
    :data:`WORKING_SET`) within the budget."""
    return max(1, int(budget_mb * MB / (max(row_bytes, 1.0) * WORKING_SET)))


def auto_buckets(rows: int, row_bytes: float, budget_mb: int) -> int:
    """Enough buckets that one bucket's estimated working set fits ``budget_mb``:
    ``ceil(rows * row_bytes * WORKING_SET / budget)``, at least 1 (hashing spreads keys
    evenly, so a bucket holds about ``rows / buckets`` rows)."""
    return max(1, min(MAX_BUCKETS, math.ceil(rows / rows_per_bucket_budget(row_bytes, budget_mb))))


def source_row_bytes(project: Project, layer: LayerConfig, plan: Any) -> float:
    """Memory one source row takes once read, estimated without reading rows.

    A table source: its Delta files' bytes per row (from the log's ``size`` and
    ``numRecords``) times the Parquet expansion (:data:`medallion_cli.units.EXPANSION`).
    Landing files: their estimated in-memory size over the batch's rows is not known before
    reading, so each file's estimate (size times format expansion) is spread over an
    assumed :data:`DEFAULT_ROW_BYTES` per row. Without either: :data:`DEFAULT_ROW_BYTES`.
    """
    import polars as pl

    from medallion_cli.units import EXPANSION

    if layer.source.table is not None:
        storage = project.storage
        uri = project.table_uri(str(layer.source.table))
        try:
            adds = pl.DataFrame(storage.table(uri).get_add_actions(flatten=True)).select("size_bytes", "num_records")
            size, rows = adds["size_bytes"].sum(), adds["num_records"].sum()
        except Exception:  # noqa: BLE001 - no stats: the default estimate
            return float(DEFAULT_ROW_BYTES)
        if rows:
            return size / rows * EXPANSION["parquet"]
    return float(DEFAULT_ROW_BYTES)


def why_one_unit(layer: LayerConfig, plan: Any) -> str | None:
    """Why this run of a ``by: key`` table runs as one unit (None: it splits)."""
    if plan.write_mode not in ("merge", "overwrite") or (plan.write_mode == "overwrite" and plan.kind != "full_refresh"):
        return f"write mode {plan.write_mode}"
    if plan.output_filter is not None:
        return "an output filter"
    return None


def check_source_keys(layer: LayerConfig, columns: Any) -> None:
    """The source must have the merge key columns: buckets hash them before the DAG runs."""
    missing = [k for k in layer.target.keys if k not in columns]
    if missing:
        raise ConfigError(
            f"{layer.config_path}: medallion.partition {{by: key}} hashes the merge key {missing[0]!r} in the source, "
            f"but {layer.source.table or layer.source.input_name} has no such column",
            hint="give the source the key column, or remove medallion.partition (the table then runs as one unit)",
        )


def check_bucket(df: pl.DataFrame, keys: tuple[str, ...], buckets: int, bucket: int) -> None:
    """Refuse to split when a unit's output holds a key of another bucket (the pipeline
    changed the key): that key could then appear in two units."""
    from medallion_cli.units import UnitsNotApplicable

    if df.height and df.select((bucket_expr(keys, buckets) != bucket).any()).item():
        raise UnitsNotApplicable(f"the pipeline changes the merge key {', '.join(keys)} (a row left its key bucket)")


# -- staging: the units' rows for one streamed MERGE -------------------------------------------
class Staging:
    """A run's staged unit files: ``<root>/<run_id>/unit-<b>-<uuid>.parquet`` on local disk.

    ``root`` is per table (``.medallion/staging/<table>``): the table's lock is held while
    a run uses it, so :meth:`clean_stale` may remove whatever an earlier, killed run left.
    """

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = Path(root)
        self.dir = self.root / run_id
        self.files: list[Path] = []

    def clean_stale(self) -> list[str]:
        """Remove staging folders of earlier runs of this table (killed runs); their names."""
        removed = []
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child != self.dir:
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child.name)
        return removed

    def write(self, df: pl.DataFrame, bucket: int) -> None:
        path = stage_file(df, self.dir, bucket)
        if path is not None:
            self.files.append(Path(path))

    def reader(self) -> Any:
        """A fresh Arrow stream over every staged file (one per MERGE attempt)."""
        import pyarrow.dataset as ds

        return ds.dataset([str(p) for p in self.files], format="parquet").scanner(batch_size=64 * 1024).to_reader()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.root.rmdir()  # only when empty
        except OSError:
            pass


class RemoteStaging:
    """A run's staged unit files in the lake's object store, ``<lake>/_medallion_staging/
    <table>/<run_id>/``: with the Ray engine and an ``s3://`` lake, key units running on other
    machines stage where the driver can read them (the local engine stages on local disk,
    :class:`Staging`). Same interface and the same clean-up rules."""

    def __init__(self, root: str, run_id: str, storage: Any) -> None:
        self.root = root.rstrip("/")
        self.dir = f"{self.root}/{run_id}"
        self.files: list[str] = []
        self._storage = storage
        self._fs = storage.fs(self.root)

    def clean_stale(self) -> list[str]:
        """Remove staging folders of earlier runs of this table (killed runs); their names."""
        removed = []
        try:
            children = self._fs.ls(self.root, detail=False, refresh=True)
        except FileNotFoundError:
            return removed
        for child in children:
            name = child.rstrip("/").rsplit("/", 1)[-1]
            if name != self.dir.rsplit("/", 1)[-1]:
                self._rm(child)
                removed.append(name)
        return removed

    def reader(self) -> Any:
        """A fresh Arrow stream over every staged object (one per MERGE attempt)."""
        import pyarrow.dataset as ds
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        paths = [f.split("://", 1)[1] for f in self.files]
        return ds.dataset(paths, format="parquet", filesystem=PyFileSystem(FSSpecHandler(self._fs))).scanner(
            batch_size=64 * 1024).to_reader()

    def remove(self) -> None:
        self._rm(self.dir)

    def _rm(self, path: str) -> None:
        try:
            self._fs.rm(path, recursive=True)
        except Exception:  # noqa: BLE001 - best effort: the table's next run removes what is left
            pass


def remote_staging_root(project: Project, table: str) -> str:
    from medallion_cli.project import join_uri

    return join_uri(project.lake_uri, f"_medallion_staging/{table.replace('/', '_')}")


def stage_file(df: pl.DataFrame, folder: Path | str, bucket: int, storage: Any = None) -> str | None:
    """Write a unit's rows as ``<folder>/unit-<b>-<uuid>.parquet`` (None: no rows). Each
    attempt writes its own file: the driver merges only the files of the results it got.
    An object-store ``folder`` (:class:`RemoteStaging`) is written in one PUT through ``storage``."""
    if df.height == 0:
        return None
    name = f"unit-{bucket:05d}-{uuid.uuid4().hex}.parquet"
    if is_remote(str(folder)):
        import io

        buffer = io.BytesIO()
        df.write_parquet(buffer, compression="lz4", statistics=False)
        data, target = buffer.getvalue(), f"{str(folder).rstrip('/')}/{name}"
        fs = storage.fs(target)
        storage.call(lambda: fs.pipe_file(target, data), what=f"staging {name}", uri=target)
        return target
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(".tmp")
    df.write_parquet(tmp, compression="lz4", statistics=False)
    os.replace(tmp, path)
    return str(path)


def staging_root(project: Project, table: str) -> Path:
    return Path(project.state_path).parent / "staging" / table.replace("/", "_")


# -- quality reports of several units -----------------------------------------------------------
def combine_reports(reports: list[Any], quarantine: str | None) -> Any:
    """One :class:`~medallion_cli.quality.QualityReport` for the units' reports (counts
    summed, checks merged in first-seen order with up to 3 samples)."""
    from medallion_cli.quality import CheckCount, QualityReport

    checks: dict[tuple, CheckCount] = {}
    for report in reports:
        for c in report.checks:
            key = (c.schema, c.column, c.check)
            if key in checks:
                old = checks[key]
                samples = list(dict.fromkeys([*old.samples, *c.samples]))[:3]
                checks[key] = CheckCount(c.schema, c.column, c.check, old.rows + c.rows, samples)
            else:
                checks[key] = c
    total = {f: sum(getattr(r, f) for r in reports) for f in
             ("rows_checked", "rows_valid", "rows_invalid", "rows_dropped", "rows_quarantined")}
    return QualityReport(**total, checks=list(checks.values()),
                         quarantine_table=quarantine if total["rows_quarantined"] else None)


def check_fraction(layer: LayerConfig, report: Any, fraction: float | None) -> None:
    """``max_invalid_fraction`` over the whole batch (each unit is checked without it)."""
    if fraction is None or report.rows_invalid <= fraction * report.rows_checked:
        return
    detail = ", ".join(f"{c.column} {c.check} ({c.rows:,})" for c in report.checks[:4]) + (
        " ..." if len(report.checks) > 4 else "")
    raise QualityError(
        f"layer {layer.name!r}: {report.rows_invalid:,} of {report.rows_checked:,} rows invalid "
        f"({report.rows_invalid / max(report.rows_checked, 1):.2%}), above max_invalid_fraction {fraction:.2%}: {detail}",
        hint="nothing was written; look at the data, or raise max_invalid_fraction",
    )


# -- one bucket, wherever it runs (the driver, or a Ray worker: engines.run_tasks) -----------------
@dataclass(frozen=True)
class BucketJob:
    """What every bucket of one run shares (picklable: a Ray task gets it). ``source``: the
    plan's lazy source (a scan of the source table at the planned version, the watermark
    window applied); each bucket filters and reads its own slice."""

    source: Any
    inputs: dict[str, Any]  # the DAG's other inputs (snapshot tables as lazy scans)
    buckets: int
    executor: str | None
    gate: Any  # quality.QualityConfig without max_invalid_fraction (checked on the batch), or None
    uri: str
    run_id: str
    check_existing: bool  # reconcile with the existing table's schema
    direct: bool  # write a unit file under the table root; else stage for the MERGE
    staging_dir: str
    presplit: str | None = None  # the source already split by bucket (split_source): read, not filtered


@dataclass(frozen=True)
class BucketOutput:
    """What one bucket gives the driver: its uncommitted ``AddAction`` (direct) or staged
    file (merge), the schema and rows of its de-duplicated output, its quality report and
    rejected rows, and the table columns its output lacks."""

    index: int
    action: Any
    staged: str | None
    schema: Any
    rows_out: int
    report: Any = None
    rejected: Any = None
    missing: tuple[str, ...] = ()


def compute_bucket(fp_project: Any, project: Project, layer: LayerConfig, job: BucketJob, index: int, bucket: int
                   ) -> tuple[BucketOutput, int, list[str]]:
    """Bucket ``bucket`` of ``job.buckets``: its slice of the source through the DAG, the
    unit's quality gate, the schema checks and ``latest_per_key``, then its file written (a
    unit file under the table root, or a staged file). Returns the output, the DAG attempts
    and retry warnings. Raises :class:`~medallion_cli.units.UnitsNotApplicable` when the
    batch must run as one unit."""
    from medallion_cli import materialize, quality, units
    from medallion_cli.flow import run_dag, with_retries
    from medallion_cli.project import check_target_columns

    target, storage, n = layer.target, project.storage, job.buckets
    if job.presplit is not None:
        frame = split_bucket(job.presplit, bucket, job.source.collect_schema())
    else:
        frame = job.source.filter(bucket_expr(target.keys, n) == bucket)
    unit_inputs = {**job.inputs, layer.source.input_name: frame}

    def once() -> pl.DataFrame:
        value = run_dag(fp_project, layer=layer.name, output=layer.output, inputs=unit_inputs,
                        executor=job.executor, pipelines_dir=project.root / "pipelines")
        return _collect(value, layer)

    df, tries, retried = with_retries(once, layer.retry, root=project.root, where=str(layer.config_path),
                                      layer=layer.name)
    check_target_columns(layer, df.columns)
    check_bucket(df, target.keys, n, bucket)
    report = bad = None
    if job.gate is not None:
        try:
            df, bad, report = quality.validate(df, layer, project, job.gate)
        except QualityError as exc:
            raise QualityError(f"{exc.message} (key bucket {bucket + 1} of {n})", exc.hint) from exc
    df = materialize.prepare_frame(df, table=target.table)
    missing: tuple[str, ...] = ()
    if job.check_existing:
        df, added, gone = materialize.reconcile_schema(df, job.uri, table=target.table,
                                                       evolution=target.schema_evolution, storage=storage)
        if added:
            raise units.UnitsNotApplicable(f"the output adds column(s) {', '.join(added)}")
        missing = tuple(gone)
    df = materialize.latest_per_key(df, target)
    action = staged = None
    if job.direct:
        if df.height:
            fs = storage.fs(job.uri) if is_remote(job.uri) else None
            action = units.write_unit_file(df, job.uri, run_id=job.run_id, unit=bucket, storage=storage, fs=fs)
    else:
        staged = stage_file(df, job.staging_dir, bucket, storage)
    out = BucketOutput(index, action, staged, df.schema, df.height, report, bad, missing)
    return out, tries, retried


# At this many buckets or more, the local engine splits the source in one pass instead of
# scanning it once per bucket: one scan of 20M rows costs about 1.6 s here, writing all of
# them split into Arrow IPC files about 6 s.
PRESPLIT_MIN_BUCKETS = 4
SPLIT_COLUMN = "__medallion_bucket"
# A split source up to this size (estimated, in memory) is written uncompressed: at 5M
# events (620 MiB on disk) the split and the buckets' reads then take 0.85 s against
# 1.15-1.4 s with lz4. Bigger ones are compressed, which keeps the staging disk at about
# three times the source's Parquet size.
SPLIT_RAW_MAX_BYTES = 2 << 30


def split_source(source: pl.LazyFrame, keys: tuple[str, ...], buckets: int, folder: Path,
                 compression: str = "lz4") -> str:
    """Write ``source`` once, streamed, into ``folder/<SPLIT_COLUMN>=<b>/*.ipc`` (Arrow IPC,
    ``compression`` lz4 or uncompressed): a bucket's rows in the order the source gives them,
    so that reading a bucket's files gives what filtering the source to it gives. Returns
    the folder."""
    import polars as pl

    key = bucket_expr(keys, buckets).alias(SPLIT_COLUMN)
    source.sink_ipc(pl.PartitionBy(str(folder), key=key, include_key=False), compression=compression, mkdir=True,
                    maintain_order=True)
    return str(folder)


def split_bucket(folder: str, bucket: int, schema: Any) -> pl.LazyFrame:
    """Bucket ``bucket``'s rows from :func:`split_source` (no file: no row of that bucket)."""
    import polars as pl

    files = sorted(Path(folder, f"{SPLIT_COLUMN}={bucket}").glob("*.ipc"))
    if not files:
        return pl.LazyFrame(schema=schema)
    return pl.scan_ipc([str(f) for f in files]).select(list(schema))


# -- the run --------------------------------------------------------------------------------------
@dataclass
class _UnitsDone:
    rows_out: int = 0
    schema: Any = None
    missing: tuple[str, ...] = ()


def run(ctx: Any, layer: LayerConfig, plan: Any, inputs: dict[str, Any], uri: str, overrides: dict[str, Any],
        warnings: list[str], t_layer: float) -> Any:
    """Run ``layer``'s batch as key buckets and commit once; the ``LayerResult``, or None
    when the batch runs as one unit (one bucket, or :func:`why_one_unit`). Raises
    :class:`~medallion_cli.units.UnitsNotApplicable` (nothing was written) when the units
    cannot give the one-unit result: the caller then runs the batch as one unit.

    Each bucket is :func:`compute_bucket`, run in the driver one after the other, or with
    the Ray engine (``ctx.options.engine``) as Ray tasks (:func:`engines.run_tasks`); the
    driver gathers the outputs, writes the quarantine and commits in both cases."""
    import polars as pl

    from medallion_cli import __version__, materialize, quality, runner, units
    from medallion_cli.commits import app_id, build_metadata, write_app_id
    from medallion_cli.incremental import snapshot_app_id

    project, store, storage, target = ctx.project, ctx.store, ctx.project.storage, layer.target
    if why_one_unit(layer, plan) is not None:
        return None
    check_source_keys(layer, plan.source.collect_schema())
    rows_in = runner.count_rows(project, plan) or 0  # one streamed count (a bad landing file is named)
    spec = layer.partition.buckets
    row_bytes = source_row_bytes(project, layer, plan)
    n = spec if isinstance(spec, int) else auto_buckets(rows_in, row_bytes, project.memory_budget_mb)
    if n <= 1:
        return None

    exists = storage.is_table(uri)
    overwrite = plan.write_mode == "overwrite"
    empty = exists and not overwrite and not storage.table(uri).file_uris()
    direct = not exists or overwrite or empty  # unit files committed in one transaction; else a streamed MERGE
    if direct and target.partition_by:
        raise units.UnitsNotApplicable("a partitioned target is created or rebuilt in one write")
    check_existing = exists and not overwrite
    gate = quality.with_policy(layer.quality, ctx.options.quality_policy) if layer.quality is not None else None
    unit_gate = quality.QualityConfig(gate.gates, None) if gate is not None else None
    engine = ctx.options.engine
    on_ray = engine is not None and engine.type == "ray"
    if on_ray and is_remote(uri):  # the workers may be other machines: stage where the driver reads
        staging: Any = RemoteStaging(remote_staging_root(project, target.table), ctx.run_id, storage)
    else:
        staging = Staging(staging_root(project, target.table), ctx.run_id)
    fs = storage.fs(uri) if direct and is_remote(uri) else None
    presplit = None
    if not on_ray and n >= PRESPLIT_MIN_BUCKETS:  # Ray tasks each scan their slice (other machines)
        try:
            compression = "uncompressed" if rows_in * row_bytes <= SPLIT_RAW_MAX_BYTES else "lz4"
            presplit = split_source(plan.source, target.keys, n, Path(staging.dir) / "source", compression)
        except BaseException:
            staging.remove()
            raise
    job = BucketJob(source=plan.source, inputs={k: v for k, v in inputs.items() if k != layer.source.input_name},
                    buckets=n, executor=ctx.executor or layer.executor, gate=unit_gate, uri=uri, run_id=ctx.run_id,
                    check_existing=check_existing, direct=direct, staging_dir=str(staging.dir), presplit=presplit)
    placed: dict[int, str] = {}  # bucket -> the Ray node it ran on
    if on_ray:
        from medallion_cli import engines

        outputs = engines.run_tasks(engine, project, layer, compute_bucket, job, list(range(n)), placed=placed)
    else:
        outputs = (compute_bucket(ctx.fp_project, project, layer, job, b, b) for b in range(n))
    actions: list[Any] = []
    rejected: list[pl.DataFrame] = []
    reports: list[Any] = []
    done = _UnitsDone()
    attempts = 0
    try:
        staging.clean_stale()
        for out, tries, retried in outputs:
            attempts += tries
            warnings += retried
            if out.report is not None:
                reports.append(out.report)
            if out.rejected is not None:
                rejected.append(out.rejected)
            done.missing = out.missing or done.missing
            if done.schema is None:
                done.schema = out.schema
            elif out.schema != done.schema:
                raise units.UnitsNotApplicable("units produced different schemas")
            done.rows_out += out.rows_out
            if out.action is not None:
                actions.append(out.action)
            if out.staged is not None:
                staging.files.append(out.staged if isinstance(staging, RemoteStaging) else Path(out.staged))
            runner._crash_point(layer, "unit_written")
        if direct:  # files of attempts that did not count (a retried task) are never committed
            units.remove_run_files(uri, ctx.run_id, keep={a.path for a in actions}, fs=fs)
        report = combine_reports(reports, quality.quarantine_table(layer)) if gate is not None else None
        if report is not None:
            check_fraction(layer, report, gate.max_invalid_fraction)
        runner._crash_point(layer, "units_written")
        runner._check_files_unchanged(plan)
        if gate is not None and (rejected or plan.kind == "full_refresh"):
            quality.write_quarantine(
                pl.concat(rejected) if rejected else None, project.table_uri(quality.quarantine_table(layer)), storage,
                run_id=ctx.run_id, layer=layer.name, at=ctx.started, replace_all=plan.kind == "full_refresh",
                metadata=build_metadata(run_id=ctx.run_id, layer=layer.name, version=__version__, mode=plan.kind),
            )
            runner._crash_point(layer, "quarantined")
        inc = layer.incremental
        wm = plan.watermark_after
        metadata = build_metadata(
            run_id=ctx.run_id, layer=layer.name, version=__version__, mode=plan.kind,
            watermark_column=plan.watermark_column, watermark=wm[0] if wm else None,
            watermark_int=wm[1] if wm else None,
            files=runner._file_records(plan) if inc is not None and inc.strategy == "files" else None,
        )
        app = (app_id(target.table), wm[1]) if wm else (write_app_id(target.table), time.time_ns() // 1000)
        more = [(snapshot_app_id(layer, name), v) for name, v in plan.snapshot_versions.items()]
        if direct:
            from deltalake import Schema as DeltaSchema

            schema = (storage.table(uri).schema() if check_existing
                      else DeltaSchema.from_arrow(units._arrow_schema(done.schema)))
            outcome = units.commit_units(actions, schema, uri, target, metadata=metadata, transactions=[app, *more],
                                         storage=storage, overwrite=overwrite)
        elif staging.files:
            outcome = materialize.merge_stream(staging.reader, uri, target, metadata=metadata, app_transaction=app,
                                               more_transactions=more, storage=storage)
        else:
            outcome = materialize.WriteOutcome(operation="none", version=None)
    except BaseException:
        close = getattr(outputs, "close", None)
        if close is not None:
            close()  # Ray: wait for the other tasks before their files are removed
        if direct:
            units.remove_unit_files(uri, actions, fs)
            units.remove_run_files(uri, ctx.run_id, fs=fs)
        raise
    finally:
        ctx.attempts[layer.name] = attempts
        staging.remove()
    outcome = replace(outcome, metrics={**outcome.metrics, "units": n,
                                        **({"ray_nodes": len(set(placed.values()))} if placed else {})},
                      rows=done.rows_out)
    runner._crash_point(layer, "committed", store)
    store.back()
    warnings += [f"column {c} of {target.table} is missing from the output: written as null" for c in done.missing]
    if layer.incremental is not None:
        runner._record_state(store, layer, uri, plan, outcome.version, ctx.run_id, storage)
    runner._crash_point(layer, "recorded", store)
    status = "written" if outcome.version is not None else "unchanged"
    result = runner._result(layer, uri, plan, status, outcome, rows_in, done.rows_out,
                            time.perf_counter() - t_layer, warnings)
    return replace(result, quality=report, attempts=attempts)


def _collect(value: Any, layer: LayerConfig) -> pl.DataFrame:
    """A unit's output, collected with the streaming engine (the source scan streams, only
    the bucket's rows are held)."""
    import polars as pl

    from medallion_cli.errors import PipelineError

    if isinstance(value, pl.DataFrame):
        return value
    if not isinstance(value, pl.LazyFrame):
        raise PipelineError(
            f"layer {layer.name!r}: node {layer.output!r} returned {type(value).__name__}, not a polars frame",
            hint="return a pl.DataFrame or pl.LazyFrame from the output node",
        )
    try:
        return value.collect(engine="streaming")
    except Exception as exc:  # a polars error while evaluating the pipeline's plan
        raise PipelineError(
            f"layer {layer.name!r} failed while computing {layer.output!r}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            hint=f"check the transforms in pipelines/{layer.name}.py; run with --debug for details",
        ) from exc
