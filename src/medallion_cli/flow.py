"""Run one layer's DAG through FlowerPower (Hamilton executes it), quietly.

FlowerPower's defaults do not suit a CLI: it retries any exception three times, logs
through loguru and Hamilton prints banners on failure. This module turns all of that off
and unwraps FlowerPower's ``RuntimeError`` so the real cause reaches the user.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from medallion_cli.errors import ConfigError, MedallionError, PipelineError, UsageError

T = TypeVar("T")

EXECUTORS = ("synchronous", "threadpool", "processpool")


def validate_executor(name: str | None) -> str | None:
    """Accept only executors FlowerPower really runs (it silently runs others locally)."""
    if name is None or name in EXECUTORS:
        return name
    raise UsageError(
        f"unknown executor {name!r}", hint=f"use one of: {', '.join(EXECUTORS)}"
    )


def _quiet_imports() -> None:
    os.environ.setdefault("HAMILTON_AUTOLOAD_EXTENSIONS", "0")
    os.environ.setdefault("FP_LOG_LEVEL", "CRITICAL")
    for name in ("hamilton", "flowerpower", "fsspeckit", "hamilton_sdk"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def load_flowerpower(root: Path) -> Any:
    """Load the FlowerPower project at ``root``."""
    _quiet_imports()
    from flowerpower.flowerpower import FlowerPowerProject
    from loguru import logger

    logger.disable("flowerpower")
    try:
        project = FlowerPowerProject.load(str(root), log_level="CRITICAL")
    except Exception as exc:  # FlowerPower raises bare exceptions for config problems
        raise PipelineError(
            f"FlowerPower could not load the project at {root}: {root_cause(exc)}",
            hint="check conf/project.yml and conf/pipelines/*.yml",
        ) from exc
    if project is None:
        raise PipelineError(f"FlowerPower found no project at {root}")
    return project


def run_dag(
    fp_project: Any,
    *,
    layer: str,
    output: str,
    inputs: dict[str, Any],
    executor: str | None,
    pipelines_dir: Path,
    adapters: dict[str, Any] | None = None,
) -> Any:
    """Execute ``layer``'s pipeline and return the value of its ``output`` node.

    ``adapters`` are Hamilton lifecycle adapters added to the run (FlowerPower's
    ``adapter=``), e.g. the Hamilton UI tracker of :mod:`medallion_cli.tracker`.
    """
    from loguru import logger

    kwargs: dict[str, Any] = {
        "inputs": inputs,
        "final_vars": [output],
        "max_retries": 0,
        "log_level": "CRITICAL",
        "reload": True,  # two projects in one process share module names
    }
    if executor:
        kwargs["executor_cfg"] = {"type": executor}
    if adapters:
        kwargs["adapter"] = adapters
    try:
        result = fp_project.run(layer, **kwargs)
    except SystemExit as exc:  # sys.exit() in pipeline code must not become medallion's exit code
        where = pipeline_frame(exc, pipelines_dir)
        raise PipelineError(
            f"layer {layer!r} failed: the pipeline called sys.exit({exc.code!r})",
            hint=(f"see {where}; " if where else f"check pipelines/{layer}.py; ")
            + "raise an exception instead to fail the layer",
        ) from exc
    except Exception as exc:
        cause = root_cause(exc)
        where = pipeline_frame(cause, pipelines_dir)
        raise PipelineError(
            f"layer {layer!r} failed: {type(cause).__name__}: {_first_line(cause)}",
            hint=(f"see {where}" if where else f"check pipelines/{layer}.py")
            + "; run with --debug for the traceback",
        ) from cause
    finally:
        logger.disable("flowerpower")  # every run() re-enables its loguru logger
    if output not in result:
        raise PipelineError(f"layer {layer!r} returned no {output!r} node")
    return result[output]


@dataclass(frozen=True)
class NodeRetry:
    """``medallion.retry`` of a pipeline: re-run its DAG (never a commit) when it raises one
    of ``retry_exceptions``, with exponential backoff and jitter. Absent: no retries."""

    max_attempts: int = 3
    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0
    retry_exceptions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "retry_exceptions": list(self.retry_exceptions)}


NODE_RETRY_KEYS = ("max_attempts", "initial_delay_s", "max_delay_s", "retry_exceptions")


def load_node_retry(value: Any, path: Path) -> NodeRetry | None:
    """Parse a pipeline's ``medallion.retry`` (ConfigError, exit 2, when it is wrong)."""
    if value is None:
        return None
    where = f"{path}: medallion.retry"
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping", hint="e.g. `retry: {max_attempts: 3, retry_exceptions: [ConnectionError]}`")
    unknown = sorted(set(value) - set(NODE_RETRY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}", hint=f"keys: {', '.join(NODE_RETRY_KEYS)}")
    names = value.get("retry_exceptions")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{where}.retry_exceptions must list the exception types to retry",
                          hint="e.g. [ConnectionError, TimeoutError, mypkg.errors.Flaky]; other errors fail at once")
    try:
        retry = NodeRetry(
            max_attempts=int(value.get("max_attempts", NodeRetry.max_attempts)),
            initial_delay_s=float(value.get("initial_delay_s", NodeRetry.initial_delay_s)),
            max_delay_s=float(value.get("max_delay_s", NodeRetry.max_delay_s)),
            retry_exceptions=tuple(n.strip() for n in names),
        )
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: max_attempts, initial_delay_s and max_delay_s must be numbers") from None
    if retry.max_attempts < 1 or retry.initial_delay_s < 0 or retry.max_delay_s < 0:
        raise ConfigError(f"{where} needs max_attempts >= 1 and delays >= 0")
    return retry


