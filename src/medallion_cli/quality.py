"""Data-quality gates: validate a layer's output with pandera before it is written.

Each layer may name pandera schemas (polars backend) from the project's ``schemas.py`` and a
policy: ``fail`` stops the run before anything is written, ``drop`` leaves invalid rows out
(counted), ``quarantine`` writes them to ``<table>__quarantine`` with why they failed. A
schema-level problem (missing column, wrong dtype) always fails: pandera's own
``drop_invalid_rows`` would swallow it. Reasons are gathered only for failing rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medallion_cli.errors import ConfigError, QualityError

if TYPE_CHECKING:
    import polars as pl

    from medallion_cli.project import LayerConfig, Project

POLICIES = ("fail", "drop", "quarantine")
QUARANTINE_SUFFIX = "__quarantine"
ERRORS_COLUMN = "_errors"


@dataclass(frozen=True)
class SchemaGate:
    name: str
    policy: str


@dataclass(frozen=True)
class QualityConfig:
    gates: tuple[SchemaGate, ...]
    max_invalid_fraction: float | None = None


def load_config(value: Any, path: Path) -> QualityConfig | None:
    """Parse a layer's ``medallion.quality`` section."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: medallion.quality must be a mapping")
    default = value.get("policy", "fail")
    if default not in POLICIES:
        raise ConfigError(f"{path}: quality policy must be one of {', '.join(POLICIES)}, got {default!r}")
    gates = []
    for item in value.get("schemas") or []:
        if isinstance(item, str):
            gates.append(SchemaGate(item, default))
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            policy = item.get("policy", default)
            if policy not in POLICIES:
                raise ConfigError(f"{path}: quality policy of {item['name']} must be one of {', '.join(POLICIES)}")
            gates.append(SchemaGate(item["name"], policy))
        else:
            raise ConfigError(f"{path}: medallion.quality.schemas entries are names or {{name, policy}} mappings")
    if not gates:
        raise ConfigError(f"{path}: medallion.quality needs `schemas:` (names of pandera schemas in schemas.py)")
    fraction = value.get("max_invalid_fraction")
    if fraction is not None and (not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction <= 1):
        raise ConfigError(f"{path}: max_invalid_fraction must be a number between 0 and 1")
    return QualityConfig(tuple(gates), None if fraction is None else float(fraction))


def with_policy(config: QualityConfig, policy: str | None) -> QualityConfig:
    """``config`` with every schema's policy replaced (``run --quality-policy``), for one run."""
    if policy is None:
        return config
    if policy not in POLICIES:
        from medallion_cli.errors import UsageError

        raise UsageError(f"unknown quality policy {policy!r}", hint=f"use one of: {', '.join(POLICIES)}")
    return QualityConfig(tuple(SchemaGate(g.name, policy) for g in config.gates), config.max_invalid_fraction)


@dataclass(frozen=True)
class CheckCount:
    schema: str
    column: str | None
    check: str
    rows: int
    samples: list[str]


@dataclass(frozen=True)
class QualityReport:
    """What validation found and where the invalid rows went."""

    rows_checked: int
    rows_valid: int
    rows_invalid: int
    rows_dropped: int
    rows_quarantined: int
    checks: list[CheckCount] = field(default_factory=list)
    quarantine_table: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        where = []
        if self.rows_quarantined:
            where.append(f"{self.rows_quarantined:,} quarantined in {self.quarantine_table}")
        if self.rows_dropped:
            where.append(f"{self.rows_dropped:,} dropped")
        tail = f" ({'; '.join(where)})" if where else ""
        return f"{self.rows_checked:,} rows checked, {self.rows_invalid:,} invalid{tail}"


def load_schema(project: Project, name: str) -> Any:
    """The pandera schema ``name`` from the project's schemas.py (models become schemas)."""
    path = project.root / "schemas.py"
    if not path.is_file():
        raise ConfigError(f"{path} is missing, but a layer names the schema {name!r}")
    from medallion_cli.project import import_file

    try:
        module = import_file(path)
    except Exception as exc:
        raise ConfigError(f"{path} fails to import: {type(exc).__name__}: {exc}", hint="fix schemas.py") from exc
    obj = getattr(module, name, None)
    if obj is None:
        raise ConfigError(f"{path} has no schema {name!r}", hint="check the names under medallion.quality.schemas")
    import pandera.polars as pa

    if isinstance(obj, type) and issubclass(obj, pa.DataFrameModel):
        return obj.to_schema()
    if isinstance(obj, pa.DataFrameSchema):
        return obj
    raise ConfigError(f"{name} in {path} is not a pandera polars DataFrameModel or DataFrameSchema")


def _failures(schema: Any, df: pl.DataFrame) -> pl.DataFrame | None:
    import pandera.polars as pa

    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return exc.failure_cases
    return None


