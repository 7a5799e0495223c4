"""Options shared by every command, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from medallion_cli.output import Output

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of a table.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No narration on stderr (errors still print).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.", envvar="MEDALLION_DEBUG")]
ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-C", help="Project directory (default: found by walking up from the working directory).", show_default=False),
]


StorageOpt = Annotated[
    list[str] | None,
    typer.Option("--storage-option", help="Object-store option KEY=VALUE (e.g. AWS_ENDPOINT_URL=http://...). Repeatable.", show_default=False),
]


def project_dir_or_default(project_dir: Path | None) -> Path | None:
    """The command's ``-C DIR``, else the one given before the command (``medallion -C DIR tables``)."""
    return project_dir if project_dir is not None else State.project_dir


def load(project_dir: Path | None, storage_options: list[str] | None = None):
    """The project at or above ``project_dir``, with command-line storage options applied."""
    from medallion_cli.project import find_project_root, load_project

    return load_project(find_project_root(project_dir_or_default(project_dir)), storage_overrides=storage_options or [])


class State:
    """Per-invocation settings the error boundary in ``app.main`` needs."""

    debug: bool = False
    project_dir: Path | None = None  # -C/--project given before the command
    output: Output | None = None  # created by setup(); rich loads only when needed
    argv: list[str] = []  # the command line after `medallion`, for run records

    @classmethod
    def get_output(cls) -> Output:
        if cls.output is None:
            from medallion_cli.output import Output

            cls.output = Output()
        return cls.output


def setup(*, json_mode: bool = False, quiet: bool = False, debug: bool = False) -> Output:
    from medallion_cli.output import Output

    State.debug = State.debug or debug
    State.output = Output(quiet=quiet, json_mode=json_mode)
    return State.output


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking for confirmation.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the plan and change nothing.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="If a run (or another command) holds the table's layer, wait for it instead of failing.")]


def confirm(question: str, *, yes: bool) -> None:
    """Plan, show, confirm: ``--yes`` skips the question; no terminal and no ``--yes`` fails."""
    import sys

    from medallion_cli.errors import MedallionError, UsageError

    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("this changes state and needs confirmation, but there is no terminal to ask", hint="pass --yes")
    if not typer.confirm(question, default=False, err=True):
        raise MedallionError("cancelled: nothing was changed")
