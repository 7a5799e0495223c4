"""Run one layer's DAG through FlowerPower (Hamilton executes it), quietly.

FlowerPower's defaults do not suit a CLI: it retries any exception three times, logs
through loguru and Hamilton prints banners on failure. This module turns all of that off
and unwraps FlowerPower's ``RuntimeError`` so the real cause reaches the user.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

from medallion_cli.errors import PipelineError, UsageError

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
    for name in ("hamilton", "flowerpower", "fsspeckit"):
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
) -> Any:
    """Execute ``layer``'s pipeline and return the value of its ``output`` node."""
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
