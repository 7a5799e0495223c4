"""``medallion deploy``: write the files that run the project on a schedule."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from medallion_cli.cli.options import DebugOpt, DryRunOpt, JsonOpt, ProjectOpt, QuietOpt, load, setup


class Target(str, Enum):
    cron = "cron"
    systemd = "systemd"
    docker = "docker"
    github_actions = "github-actions"


def deploy(
    target: Annotated[Target, typer.Argument(help="cron, systemd, docker or github-actions.", case_sensitive=False)],
    schedule: Annotated[
        str | None,
        typer.Option("--schedule", help="Cron expression: minute hour day month weekday, or @hourly/@daily/... "
                     "(default '0 * * * *', hourly).", show_default=False),
    ] = None,
    on_calendar: Annotated[
        str | None,
        typer.Option("--on-calendar", help="systemd: an OnCalendar= expression used as it is instead of converting "
                     "--schedule (e.g. 'Mon..Fri *-*-* 06:00:00').", show_default=False),
    ] = None,
    selection: Annotated[
        str,
        typer.Option("--selection", help="What the scheduled run runs: selectors as for `medallion run`, "
                     "space-separated (e.g. 'silver_events+').", metavar="SELECTORS"),
    ] = "all",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Folder to write to (default: deploy/ for cron and systemd, the project "
                     "for docker, .github/workflows/ of the repository for github-actions).", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that exist with other content.")] = False,
    dry_run: DryRunOpt = False,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write ready-to-use files that run the project on a schedule: a crontab line, a systemd
    service + timer, a Dockerfile + .dockerignore, or a GitHub Actions workflow.

    Secrets are never written into the files: they name the environment variables the
    project reads. Existing files with other content are left alone unless --force;
    --dry-run prints the files on stdout and writes nothing.

    Example: medallion deploy cron --schedule '*/15 * * * *' ·
    medallion deploy systemd --schedule '30 2 * * 1-5' · medallion deploy docker ·
    medallion deploy github-actions --selection 'silver gold'
    """
    from medallion_cli.deploy import apply_deploy, plan_deploy

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    project = load(project_dir)
    plan = plan_deploy(project, target.value, schedule=schedule, on_calendar=on_calendar,
                       selection=selection.split(), output=output.absolute() if output else None)
    if dry_run:
        for f in plan.files:
            out.status("skip" if f.action == "identical" else "would " + ("overwrite" if f.action == "conflict" else "create"),
                       _shown(f.path))
        if json_mode:
            out.json(plan.to_dict())
        else:
            for f in plan.files:
                out.text(f"# ---- {_shown(f.path)}\n{f.content}")
        return
    result = apply_deploy(plan, force=force)
    for f in result.files:
        out.status(f.action, _shown(f.path))
    for note in result.notes:
        out.warn(note)
    if result.schedule:
        out.info(f"schedule: {result.schedule}" + (f" (OnCalendar={result.on_calendar})" if result.on_calendar else ""))
    if json_mode:
        out.json(result.to_dict())


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