def resolve_exceptions(retry: NodeRetry, *, root: Path, where: str) -> tuple[type[BaseException], ...]:
    """The classes ``retry_exceptions`` names: a builtin (``ConnectionError``) or a dotted
    path importable from the project (``mypkg.errors.Flaky``)."""
    import builtins
    import importlib
    import sys

    found = []
    for name in retry.retry_exceptions:
        module, _, attr = name.rpartition(".")
        try:
            if not module:
                cls = getattr(builtins, name)
            elif module in sys.modules:  # imported already (tables of a run resolve from several threads)
                cls = getattr(sys.modules[module], attr)
            else:
                added = str(root) not in sys.path
                if added:
                    sys.path.insert(0, str(root))
                try:
                    cls = getattr(importlib.import_module(module), attr)
                finally:
                    if added:
                        sys.path.remove(str(root))
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{where}: medallion.retry.retry_exceptions: cannot find {name!r} ({exc})",
                              hint="name a builtin exception (ConnectionError) or a dotted path importable from the project") from None
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ConfigError(f"{where}: medallion.retry.retry_exceptions: {name!r} is not an exception class")
        found.append(cls)
    return tuple(found)


def with_retries(compute: Callable[[], T], retry: NodeRetry | None, *, root: Path, where: str, layer: str
                 ) -> tuple[T, int, list[str]]:
    """Run ``compute`` (a DAG execution, never a commit); with ``retry``, run it again when
    the error's cause is one of the listed exception types.

    Returns the value, the number of attempts and one warning per retried failure. The
    error of the last attempt is raised with ``attempts`` set on it.
    """
    if retry is None or retry.max_attempts == 1:
        try:
            return compute(), 1, []
        except MedallionError as err:
            err.attempts = 1  # type: ignore[attr-defined]
            raise
    from tenacity import Retrying, retry_if_exception, stop_after_attempt

    from medallion_cli.storage import backoff_wait

    classes = resolve_exceptions(retry, root=root, where=where)
    warnings: list[str] = []

    dotted = set(retry.retry_exceptions)

    def listed(exc: BaseException) -> bool:
        cause = exc.__cause__ if isinstance(exc, MedallionError) else None
        if cause is None:
            return False
        # by name too: a pipeline module reloaded for the run defines its classes anew
        return isinstance(cause, classes) or any(f"{c.__module__}.{c.__qualname__}" in dotted for c in type(cause).__mro__)

    def note(state: Any) -> None:
        exc = state.outcome.exception()
        warnings.append(f"attempt {state.attempt_number} of {retry.max_attempts} failed "
                        f"({type(exc.__cause__).__name__}: {_first_line(exc.__cause__)}); "
                        f"retried in {state.upcoming_sleep:.1f}s")

    retrying = Retrying(retry=retry_if_exception(listed), stop=stop_after_attempt(retry.max_attempts),
                        wait=backoff_wait(retry), before_sleep=note, reraise=True)
    try:
        value = retrying(compute)
    except MedallionError as err:
        attempts = retrying.statistics.get("attempt_number", 1)
        err.attempts = attempts  # type: ignore[attr-defined]
        if attempts > 1:
            err.message = err.message.replace(f"layer {layer!r} failed", f"layer {layer!r} failed after {attempts} attempts", 1)
        raise
    return value, retrying.statistics.get("attempt_number", 1), warnings


def root_cause(exc: BaseException) -> BaseException:
    """Follow ``__cause__`` through FlowerPower's RuntimeError wrappers to the real error."""
    seen = set()
    while exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    return exc


def pipeline_frame(exc: BaseException, pipelines_dir: Path) -> str | None:
    """``pipelines/x.py:LINE in func`` for the deepest frame inside the project's pipelines."""
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.parent.resolve() == pipelines_dir.resolve():
            found = f"{pipelines_dir.name}/{path.name}:{frame.lineno} in {frame.name}"
    return found


def _first_line(exc: BaseException) -> str:
    """The first line of the message; a line ending with ':' (Hamilton's "1 errors
    encountered:") is followed by the next ones, which carry the reason."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    out = lines[0]
    for line in lines[1:4]:
        if not out.endswith(":"):
            break
        out = f"{out} {line.removeprefix('Error: ')}"
    return out


def dag_inputs(module_path: Path) -> dict[str, Any]:
    """The external inputs of a pipeline module's DAG and their declared types."""
    _quiet_imports()
    from hamilton import driver

    from medallion_cli.project import import_file

    dr = driver.Builder().with_modules(import_file(module_path)).build()
    return {v.name: v.type for v in dr.list_available_variables() if v.is_external_input}


def input_type_ok(declared: Any, value: Any) -> bool:
    """Would Hamilton accept ``value`` for an input declared as ``declared``?"""
    import typing

    from hamilton import htypes

    if value is None:
        return True
    origin = typing.get_origin(declared)
    if origin in (list, tuple, set, frozenset, dict):  # Hamilton lets "purchase" pass for list[str]
        if not isinstance(value, origin):
            return False
        args = typing.get_args(declared)
        if args and origin in (list, set, frozenset) and not all(input_type_ok(args[0], v) for v in value):
            return False
    return htypes.check_input_type(declared, value)


def type_name(declared: Any) -> str:
    return declared.__name__ if isinstance(declared, type) and not typing_args(declared) else str(declared).replace("typing.", "")


def typing_args(declared: Any) -> tuple:
    import typing

    return typing.get_args(declared)
