"""``medallion verify``: rebuild tables from scratch and compare them with the live ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medallion_cli.cli.options import DebugOpt, JsonOpt, ProjectOpt, QuietOpt, StorageOpt, load, setup


def verify(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="What to verify (default: all), selected as by `medallion run`: a table, a layer, "
                       "NAME+, +NAME, or <table>__quarantine; upstream tables are rebuilt too.",
                       show_default=False, metavar="SELECTOR..."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Leave out what this selector names (same grammar). Repeatable.",
                     show_default=False, metavar="SELECTOR"),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option("--tolerance", help="Relative tolerance for float columns: |a-b| <= tol * max(|a|, |b|)."),
    ] = 1e-9,
    scratch: Annotated[
        Path | None,
        typer.Option("--scratch", help="Folder for the scratch lake (default: the system temp folder).", show_default=False),
    ] = None,
    keep_scratch: Annotated[bool, typer.Option("--keep-scratch", help="Keep the scratch lake and print where it is.")] = False,
    examples: Annotated[int, typer.Option("--examples", min=0, help="Example rows per kind (missing, extra, changed) and table.")] = 5,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Recompute tables from the landing files in a scratch lake and compare with the live ones.

    Exit 0 when every table is equal, 3 when one differs. The live lake and state file are
    only read.

    Example: medallion verify silver --json · medallion verify silver_events+ --exclude gold ·
    medallion verify --tolerance 1e-6 --keep-scratch
    """
    from medallion_cli.errors import QualityError
    from medallion_cli.output import verify_tables
    from medallion_cli.verify import verify_project

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    project = load(project_dir, storage_option)

    def started(layer) -> None:
        name = layer.name if layer.name == layer.target.table else f"{layer.name} → {layer.target.table}"
        out.status("rebuild", f"{name} (scratch)")

    from medallion_cli.cli.runs import recorded

    # Recorded with its outcome: exit 3 (a table differs) is a failed verify.
    with recorded(project, "verify", options={"selectors": " ".join(names or []), "exclude": " ".join(exclude or [])}):
        result = verify_project(project, names or [], exclude=exclude or [], tolerance=tolerance, scratch_parent=scratch,
                                keep_scratch=keep_scratch, examples=examples, on_layer_start=started)
        if result.scratch:
            out.info(f"scratch lake kept in {result.scratch}")
        out.report(result.to_dict(), verify_tables(result))
        differing = result.differing
        if differing:
            first = differing[0]
            raise QualityError(
                f"{len(differing)} of {len(result.tables)} table(s) differ from a full recompute: {first.table} has "
                f"{first.missing:,} missing, {first.extra:,} extra, {first.changed:,} changed row(s)",
                hint="inspect the examples; `medallion run LAYER --full-refresh` rebuilds a table from the landing files",
            )
        out.status("equal", f"{len(result.tables)} table(s) equal a full recompute")
