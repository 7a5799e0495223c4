"""Read a layer's source: landing files (parquet, CSV, JSON lines) or an upstream Delta table.

Both return a polars ``LazyFrame``; nothing is read until the layer's output is collected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medallion_cli.errors import ConfigError, UsageError

if TYPE_CHECKING:
    import polars as pl

FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "ndjson",
    ".ndjson": "ndjson",
    ".json": "ndjson",
}


@dataclass(frozen=True)
class LandingFiles:
    """The files found in a landing folder, by format, and those that were ignored."""

    root: str
    by_format: dict[str, tuple[str, ...]]
    ignored: tuple[str, ...]

    @property
    def count(self) -> int:
        return sum(len(files) for files in self.by_format.values())


def list_landing(root: str) -> LandingFiles:
    """List the landing files under ``root`` (recursively; hidden files are skipped)."""
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(
            f"landing folder {root} does not exist",
            hint="create it and drop parquet, CSV or JSON-lines files into it, "
            "or fix medallion.source.landing in the layer's YAML",
        )
    by_format: dict[str, list[str]] = {}
    ignored: list[str] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        fmt = FORMATS.get(file.suffix.lower())
        if fmt is None:
            ignored.append(str(rel))
        else:
            by_format.setdefault(fmt, []).append(str(file))
    return LandingFiles(
        root=str(path),
        by_format={k: tuple(v) for k, v in by_format.items()},
        ignored=tuple(ignored),
    )


def polars_schema(schema: dict[str, str]) -> dict[str, pl.DataType]:
    """Map the YAML type names of a landing schema to polars dtypes (datetimes are UTC)."""
    import polars as pl

    types = {
        "string": pl.String(),
        "int32": pl.Int32(),
        "int64": pl.Int64(),
        "float32": pl.Float32(),
        "float64": pl.Float64(),
        "bool": pl.Boolean(),
        "date": pl.Date(),
        "datetime": pl.Datetime("us", "UTC"),
    }
    return {column: types[name] for column, name in schema.items()}


SOURCE_FILE_COLUMN = "_source_file"


def scan_landing(files: LandingFiles, schema: dict[str, str]) -> pl.LazyFrame:
    """One lazy frame over all landing files, cast to ``schema``, plus ``_source_file``.

    ``_source_file`` holds each row's file path relative to the landing folder.
    """
    import polars as pl

    dtypes = polars_schema(schema)
    frames = []
    for fmt, paths in files.by_format.items():
        if fmt == "csv":
            frame = pl.scan_csv(list(paths), schema=dtypes, include_file_paths=SOURCE_FILE_COLUMN)
        elif fmt == "ndjson":
            frame = pl.scan_ndjson(list(paths), schema=dtypes, include_file_paths=SOURCE_FILE_COLUMN)
        else:
            frame = pl.scan_parquet(
                list(paths), include_file_paths=SOURCE_FILE_COLUMN, missing_columns="insert"
            ).select(*(pl.col(c).cast(t) for c, t in dtypes.items()), SOURCE_FILE_COLUMN)
        frames.append(frame)
    if not frames:
        return pl.LazyFrame(schema={**dtypes, SOURCE_FILE_COLUMN: pl.String()})
    prefix = files.root.rstrip("/") + "/"
    return pl.concat(frames, how="vertical").with_columns(
        pl.col(SOURCE_FILE_COLUMN).str.strip_prefix(prefix)
    )


def scan_table(uri: str, *, table: str) -> pl.LazyFrame:
    """Lazy scan of an upstream Delta table; a clear error if it does not exist yet."""
    import polars as pl
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(uri):
        raise UsageError(
            f"source table {table!r} does not exist yet ({uri})",
            hint="run the layer that writes it first, e.g. `medallion run all`",
        )
    return pl.scan_delta(uri)
