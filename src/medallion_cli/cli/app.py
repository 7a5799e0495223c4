"""The root ``medallion`` app and the one place errors become exit codes."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated

import typer

from medallion_cli import __version__
from medallion_cli.cli import dag as dag_cmd
from medallion_cli.cli import deploy as deploy_cmd
from medallion_cli.cli import docs as docs_cmd
from medallion_cli.cli import init as init_cmd
from medallion_cli.cli import quality as quality_cmd
from medallion_cli.cli import run as run_cmd
from medallion_cli.cli import runs as runs_cmd
from medallion_cli.cli import table as table_cmd
from medallion_cli.cli import verify as verify_cmd
from medallion_cli.cli import watermark as watermark_cmd
from medallion_cli.cli.options import DebugOpt, ProjectOpt, State
from medallion_cli.errors import ExitCode, MedallionError

EPILOG = (
    "Exit codes: 0 ok · 1 run failed · 2 usage or configuration error · "
    "3 data-quality gate · 4 lock or concurrency conflict · 130 interrupted."
)

app = typer.Typer(
    name="medallion",
    help="Build and operate bronze → silver → gold lakehouse pipelines on Delta Lake.\n\n"
    "Start with `medallion init shop`, then `cd shop && medallion run all`.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("init", epilog=EPILOG)(init_cmd.init)
app.command("run", epilog=EPILOG)(run_cmd.run)
app.command("quality", epilog=EPILOG)(quality_cmd.quality)
app.command("check", epilog=EPILOG)(quality_cmd.check)
app.command("verify", epilog=EPILOG)(verify_cmd.verify)
app.command("dag", epilog=EPILOG)(dag_cmd.dag)
app.command("deploy", epilog=EPILOG)(deploy_cmd.deploy)
app.add_typer(watermark_cmd.app, name="watermark", epilog=EPILOG)
app.add_typer(runs_cmd.app, name="runs", epilog=EPILOG)
app.add_typer(docs_cmd.app, name="docs", epilog=EPILOG)
app.command("retry", epilog=EPILOG)(runs_cmd.retry)
for _name in ("tables", "history", "describe", "show", "diff", "restore", "vacuum", "optimize"):
    app.command(_name, epilog=EPILOG)(getattr(table_cmd, _name))


def _version(value: bool) -> None:
    if value:
        print(f"medallion {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    project_dir: ProjectOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Build and operate bronze → silver → gold lakehouse pipelines on Delta Lake."""
    # `medallion -C DIR --debug tables` as well as `medallion tables -C DIR --debug`
    State.project_dir = project_dir
    State.debug = State.debug or debug


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and convert errors to messages and exit codes.

    Everything the command writes to stdout and stderr (JSON, narration, warnings,
    ``--debug`` tracebacks) goes through a stream that masks secrets.
    """
    from medallion_cli.storage import ScrubbedStream

    real = sys.stdout, sys.stderr
    args = sys.argv[1:] if argv is None else argv
    State.argv = list(args)
    debug = "--debug" in args or os.environ.get("MEDALLION_DEBUG", "").lower() in ("1", "true", "t", "yes", "y", "on")
    with _native_stderr_hidden(enabled=not debug) as stderr:
        sys.stdout, sys.stderr = ScrubbedStream(real[0]), ScrubbedStream(stderr or real[1])
        try:
            _main(argv)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = real


def entry() -> None:
    """The ``medallion`` command (and ``python -m medallion_cli``): :func:`main`, then exit.

    The process is ending, so the garbage collector is told to skip everything loaded so
    far: interpreter shutdown otherwise traverses every object of the libraries a run
    imported (Hamilton, pandas, pandera), 0.2-0.4 s of every run. Objects are still
    released, files flushed and ``atexit`` handlers run. Not done by :func:`main`, which
    tests call in-process.
    """
    try:
        main()
    finally:
        import gc

        gc.freeze()


@contextlib.contextmanager
def _native_stderr_hidden(*, enabled: bool):
    """Keep what native code writes straight to file descriptor 2 (Rust panic messages and
    backtraces from delta-rs, polars, duckdb) off the terminal, unless ``--debug``.

    Python's own stderr moves to a duplicate of the descriptor, so medallion's messages
    still show; fd 2 itself points at a scratch file for the length of the command. Only
    done when sys.stderr really is fd 2 (not under a test's capture).
    """
    try:
        real_fd = sys.stderr.fileno() if enabled else -1
    except (AttributeError, OSError, ValueError):
        real_fd = -1
    if real_fd != 2:
        yield None
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    scratch = tempfile.TemporaryFile()
    os.dup2(scratch.fileno(), 2)
    stream = open(saved, "w", encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace",  # noqa: SIM115
                  buffering=1, closefd=False)
    try:
        yield stream
    finally:
        stream.flush()
        os.dup2(saved, 2)
        os.close(saved)
        scratch.close()


def _print_traceback(exc: BaseException) -> None:
    import traceback

    sys.stderr.write("".join(traceback.format_exception(exc)))


def _main(argv: list[str] | None) -> None:
    from typer.exceptions import Abort, Exit, TyperException

    State.project_dir = None
    try:
        code = app(args=argv, prog_name="medallion", standalone_mode=False)
        # Without standalone mode Typer turns Ctrl-C (and typer.Exit) into a returned exit
        # code instead of raising: a returned 130 was an interrupt, not a success.
        if isinstance(code, int) and not isinstance(code, bool) and code:
            if code == ExitCode.INTERRUPTED:
                print("Interrupted.", file=sys.stderr)
            sys.exit(code)
    except MedallionError as err:
        if State.debug:
            _print_traceback(err)
        from medallion_cli.storage import scrub

        err.message, err.hint = scrub(err.message), scrub(err.hint) if err.hint else err.hint
        out = State.get_output()
        out.error(err)
        result = getattr(err, "result", None)
        if result is not None and out.json_mode:
            out.json({**result.to_dict(), "error": err.to_dict()})
        sys.exit(int(err.exit_code))
    except Exit as exc:
        sys.exit(exc.exit_code)
    except Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except TyperException as exc:  # Typer's (vendored click's) usage errors
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(int(ExitCode.USAGE))
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:  # a bug: say so plainly, traceback only with --debug
        if State.debug:
            _print_traceback(exc)
        from medallion_cli.storage import classify_os_error, scrub

        known = classify_os_error(exc)  # disk full, read-only, permission denied: not a bug
        if known is not None:
            known.message, known.hint = scrub(known.message), scrub(known.hint or "")
            State.get_output().error(known)
            sys.exit(int(known.exit_code))

        print(f"error: unexpected {type(exc).__name__}: {scrub(str(exc))}", file=sys.stderr)
        print("  hint: this is a bug in medallion; rerun with --debug and report the traceback", file=sys.stderr)
        sys.exit(int(ExitCode.RUN_FAILED))