def validate(df: pl.DataFrame, layer: LayerConfig, project: Project, config: QualityConfig) -> tuple[pl.DataFrame, pl.DataFrame | None, QualityReport]:
    """Split ``df`` into valid rows and rows to quarantine; raise for ``fail`` and thresholds.

    Returns ``(valid, quarantine_rows_or_None, report)``. Quarantine rows carry an
    ``_errors`` list of ``{schema, column, check, value}``.
    """
    import polars as pl

    indexed = df.with_row_index("__row")
    reasons = []
    for gate in config.gates:
        schema = load_schema(project, gate.name)
        schema_level = _failures(schema, df.head(0))
        if schema_level is not None:
            first = schema_level.row(0, named=True)
            raise QualityError(
                f"layer {layer.name!r}: output does not fit schema {gate.name}: {first['column']} {first['check']}"
                + (f" ({first['failure_case']})" if first["failure_case"] not in (None, first["column"]) else "")
                + (f", and {schema_level.height - 1} more" if schema_level.height > 1 else ""),
                hint="schema-level problems (missing columns, wrong types) always stop the run; fix the pipeline or the schema",
            )
        cases = _failures(schema, df)
        if cases is None:
            continue
        if cases["index"].null_count():
            first = cases.filter(pl.col("index").is_null()).row(0, named=True)
            raise QualityError(
                f"layer {layer.name!r}: schema {gate.name} failed as a whole: {first['column']} {first['check']}",
                hint="table-wide checks cannot be split by row; fix the data or the schema",
            )
        reasons.append(cases.select(
            pl.col("index").cast(pl.UInt32).alias("__row"),
            pl.lit(gate.name).alias("schema"),
            pl.lit(gate.policy).alias("policy"),
            pl.col("column").cast(pl.String),
            pl.col("check").cast(pl.String),
            pl.col("failure_case").cast(pl.String).alias("value"),
        ))
    if not reasons:
        return df, None, QualityReport(df.height, df.height, 0, 0, 0)
    failed = pl.concat(reasons)
    checks = [
        CheckCount(r["schema"], r["column"], r["check"], r["rows"], r["samples"])
        for r in failed.group_by("schema", "column", "check", maintain_order=True).agg(
            pl.col("__row").n_unique().alias("rows"), pl.col("value").unique(maintain_order=True).head(3).alias("samples")
        ).iter_rows(named=True)
    ]
    per_row = failed.group_by("__row").agg(
        pl.col("policy").unique().alias("policies"),
        pl.struct("schema", "column", "check", "value").alias(ERRORS_COLUMN),
    )
    invalid = per_row.height
    detail = ", ".join(f"{c.column} {c.check} ({c.rows:,})" for c in checks[:4]) + (" ..." if len(checks) > 4 else "")
    if any("fail" in p for p in per_row["policies"].to_list()):
        raise QualityError(
            f"layer {layer.name!r}: {invalid:,} of {df.height:,} rows fail the quality checks: {detail}",
            hint=f"nothing was written and the watermark did not move; to set these rows aside and go on, run "
            f"`medallion run {layer.name} --quality-policy quarantine` (they are kept in {quarantine_table(layer)}), "
            "or fix the schema or pipeline if the rows are valid",
        )
    if config.max_invalid_fraction is not None and invalid > config.max_invalid_fraction * df.height:
        raise QualityError(
            f"layer {layer.name!r}: {invalid:,} of {df.height:,} rows invalid ({invalid / max(df.height, 1):.2%}), "
            f"above max_invalid_fraction {config.max_invalid_fraction:.2%}: {detail}",
            hint="nothing was written; look at the data, or raise max_invalid_fraction",
        )
    quarantine_rows = per_row.filter(pl.col("policies").list.contains("quarantine"))
    valid = indexed.join(per_row.select("__row"), on="__row", how="anti").drop("__row")
    to_quarantine = None
    if quarantine_rows.height:
        to_quarantine = indexed.join(quarantine_rows.select("__row", ERRORS_COLUMN), on="__row", how="inner").drop("__row")
    report = QualityReport(
        rows_checked=df.height, rows_valid=valid.height, rows_invalid=invalid,
        rows_dropped=invalid - quarantine_rows.height, rows_quarantined=quarantine_rows.height, checks=checks,
        quarantine_table=quarantine_table(layer) if quarantine_rows.height else None,
    )
    return valid, to_quarantine, report


def quarantine_table(layer: LayerConfig) -> str:
    return layer.target.table + QUARANTINE_SUFFIX


ROW_KEY = "_row_key"
# Columns that change when the same source row is read again (a re-ingested file, a
# restore or reset of bronze): left out of the row key, so the row is still the same row.
INGESTED = "_ingested_at"
PER_INGESTION_COLUMNS = (INGESTED, "_run_id")


def row_keys(rows: pl.DataFrame) -> pl.Series:
    """A stable identity for each source row: SHA-256 of its values (``_errors`` and
    :data:`PER_INGESTION_COLUMNS` excluded; ``_source_file`` kept, so equal rows in two
    files are two rows).

    Defined on the values' JSON text (:mod:`medallion_cli.rowkeys`), so it does not change
    between polars versions (polars' own row hash may). Only invalid rows are hashed.
    """
    import polars as pl

    from medallion_cli import rowkeys

    columns = [c for c in rows.columns if c != ERRORS_COLUMN and c not in PER_INGESTION_COLUMNS]
    return pl.Series(ROW_KEY, rowkeys.row_keys(rows.select(columns)), dtype=pl.String)


