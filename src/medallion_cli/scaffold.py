"""Scaffold a new project from the templates shipped with medallion.

Templates live in ``templates/<kind>/`` (inside the wheel as ``medallion_cli/templates``).
Files ending in ``.jinja`` are rendered with Jinja2 and lose the suffix; a leading
``dot-`` in a name becomes ``.``; everything else is copied byte for byte. Generation is
all-or-nothing: on failure every file and folder it created is removed again.
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medallion_cli import __version__
from medallion_cli.errors import ScaffoldError

SAMPLE_DATA_DIR = PurePosixPath("data/landing")
SAMPLE_MTIME = 1704067200  # 2024-01-01T00:00:00Z, the sample data's first day
_SKIP = {"__pycache__", ".pytest_cache"}


def _is_sample(dest: PurePosixPath) -> bool:
    """A sample landing file (under data/landing/, any feed's folder), not a .gitkeep."""
    return SAMPLE_DATA_DIR in dest.parents and not dest.name.startswith(".")


@dataclass(frozen=True)
class FileAction:
    """One file of a scaffold: its path in the project and what happened to it."""

    path: str
    action: str  # create | overwrite | identical

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "action": self.action}


@dataclass(frozen=True)
class ScaffoldResult:
    """A generated project."""

    root: Path
    name: str
    template: str
    files: tuple[FileAction, ...]

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "name": self.name,
            "template": self.template,
            "files": [f.to_dict() for f in self.files],
        }


def templates_dir() -> Path:
    """The templates folder: inside the installed package, or at the repository root."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parents[1] / "templates"):
        if candidate.is_dir():
            return candidate
    raise ScaffoldError("medallion's templates are missing from this installation", hint="reinstall medallion")


def available_templates() -> list[str]:
    return sorted(p.name for p in templates_dir().iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


# The name becomes `project.name` in pyproject.toml (a PEP 508 name: ASCII, starting and
# ending with a letter or digit), FlowerPower's project name and a Python identifier: the
# intersection is ASCII letters, digits and underscores, starting with a letter and not
# ending with an underscore. `café` passes str.isidentifier() but breaks any build of the
# project (pip: "`project.name` must be pep508-identifier").
_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$")


def validate_name(name: str) -> None:
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"project name {name!r} is not a valid name",
            hint="use ASCII letters, digits and underscores, starting with a letter and not ending with an "
            "underscore (e.g. shop or sales_2024); it becomes the Python project name",
        )


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _check_storage(storage: str, bucket: str | None, prefix: str, name: str) -> str:
    """Validate the lake location; returns the prefix normalized to ``a/b/`` (or '')."""
    if storage not in ("local", "s3"):
        raise ScaffoldError(f"unknown storage {storage!r}", hint="use local or s3")
    if storage == "local":
        if bucket:
            raise ScaffoldError("--bucket needs --storage s3")
        return ""
    if not bucket:
        raise ScaffoldError("--storage s3 needs --bucket NAME")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ScaffoldError(f"{bucket!r} is not a valid S3 bucket name", hint="3-63 lowercase letters, digits, dots or hyphens")
    prefix = (prefix or name).strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) or any(c in prefix for c in " \\{}"):
        raise ScaffoldError(f"{prefix!r} is not a usable key prefix", hint="e.g. --prefix analytics/shop")
    return prefix + "/"


def _check_lake_path(root: Path) -> None:
    """Refuse, before creating anything, a folder whose local Delta tables delta-rs could not read back."""
    from medallion_cli.errors import ConfigError
    from medallion_cli.storage import check_local_path

    try:
        check_local_path(str(root / "lake"))
    except ConfigError:
        raise ScaffoldError(
            f"the project folder {root} contains a '%' followed by two hex digits (such as %20), which delta-rs "
            "decodes as a URL escape: the project's Delta tables could not be read back",
            hint="create the project in another folder (spaces, accents and other '%' signs are fine), or use --storage s3",
        ) from None


def plan(template: str, *, sample_data: bool = True) -> list[tuple[PurePosixPath, Path]]:
    """(destination in the project, template source file) for every file of ``template``."""
    kinds = available_templates()
    if template not in kinds:
        raise ScaffoldError(f"unknown template {template!r}", hint=f"available: {', '.join(kinds)}")
    src_root = templates_dir() / template
    files = []
    for src in sorted(src_root.rglob("*")):
        rel = src.relative_to(src_root)
        if src.is_dir() or _SKIP.intersection(rel.parts) or src.suffix == ".pyc":
            continue
        dest = PurePosixPath(*(_dest_name(part) for part in rel.parts))
        if not sample_data and _is_sample(dest):
            continue
        files.append((dest, src))
    return files


def _dest_name(part: str) -> str:
    if part.startswith("dot-"):
        part = "." + part[4:]
    return part[: -len(".jinja")] if part.endswith(".jinja") else part


def render(src: Path, context: dict[str, str]) -> bytes:
    if src.suffix != ".jinja":
        return src.read_bytes()
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(src.read_text(encoding="utf-8")).render(**context).encode("utf-8")


def init_project(
    name: str,
    *,
    parent: Path,
    template: str = "events",
    force: bool = False,
    sample_data: bool = True,
    storage: str = "local",
    bucket: str | None = None,
    prefix: str = "",
) -> ScaffoldResult:
    """Create project ``name`` in ``parent/name`` from ``template``.

    Refuses a non-empty target unless ``force`` (then differing files are overwritten and
    other files left alone). On any failure, what this call created is removed.
    """
    validate_name(name)
    prefix = _check_storage(storage, bucket, prefix, name)
    parent = parent.resolve()
    root = (parent / name).resolve()
    if root.parent != parent:
        raise ScaffoldError(f"project name {name!r} escapes {parent}")
    if storage == "local":
        _check_lake_path(root)
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"{root} exists and is not a directory", hint="choose another name")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ScaffoldError(
            f"{root} is not empty",
            hint="choose another name, empty the folder, or pass --force to overwrite template files",
        )
    files = plan(template, sample_data=sample_data)
    context = {"project_name": name, "medallion_version": __version__, "template": template,
               "storage": storage, "bucket": bucket or "", "prefix": prefix}

    created_dirs: list[Path] = []
    created_files: list[Path] = []
    actions: list[FileAction] = []
    try:
        for dest, src in files:
            target = root.joinpath(*dest.parts)
            for folder in reversed([target.parent, *target.parent.parents]):
                if not folder.exists():
                    folder.mkdir()
                    created_dirs.append(folder)
            content = render(src, context)
            if target.exists():
                if target.read_bytes() == content:
                    actions.append(FileAction(str(dest), "identical"))
                    continue
                target.write_bytes(content)
                actions.append(FileAction(str(dest), "overwrite"))
            else:
                target.write_bytes(content)
                created_files.append(target)
                actions.append(FileAction(str(dest), "create"))
            shutil.copymode(src, target)
            if _is_sample(dest):
                # Old enough for any settle rule (medallion.source.settle.min_age): the samples are complete.
                os.utime(target, (SAMPLE_MTIME, SAMPLE_MTIME))
    except BaseException as exc:
        for path in reversed(created_files):
            path.unlink(missing_ok=True)
        for folder in reversed(created_dirs):
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, ScaffoldError):
            raise
        if isinstance(exc, OSError):
            raise ScaffoldError(f"could not create {root}: {exc.strerror or exc}", hint="check permissions and free space") from exc
        raise
    return ScaffoldResult(root=root, name=name, template=template, files=tuple(actions))
