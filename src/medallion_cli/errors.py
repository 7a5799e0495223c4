"""One error hierarchy for the whole library, each error carrying its exit code.

The CLI turns a :class:`MedallionError` into one line on stderr (plus a hint) and the
exit code below, in exactly one place (``cli.app.main``). Any other exception is a bug
and exits with ``ExitCode.RUN_FAILED`` and a short message (traceback with ``--debug``).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of the ``medallion`` command."""

    OK = 0
    RUN_FAILED = 1  # a pipeline, storage or other runtime failure
    USAGE = 2  # bad arguments, project or configuration
    QUALITY = 3  # a data-quality gate stopped the run
    CONFLICT = 4  # a lock or concurrency conflict
    INTERRUPTED = 130  # Ctrl-C / SIGINT


class MedallionError(Exception):
    """Base error: a message saying what is wrong and a hint saying how to fix it."""

    exit_code: ExitCode = ExitCode.RUN_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "exit_code": int(self.exit_code),
        }


class UsageError(MedallionError):
    """Bad command-line arguments."""

    exit_code = ExitCode.USAGE


class ConfigError(MedallionError):
    """A project or configuration file that is missing or invalid."""

    exit_code = ExitCode.USAGE


class ProjectNotFoundError(ConfigError):
    """No medallion project at or above the given directory."""


class ScaffoldError(UsageError):
    """``medallion init`` cannot create the project as asked."""


class PipelineError(MedallionError):
    """A layer's pipeline (the FlowerPower/Hamilton DAG) failed."""


class SourceError(MedallionError):
    """A layer's input (landing files or upstream table) is missing or unreadable."""


class MaterializeError(MedallionError):
    """Writing a layer's output to its Delta table failed or was refused."""


class QualityError(MedallionError):
    """A data-quality gate stopped the run."""

    exit_code = ExitCode.QUALITY


class ConflictError(MedallionError):
    """Another run holds a lock, or a concurrent commit won."""

    exit_code = ExitCode.CONFLICT
