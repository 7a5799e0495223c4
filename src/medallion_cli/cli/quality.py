"""``medallion quality`` and ``medallion check``."""

from __future__ import annotations

from typing import Annotated

import typer

from medallion_cli.cli.options import DebugOpt, JsonOpt, ProjectOpt, QuietOpt, StorageOpt, load, project_dir_or_default, setup


def quality(
    table: Annotated[str, typer.Argument(help="Table or layer whose quarantine to summarize (e.g. silver).", show_default=False)],
    run: Annotated[str | None, typer.Option("--run", help="Only rows quarantined by this run id.", show_default=False)] = None,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None, json_mode: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Summarize quarantined rows: counts per check and column, sample values, runs.

    Example: medallion quality silver --run 20261128T063400Z-3f9a1c --json
    """
    from medallion_cli.delta import resolve
    from medallion_cli.output import quality_tables
    from medallion_cli.quality import QUARANTINE_SUFFIX, summarize

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    project = load(project_dir, storage_option)
    name = table.removesuffix(QUARANTINE_SUFFIX)
    ref = resolve(name, project)
    target = ref.layer.target.table if ref.layer else ref.name
    doc = summarize(project.table_uri(target + QUARANTINE_SUFFIX), project.storage, table=target, run_id=run)
    if json_mode:
        out.json(doc)
    else:
        for t in quality_tables(doc):
            out.table(t)


def check(project_dir: ProjectOpt = None, json_mode: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """Validate the project without running it: configs, pipelines, DAG inputs, schemas. For CI.

    Example: medallion check && medallion run all
    """
    from medallion_cli.checks import check_project
    from medallion_cli.errors import ConfigError
    from medallion_cli.output import checks_table
    from medallion_cli.project import find_project_root

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    results = check_project(find_project_root(project_dir_or_default(project_dir)))
    failed = [r for r in results if not r.ok]
    if json_mode:
        out.json({"ok": not failed, "checks": [r.to_dict() for r in results]})
    else:
        out.table(checks_table(results))
    if failed:
        raise ConfigError(f"{len(failed)} of {len(results)} checks failed: {failed[0].message}",
                          hint="fix them, then run `medallion check` again")
