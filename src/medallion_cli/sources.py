"""Read a layer's source: landing files (parquet, CSV, JSON lines) or an upstream Delta table.

Both return a polars ``LazyFrame``; nothing is read until the layer's output is collected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from medallion_cli.errors import ConfigError, SourceError
from medallion_cli.storage import Storage, is_remote

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
class LandingFile:
    """One landing file: where it is, its format and a fingerprint of its content."""

    path: str
    name: str  # relative to the landing folder
    format: str
    size: int
    mtime_ns: int
    etag: str | None = None

    @property
    def fingerprint(self) -> str:
        """ETag on object stores, else size and modification time: a rewritten file gets a new one."""
        return self.etag or f"{self.size}:{self.mtime_ns}"

    @property
    def modified_at(self) -> datetime:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, tz=timezone.utc)


@dataclass(frozen=True)
class LandingFiles:
    """The files found in a landing folder, and those that were ignored."""

    root: str
    files: tuple[LandingFile, ...]
    ignored: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def by_format(self) -> dict[str, tuple[str, ...]]:
        grouped: dict[str, list[str]] = {}
        for f in self.files:
            grouped.setdefault(f.format, []).append(f.path)
        return {k: tuple(v) for k, v in grouped.items()}

    def subset(self, files: list[LandingFile]) -> LandingFiles:
        return LandingFiles(root=self.root, files=tuple(files), ignored=self.ignored)


def list_landing(root: str, storage: Storage | None = None) -> LandingFiles:
    """List the landing files under ``root`` (recursively; hidden files are skipped)."""
    if is_remote(root):
        return _list_remote(root, storage or Storage())
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(
            f"landing folder {root} does not exist",
            hint="create it and drop parquet, CSV or JSON-lines files into it, "
            "or fix medallion.source.landing in the layer's YAML",
        )
    files: list[LandingFile] = []
    ignored: list[str] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue
        fmt = FORMATS.get(file.suffix.lower())
        if fmt is None:
            ignored.append(str(rel))
            continue
        st = file.stat()
        files.append(LandingFile(str(file), str(rel), fmt, st.st_size, st.st_mtime_ns))
    return LandingFiles(root=str(path), files=tuple(files), ignored=tuple(ignored))


def _list_remote(root: str, storage: Storage) -> LandingFiles:
    scheme, rest = root.split("://", 1)
    prefix = rest.rstrip("/")
    fs = storage.fs(root)

    def find() -> dict:
        if not fs.exists(prefix.split("/", 1)[0]):
            raise ConfigError(f"bucket of the landing path {root} does not exist",
                              hint="create the bucket, or fix medallion.source.landing")
        return fs.find(prefix, detail=True)

    found = storage.call(find, what=f"listing {root}", uri=root)
    files: list[LandingFile] = []
    ignored: list[str] = []
    for key, info in sorted(found.items()):
        rel = key[len(prefix) + 1:]
        if not rel or any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        fmt = FORMATS.get(Path(rel).suffix.lower())
        if fmt is None:
            ignored.append(rel)
            continue
        modified = info.get("LastModified") or info.get("mtime")
        mtime_ns = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else 0
        etag = str(info.get("ETag") or "").strip('"') or None
        files.append(LandingFile(f"{scheme}://{key}", rel, fmt, int(info.get("size") or 0), mtime_ns, etag))
    return LandingFiles(root=root, files=tuple(files), ignored=tuple(ignored))


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


def scan_landing(files: LandingFiles, schema: dict[str, str], storage: Storage | None = None) -> pl.LazyFrame:
    """One lazy frame over all landing files, cast to ``schema``, plus ``_source_file``.

    ``_source_file`` holds each row's file path relative to the landing folder. Columns a
    file has beyond the schema are ignored; a missing column is an error.
    """
    import polars as pl

    dtypes = polars_schema(schema)
    options = (storage or Storage()).polars(files.root)
    frames = [_scan(fmt, list(paths), dtypes, options) for fmt, paths in files.by_format.items()]
    if not frames:
        return pl.LazyFrame(schema={**dtypes, SOURCE_FILE_COLUMN: pl.String()})
    prefix = files.root.rstrip("/") + "/"
    return pl.concat(frames, how="vertical").with_columns(
        pl.col(SOURCE_FILE_COLUMN).str.strip_prefix(prefix)
    )


def _scan(fmt: str, paths: list[str], dtypes: dict[str, pl.DataType], options: dict | None = None) -> pl.LazyFrame:
    import polars as pl

    if fmt == "csv":
        # One scan per file: a multi-file CSV scan needs identical headers in every file.
        frame = pl.concat(
            [
                pl.scan_csv(path, schema_overrides=dtypes, include_file_paths=SOURCE_FILE_COLUMN, infer_schema=False,
                            storage_options=options)
                .select(*dtypes, SOURCE_FILE_COLUMN)
                for path in paths
            ],
            how="vertical",
        )
    elif fmt == "ndjson":
        frame = pl.scan_ndjson(paths, schema=dtypes, include_file_paths=SOURCE_FILE_COLUMN, storage_options=options)
    else:
        frame = pl.scan_parquet(paths, include_file_paths=SOURCE_FILE_COLUMN, extra_columns="ignore", storage_options=options)
    return frame.select(*(pl.col(c).cast(t) for c, t in dtypes.items()), SOURCE_FILE_COLUMN)


def diagnose_landing(files: LandingFiles, schema: dict[str, str], storage: Storage | None = None) -> SourceError | None:
    """After a failed read, find the first landing file that cannot be read on its own.

    Called only on the error path: it reads each file in full.
    """
    dtypes = polars_schema(schema)
    prefix = files.root.rstrip("/") + "/"
    for fmt, paths in files.by_format.items():
        for path in paths:
            try:
                _scan(fmt, [path], dtypes, (storage or Storage()).polars(files.root)).collect()
            except Exception as exc:  # polars raises several error types for bad files
                name = path.removeprefix(prefix)
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                return SourceError(
                    f"landing file {name} cannot be read as {fmt} with the bronze schema: {reason}",
                    hint="fix or remove the file (or adjust medallion.source.schema), then run again",
                )
    return None