def write_quarantine(
    rows: pl.DataFrame | None, uri: str, storage: Any, *, run_id: str, layer: str, at: datetime, metadata: dict[str, str],
    replace_all: bool = False,
) -> int | None:
    """Add invalid rows to the quarantine table, each source row exactly once.

    Rows are keyed by :func:`row_keys` and MERGEd in only when absent, so re-reading a
    window (a lookback, a backfill, a retry after a crash or a failed main write) never
    quarantines a row twice; a row keeps the run id and time it was first quarantined
    with, and takes the latest ``_ingested_at`` of its source row (as bronze does). ``replace_all`` (a full refresh) also removes rows the recompute no longer finds
    invalid, so the table equals what a full recompute quarantines. Returns the new
    version, or None when nothing changed.
    """
    import time

    import polars as pl
    from deltalake import CommitProperties, Transaction, write_deltalake

    from medallion_cli.commits import write_app_id

    commit = CommitProperties(custom_metadata=metadata)
    exists = storage.is_table(uri)
    if rows is None or rows.height == 0:
        if not (replace_all and exists):
            return None
        before = storage.table(uri).version()
        storage.call(lambda: storage.table(uri).delete(commit_properties=commit), what=f"clearing {Path(uri).name}", uri=uri)
        after = storage.table(uri).version()
        return after if after != before else None
    frame = rows.with_columns(
        row_keys(rows),
        pl.lit(run_id).alias("_run_id"),
        pl.lit(layer).alias("_layer"),
        pl.lit(at, dtype=pl.Datetime("us", "UTC")).alias("_quarantined_at"),
    ).unique(subset=[ROW_KEY], keep="first", maintain_order=True)
    metadata, done = storage.write_guard(uri, metadata, exists=exists)  # a retry first checks whether the write landed
    commit = CommitProperties(custom_metadata=metadata,
                              app_transactions=[Transaction(write_app_id(Path(uri).name), time.time_ns() // 1000)])
    if not exists:
        storage.call(lambda: write_deltalake(uri, frame, mode="append", storage_options=storage.delta(uri),
                                             commit_properties=commit),
                     what=f"writing {Path(uri).name}", uri=uri, done=done)
        return storage.table(uri).version()

    def merge() -> int | None:
        table = storage.table(uri)
        before = table.version()
        merger = table.merge(source=frame, predicate=f"t.{ROW_KEY} = s.{ROW_KEY}", source_alias="s", target_alias="t",
                             merge_schema=True, commit_properties=commit, streamed_exec=False)
        if INGESTED in frame.columns:  # a re-read source row: the stored one takes its latest ingestion
            merger = merger.when_matched_update(updates={INGESTED: f"s.{INGESTED}"},
                                                predicate=f"s.{INGESTED} > t.{INGESTED} OR t.{INGESTED} IS NULL")
        merger = merger.when_not_matched_insert_all()
        if replace_all:
            merger = merger.when_not_matched_by_source_delete()
        merger.execute()
        table.update_incremental()
        return table.version() if table.version() != before else None

    return storage.call(merge, what=f"writing {Path(uri).name}", uri=uri, done=done)


def summarize(uri: str, storage: Any, *, table: str, run_id: str | None = None, samples: int = 3) -> dict[str, Any]:
    """Counts per check and column (with sample values) from a quarantine table."""
    import polars as pl

    from medallion_cli.errors import UsageError

    if not storage.is_table(uri):
        raise UsageError(f"{table} has no quarantine table yet ({uri})", hint="it is created by the first run that quarantines a row")
    frame = storage.scan_delta(uri).collect()
    # Tables written before rows were keyed may hold a row more than once: count it once.
    frame = frame.unique(subset=[ROW_KEY] if ROW_KEY in frame.columns else [c for c in frame.columns if c not in (
        "_run_id", "_quarantined_at", ERRORS_COLUMN)], keep="first", maintain_order=True)
    runs = frame.group_by("_run_id").agg(pl.len().alias("rows"), pl.col("_quarantined_at").max().alias("at")).sort("at", descending=True)
    if run_id is not None:
        frame = frame.filter(pl.col("_run_id") == run_id)
        if frame.height == 0:
            raise UsageError(f"no quarantined rows from run {run_id!r} in {table}",
                             hint="runs with quarantined rows: " + ", ".join(runs["_run_id"].head(5).to_list()))
    errors = frame.select(ERRORS_COLUMN).explode(ERRORS_COLUMN).unnest(ERRORS_COLUMN)
    checks = (
        errors.group_by("schema", "column", "check")
        .agg(pl.len().alias("rows"), pl.col("value").unique(maintain_order=True).head(samples).alias("samples"))
        .sort("rows", descending=True)
    )
    return {
        "table": table,
        "quarantine_uri": uri,
        "run_id": run_id,
        "rows": frame.height,
        "checks": checks.to_dicts(),
        "runs": [{"run_id": r["_run_id"], "rows": r["rows"], "at": r["at"]} for r in runs.iter_rows(named=True)],
    }
