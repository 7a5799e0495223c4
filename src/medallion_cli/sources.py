"""Read a layer's landing files: parquet, CSV and JSON lines (``.csv.gz``, ``.jsonl.gz`` and
``.ndjson.gz`` too).

:func:`list_landing` finds the files (refusing symlinks that leave the landing folder and
holding back files the settle rule says are not ready); :func:`scan_landing` checks each
file's columns against the declared schema and returns a polars ``LazyFrame`` plus the
warnings the run should print. Nothing but file footers, headers (and JSON keys) is read
until the layer's output is collected. Errors name files, formats and columns, never a
value from a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from medallion_cli.errors import ConfigError, SourceError
from medallion_cli.project import SettleRule, SourceConfig
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
# Compressed text files are read transparently (parquet compresses inside the file).
COMPRESSED = {".gz": "gzip"}


def detect_format(name: str) -> tuple[str, str | None] | None:
    """``(format, compression)`` of a landing file from its name, or None if not a landing file."""
    path = PurePosixPath(name.lower())
    compression = COMPRESSED.get(path.suffix)
    if compression is not None:
        fmt = FORMATS.get(path.with_suffix("").suffix)
        return (fmt, compression) if fmt in ("csv", "ndjson") else None
    fmt = FORMATS.get(path.suffix)
    return (fmt, None) if fmt else None


@dataclass(frozen=True)
class LandingFile:
    """One landing file: where it is, its format and a fingerprint of its content."""

    path: str
    name: str  # relative to the landing folder
    format: str
    size: int
    mtime_ns: int
    etag: str | None = None
    compression: str | None = None  # gzip for .csv.gz, .jsonl.gz, .ndjson.gz

    @property
    def fingerprint(self) -> str:
        """ETag on object stores, else size and modification time: a rewritten file gets a new one."""
        return self.etag or f"{self.size}:{self.mtime_ns}"

    @property
    def modified_at(self) -> datetime:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, tz=timezone.utc)


@dataclass(frozen=True)
class LandingFiles:
    """The files found in a landing folder, those that were ignored and those that wait.

    ``waiting`` are files the settle rule holds back for a later run (too young, or no
    marker in their folder); ``warnings`` says so in words, for the run summary.
    """

    root: str
    files: tuple[LandingFile, ...]
    ignored: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

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
        return replace(self, files=tuple(files))


def _hidden(part: str) -> bool:
    return part.startswith((".", "_"))


def list_landing(root: str, storage: Storage | None = None, *, settle: SettleRule | None = None,
                 now: datetime | None = None) -> LandingFiles:
    """List the landing files under ``root`` (recursively; hidden files are skipped).

    Names starting with ``.`` or ``_`` are skipped (write a file under such a name and
    rename it when complete). A symlink that resolves outside the landing folder is
    refused (:class:`ConfigError`). Files the ``settle`` rule holds back are listed in
    ``waiting``, not in ``files``.
    """
    settle = settle or SettleRule()
    now = now or datetime.now(timezone.utc)
    if is_remote(root):
        (found, markers), notes = _list_remote(root, storage or Storage(), settle.marker), []
    else:
        found, markers, notes = _list_local(root, settle.marker)
    files: list[LandingFile] = []
    ignored: list[str] = []
    young: list[str] = []
    unmarked: list[str] = []
    for entry in found:
        if isinstance(entry, str):
            ignored.append(entry)
            continue
        parent = str(PurePosixPath(entry.name).parent)
        if settle.marker is not None and parent not in markers:
            unmarked.append(entry.name)
        elif settle.min_age_s > 0 and (now - entry.modified_at).total_seconds() < settle.min_age_s:
            young.append(entry.name)
        else:
            files.append(entry)
    warnings = list(notes)
    for names, why in ((young, f"younger than {settle.min_age}"), (unmarked, f"no {settle.marker} in their folder")):
        if names:
            warnings.append(f"{len(names)} file(s) wait: {_short(names)} ({why})")
    return LandingFiles(root=root if is_remote(root) else str(Path(root)), files=tuple(files), ignored=tuple(ignored),
                        waiting=tuple(sorted(young + unmarked)), warnings=tuple(warnings))


def _list_local(root: str, marker: str | None) -> tuple[list[LandingFile | str], set[str], list[str]]:
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(
            f"landing folder {root} does not exist",
            hint="create it and drop parquet, CSV or JSON-lines files into it, "
            "or fix medallion.source.landing in the layer's YAML",
        )
    real_root = path.resolve()
    found: list[LandingFile | str] = []
    markers: set[str] = set()
    notes: list[str] = []
    for folder, dirs, names in os.walk(path):  # symlinked folders are not followed
        here = Path(folder)
        rel_dir = here.relative_to(path)
        keep = []
        for d in sorted(dirs):
            if _hidden(d):
                continue
            if (here / d).is_symlink():
                _check_link(here / d, rel_dir / d, real_root, "folder")
                notes.append(f"skipped {(rel_dir / d).as_posix()}/: a symlink to a folder inside the landing folder "
                             "(its files are read where they are)")
                continue
            keep.append(d)
        dirs[:] = keep
        if marker is not None and (here / marker).is_file():
            markers.add(rel_dir.as_posix())
        for name in sorted(names):
            if _hidden(name):
                continue
            file, rel = here / name, (rel_dir / name).as_posix()
            if file.is_symlink():
                _check_link(file, rel_dir / name, real_root, "file")
            detected = detect_format(name)
            if detected is None:
                found.append(rel)
                continue
            st = file.stat()
            found.append(LandingFile(str(file), rel, detected[0], st.st_size, st.st_mtime_ns, compression=detected[1]))
    return sorted(found, key=lambda e: e if isinstance(e, str) else e.name), markers, notes


def _check_link(link: Path, rel: Path, real_root: Path, kind: str) -> None:
    """A symlink in the landing folder must resolve inside it (never read what it points to otherwise)."""
    target = link.resolve()
    if not target.exists():
        raise ConfigError(f"landing {kind} {rel.as_posix()} is a broken symlink",
                          hint="remove the link, or copy the real file into the landing folder")
    if not target.is_relative_to(real_root):
        raise ConfigError(
            f"landing {kind} {rel.as_posix()} is a symlink that resolves outside the landing folder: refused",
            hint="copy the data into the landing folder instead of linking it, or remove the link",
        )


def _list_remote(root: str, storage: Storage, marker: str | None) -> tuple[list[LandingFile | str], set[str]]:
    scheme, rest = root.split("://", 1)
    prefix = rest.rstrip("/")
    fs = storage.fs(root)

    def find() -> dict:
        if not fs.exists(prefix.split("/", 1)[0]):
            raise ConfigError(f"bucket of the landing path {root} does not exist",
                              hint="create the bucket, or fix medallion.source.landing")
        return fs.find(prefix, detail=True)

    found = storage.call(find, what=f"listing {root}", uri=root)
    if not found:
        # An empty listing is what a mistyped prefix gives: say so, as for a missing local folder.
        raise ConfigError(
            f"landing path {root} has no objects",
            hint="check the prefix in medallion.source.landing (object stores have no empty folders: "
            "it exists once a file is uploaded under it)",
        )
    entries: list[LandingFile | str] = []
    markers: set[str] = set()
    for key, info in sorted(found.items()):
        rel = key[len(prefix) + 1:]
        if not rel:
            continue
        parts = rel.split("/")
        if marker is not None and parts[-1] == marker:
            markers.add(str(PurePosixPath(rel).parent))
        if any(_hidden(part) for part in parts):
            continue
        detected = detect_format(rel)
        if detected is None:
            entries.append(rel)
            continue
        modified = info.get("LastModified") or info.get("mtime")
        mtime_ns = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else 0
        etag = str(info.get("ETag") or "").strip('"') or None
        entries.append(LandingFile(f"{scheme}://{key}", rel, detected[0], int(info.get("size") or 0), mtime_ns, etag,
                                   compression=detected[1]))
    return entries, markers


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
RESCUED_COLUMN = "_rescued_data"


@dataclass(frozen=True)
class LandingScan:
    """A lazy frame over landing files, and what the run should be told about them."""

    frame: pl.LazyFrame
    warnings: tuple[str, ...] = ()
    extra_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # file name -> columns
    # File names in the order their rows appear in ``frame`` (files are read in groups of
    # one format and schema); a contiguous run of them scans in the same order alone.
    order: tuple[str, ...] = ()


def _as_source(source: SourceConfig | dict[str, str], root: str) -> SourceConfig:
    return source if isinstance(source, SourceConfig) else SourceConfig(landing=root, schema=dict(source))


def _short(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def scan_landing(files: LandingFiles, source: SourceConfig | dict[str, str], storage: Storage | None = None) -> LandingScan:
    """One lazy frame over all landing files, cast to the source's schema, plus ``_source_file``.

    Each file's columns are checked first (parquet: its footer; CSV: its header; JSON
    lines: every line's keys), so the rules are the same for every format: a file missing
    a declared column is refused (:class:`SourceError`, naming the file and the columns);
    columns beyond the schema are reported and, by ``source.extra_columns``, ignored,
    kept as JSON in ``_rescued_data`` or refused (:class:`ConfigError`). Each file is cast
    to the declared types before the files are concatenated, so files that differ only in
    physical types (Int32 and Int64, ns and us, naive and UTC timestamps: naive is UTC)
    read together. ``_source_file`` holds the path relative to the landing folder.
    """
    import polars as pl

    source = _as_source(source, files.root)
    dtypes = polars_schema(source.schema)
    options = (storage or Storage()).polars(files.root)
    prefix = files.root.rstrip("/") + "/"
    rescue = source.extra_columns == "rescue"
    groups: dict[tuple, list[LandingFile]] = {}
    extras: dict[str, tuple[str, ...]] = {}
    missing: dict[str, list[str]] = {}
    schemas: dict[str, dict[str, pl.DataType]] = {}
    for file in files.files:
        columns = schemas[file.path] = _file_schema(file, options)
        lacking = [c for c in dtypes if c not in columns]
        if lacking:
            missing[file.name] = lacking
            continue
        extra = tuple(c for c in columns if c not in dtypes and c not in (SOURCE_FILE_COLUMN, RESCUED_COLUMN))
        if extra:
            extras[file.name] = extra
        # Files with the same format and physical schema are read by one scan.
        key = (file.format, file.compression, tuple(columns.items()) if file.format != "csv" else file.path)
        groups.setdefault(key, []).append(file)
    if missing:
        name, lacking = next(iter(missing.items()))
        others = f" ({len(missing) - 1} more file(s) lack declared columns)" if len(missing) > 1 else ""
        raise SourceError(
            f"landing file {name} cannot be read as {_format_of(files, name)} with the bronze schema: "
            f"it has no column {', '.join(lacking)}{others}",
            hint="fix or remove the file (or adjust medallion.source.schema), then run again",
        )
    if extras and source.extra_columns == "fail":
        name, extra = next(iter(extras.items()))
        raise ConfigError(
            f"landing file {name} has column(s) not in medallion.source.schema: {', '.join(extra)}"
            + (f" ({len(extras) - 1} more file(s) have extra columns)" if len(extras) > 1 else ""),
            hint="add them to the schema, remove the file, or set medallion.source.extra_columns to ignore or rescue",
        )
    frames = []
    for group in groups.values():
        columns = schemas[group[0].path]
        if group[0].format != "parquet":  # CSV and JSON lines are parsed straight into the declared types
            columns = {c: dtypes.get(c, t) for c, t in columns.items()}
        extra = [c for c in columns if c not in dtypes and c not in (SOURCE_FILE_COLUMN, RESCUED_COLUMN)]
        frame = _scan(group, dtypes, columns, extra if rescue else [], source, options)
        frames.append(_conform(frame, columns, dtypes, extra if rescue else None))
    schema = {**dtypes, SOURCE_FILE_COLUMN: pl.String(), **({RESCUED_COLUMN: pl.String()} if rescue else {})}
    if not frames:
        return LandingScan(pl.LazyFrame(schema=schema))
    frame = pl.concat(frames, how="vertical").with_columns(pl.col(SOURCE_FILE_COLUMN).str.strip_prefix(prefix))
    warnings = []
    if extras:
        what = f"kept as JSON in {RESCUED_COLUMN}" if rescue else "ignored"
        listed = [f"{name} ({', '.join(cols)})" for name, cols in extras.items()]
        warnings.append(f"column(s) not in medallion.source.schema {what}: {_short(listed)}")
    order = tuple(f.name for group in groups.values() for f in group)
    return LandingScan(frame, tuple(warnings), extras, order)


def _format_of(files: LandingFiles, name: str) -> str:
    for f in files.files:
        if f.name == name:
            return f.format + (f" ({f.compression})" if f.compression else "")
    return "a landing file"


def _file_schema(file: LandingFile, options: dict | None) -> dict[str, pl.DataType]:
    """The columns a file has, by name (cheap for parquet and CSV: footer or header only)."""
    import polars as pl

    try:
        if file.format == "parquet":
            return dict(pl.scan_parquet(file.path, storage_options=options).collect_schema())
        if file.format == "csv":
            return dict(pl.scan_csv(file.path, infer_schema=False, storage_options=options).collect_schema())
        return dict(pl.scan_ndjson(file.path, infer_schema_length=None, storage_options=options).collect_schema())
    except Exception as exc:  # polars raises several error types for unreadable files
        raise SourceError(
            f"landing file {file.name} cannot be read as {file.format}"
            f"{f' ({file.compression})' if file.compression else ''}: {_kind(exc)}",
            hint="fix or remove the file (or adjust medallion.source.schema), then run again",
        ) from None


def _kind(exc: BaseException) -> str:
    """The kind of a read error, never its text: polars quotes the offending data in its messages."""
    names = {
        "ComputeError": "malformed content",
        "NoDataError": "the file is empty",
        "SchemaError": "unexpected column types",
        "InvalidOperationError": "a value that does not convert to its declared type",
        "FileNotFoundError": "the file disappeared",
        "PermissionError": "permission denied",
        "OSError": "the file cannot be opened",
    }
    return names.get(type(exc).__name__, f"unreadable ({type(exc).__name__})")


def _scan(group: list[LandingFile], dtypes: dict[str, pl.DataType], columns: dict[str, pl.DataType],
          rescued: list[str], source: SourceConfig, options: dict | None) -> pl.LazyFrame:
    import polars as pl

    paths = [f.path for f in group]
    fmt = group[0].format
    if fmt == "csv":  # one scan per file: a multi-file CSV scan needs identical headers in every file
        nulls = [v for v in source.null_values if v != ""]
        return pl.scan_csv(paths[0], schema_overrides=dtypes, infer_schema=False, include_file_paths=SOURCE_FILE_COLUMN,
                           null_values=nulls or None, empty_string_is_null="" in source.null_values,
                           storage_options=options)
    if fmt == "ndjson":
        schema = {c: dtypes.get(c, columns[c]) for c in columns if c in dtypes or c in rescued}
        return pl.scan_ndjson(paths, schema=schema, include_file_paths=SOURCE_FILE_COLUMN, storage_options=options)
    return pl.scan_parquet(paths, include_file_paths=SOURCE_FILE_COLUMN, storage_options=options)


def _conform(frame: pl.LazyFrame, columns: dict[str, pl.DataType], dtypes: dict[str, pl.DataType],
             rescued: list[str] | None) -> pl.LazyFrame:
    """Select the declared columns cast to their declared types (plus ``_rescued_data``)."""
    import polars as pl

    exprs = [_cast(pl.col(c), columns[c], t).alias(c) for c, t in dtypes.items()]
    exprs.append(pl.col(SOURCE_FILE_COLUMN))
    if rescued is not None:
        if rescued:
            # Temporal and other non-JSON types as text; numbers and booleans stay JSON values.
            parts = [pl.col(c) if (columns[c].is_numeric() or columns[c] == pl.Boolean) else pl.col(c).cast(pl.String)
                     for c in rescued]
            present = pl.any_horizontal(*(pl.col(c).is_not_null() for c in rescued))
            exprs.append(pl.when(present).then(pl.struct(parts).struct.json_encode()).otherwise(None)
                         .cast(pl.String).alias(RESCUED_COLUMN))
        else:
            exprs.append(pl.lit(None, dtype=pl.String).alias(RESCUED_COLUMN))
    return frame.select(exprs)


def _cast(expr: pl.Expr, actual: pl.DataType, declared: pl.DataType) -> pl.Expr:
    import polars as pl

    if isinstance(declared, pl.Datetime) and isinstance(actual, pl.Datetime):
        # A naive timestamp is taken as UTC; an aware one is converted to UTC.
        expr = expr.dt.replace_time_zone("UTC") if actual.time_zone is None else expr.dt.convert_time_zone("UTC")
    return expr.cast(declared)


def diagnose_landing(files: LandingFiles, source: SourceConfig | dict[str, str],
                     storage: Storage | None = None) -> SourceError | None:
    """After a failed read, find the first landing file that cannot be read on its own.

    Called only on the error path: it reads each file in full, then each column of the
    failing file, to name the file, its format and the column, never a value from it.
    """
    import polars as pl

    source = _as_source(source, files.root)
    for file in files.files:
        frame = None
        try:
            frame = scan_landing(files.subset([file]), source, storage).frame
            frame.collect()
        except SourceError as exc:
            return exc
        except ConfigError:
            continue  # a policy refusal is raised when planning, not here
        except Exception as exc:  # polars raises several error types for bad files
            column = None
            for name in source.schema if frame is not None else ():
                try:
                    frame.select(pl.col(name)).collect()
                except Exception:
                    column = name
                    break
            fmt = file.format + (f" ({file.compression})" if file.compression else "")
            if column is not None:
                reason = f"column {column} has value(s) that do not convert to {source.schema[column]}"
            else:
                reason = _kind(exc)
            return SourceError(
                f"landing file {file.name} cannot be read as {fmt} with the bronze schema: {reason}",
                hint="fix or remove the file (or adjust medallion.source.schema), then run again",
            )
    return None
