"""``medallion init``: scaffold a project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medallion_cli.cli.options import DebugOpt, JsonOpt, QuietOpt, setup


def init(
    name: Annotated[str, typer.Argument(help="Project name; also the folder created (ASCII letters, digits, underscores; starts with a letter).")],
    template: Annotated[str, typer.Option("--template", "-t", help="Project kind to scaffold.")] = "events",
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty folder, overwriting template files.")] = False,
    sample_data: Annotated[bool, typer.Option("--sample-data/--no-sample-data", help="Include the sample landing files.")] = True,
    directory: Annotated[Path, typer.Option("--directory", "-d", help="Parent folder of the new project.")] = Path("."),
    storage: Annotated[str, typer.Option("--storage", help="Where the lake lives: local (./lake) or s3.")] = "local",
    bucket: Annotated[str | None, typer.Option("--bucket", help="S3 bucket of the lake (with --storage s3).", show_default=False)] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Key prefix in the bucket (default: the project name).")] = "",
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Create a runnable lakehouse project from a template.

    Example: medallion init shop && cd shop && medallion run all ·
    medallion init shop --storage s3 --bucket my-lake --prefix analytics/shop
    """
    from medallion_cli.scaffold import init_project

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    result = init_project(name, parent=directory, template=template, force=force, sample_data=sample_data,
                          storage=storage, bucket=bucket, prefix=prefix)
    for f in result.files:
        out.status(f.action, f.path)
    if json_mode:
        out.json(result.to_dict())
    try:
        where = result.root.relative_to(Path.cwd().resolve())
    except ValueError:
        where = result.root
    out.info(f"\nCreated project {result.name!r} in {where}. Next:\n\n  cd {where}\n  medallion run all\n")
