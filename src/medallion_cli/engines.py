"""Where work units run: ``local`` (the driver, one after another) or ``ray`` (Ray tasks).

With ``--engine ray`` (or ``medallion.engine: {type: ray, address: ...}`` in
``conf/project.yml``) the driver keeps what must happen once: the lock, the plan and the one
Delta commit. Each work unit (``units``) becomes a Ray task that reads its landing files,
runs the DAG, writes its Parquet file under the table root and returns a small
:class:`units.UnitOutput` (the uncommitted ``AddAction``, rows, schema). Nothing a task
writes is visible until the driver commits; files of failed or retried attempts are
removed by the driver and never committed.

Shared-path requirement (this first step): workers run on the machine, or machines, that see
the project folder, the landing folders and the lake at the same paths as the driver, with
``medallion_cli`` importable in the Ray workers' Python (start the cluster from the same
environment). Each task puts the project root on ``sys.path`` to import its pipeline modules.

Ray is an optional extra: ``pip install 'medallion-cli[ray]'``. Nothing here imports it at
module level, so ``medallion --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from medallion_cli.errors import ConfigError, PipelineError, UsageError

ENGINES = ("local", "ray")
INSTALL_HINT = "pip install 'medallion-cli[ray]'"
# A task whose worker process dies (killed, out of memory) runs again this many times.
DEFAULT_MAX_RETRIES = 3
_CONNECT = threading.Lock()


@dataclass(frozen=True)
class EngineConfig:
    """``type``: local or ray. ``address``: None (``RAY_ADDRESS`` if set, else a new local
    instance), ``local``, ``auto`` (a running cluster) or ``ray://host:10001``."""

    type: str = "local"
    address: str | None = None
    max_retries: int = DEFAULT_MAX_RETRIES


def parse_engine(value: Any, *, where: str) -> EngineConfig | None:
    """``medallion.engine`` of ``conf/project.yml``: a name or ``{type, address, max_retries}``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: medallion.engine must be a mapping", hint="e.g. `engine: {type: ray, address: auto}`")
    unknown = set(value) - {"type", "address", "max_retries"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in medallion.engine: {', '.join(sorted(unknown))}",
                          hint="known keys: type, address, max_retries")
    kind = value.get("type", "local")
    if kind not in ENGINES:
        raise ConfigError(f"{where}: medallion.engine.type must be one of {', '.join(ENGINES)}, got {kind!r}")
    address = value.get("address")
    if address is not None and not isinstance(address, str):
        raise ConfigError(f"{where}: medallion.engine.address must be a string (auto, local or ray://host:port)")
    retries = value.get("max_retries", DEFAULT_MAX_RETRIES)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigError(f"{where}: medallion.engine.max_retries must be an integer of at least 0, got {retries!r}")
    return EngineConfig(type=kind, address=address, max_retries=retries)


def resolve_engine(option: str | None, configured: EngineConfig | None) -> EngineConfig | None:
    """The run's engine: ``--engine`` wins over ``medallion.engine``; None is the local engine.
    Fails (exit 2) at once when Ray is asked for and not installed."""
    if option is not None:
        if option not in ENGINES:
            raise UsageError(f"unknown engine {option!r}", hint=f"--engine takes one of: {', '.join(ENGINES)}")
        engine = configured if configured is not None and configured.type == option else EngineConfig(type=option)
    else:
        engine = configured
    if engine is None or engine.type == "local":
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray, which is not installed", hint=INSTALL_HINT) from None
    return engine


def connect(engine: EngineConfig) -> Any:
    """Ray, initialized once per process: reuse a running connection, else connect to
    ``engine.address`` (or ``RAY_ADDRESS``), else start a local instance."""
    import ray

    with _CONNECT:  # two bronze tables of one run may start their units at once
        _connect(ray, engine)
    return ray


def _connect(ray: Any, engine: EngineConfig) -> None:
    if not ray.is_initialized():
        address = engine.address
        if address is None and not os.environ.get("RAY_ADDRESS"):
            address = "local"
        kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        if address == "local":
            kwargs["include_dashboard"] = False
        ray.init(address=address, **kwargs)
    _narration_to_stderr()


def _narration_to_stderr() -> None:
    """Ray's driver prints cluster errors ("(raylet) A worker died ...") to *stdout*, which
    is medallion's data stream (``--json``): send everything Ray prints to stderr instead.
    (Ray 2.60: ``listen_error_messages`` calls the module's ``print_to_stdstream``.)"""
    from ray._private import worker

    original = worker.print_to_stdstream
    if getattr(original, "_medallion", False):
        return

    def to_stderr(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return original({**data, "is_err": True}, *args, **kwargs)

    to_stderr._medallion = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


# -- in the worker -------------------------------------------------------------------------------
_FP: dict[str, Any] = {}  # per worker process: the FlowerPower project of each project root


def _unit_task(common: tuple[Any, ...], index: int, files: list[Any]) -> tuple[Any, int, list[str]]:
    """One unit in a Ray worker: compute it and write its file. Returns (UnitOutput, attempts,
    retry warnings)."""
    from medallion_cli import units
    from medallion_cli.flow import load_flowerpower
    from medallion_cli.runner import compute_unit

    project, layer, columns, file_times, started_at, inputs, executor, uri, run_id, exists = common
    root = str(project.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    if root not in _FP:
        _FP[root] = load_flowerpower(project.root)
    df, rows_in, tries, retried = compute_unit(project, _FP[root], layer, files, columns=columns, file_times=file_times,
                                               started_at=started_at, inputs=inputs, executor=executor)
    out = units.unit_output(df, rows_in, uri, layer.target, index=index, run_id=run_id, exists=exists,
                            storage=project.storage)
    return out, tries, retried


# -- on the driver -------------------------------------------------------------------------------
def ray_units(engine: EngineConfig, project: Any, layer: Any, batch: Sequence[Sequence[Any]], *, columns: Any,
              file_times: dict[str, int], started_at: datetime, inputs: dict[str, Any], executor: str | None,
              uri: str, run_id: str, exists: bool) -> Iterator[tuple[Any, int, list[str]]]:
    """Submit one Ray task per unit and yield ``(UnitOutput, attempts, warnings)`` in unit
    order. Closing the generator early (a failed unit) waits for the other tasks to end, so
    that no task writes a file after the driver removed the run's files."""
    ray = connect(engine)
    task = ray.remote(max_retries=engine.max_retries, retry_exceptions=False)(_unit_task)
    unit_inputs = {k: v for k, v in inputs.items() if k != layer.source.input_name}  # each unit scans its own files
    common = ray.put((project, layer, columns, file_times, started_at, unit_inputs, executor, uri, run_id, exists))
    refs = [task.remote(common, index, list(files)) for index, files in enumerate(batch)]
    try:
        for index, ref in enumerate(refs):
            try:
                yield ray.get(ref)
            except ray.exceptions.RayTaskError as err:
                cause = getattr(err, "cause", None)
                if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
                    raise cause from None
                raise PipelineError(f"unit {index} of {layer.target.table} failed in a Ray task: {err}") from err
            except ray.exceptions.RayError as err:  # worker died more than max_retries times, cluster gone
                raise PipelineError(f"unit {index} of {layer.target.table} failed in Ray: {type(err).__name__}",
                                    hint=f"the task ran {engine.max_retries + 1} time(s); nothing was committed") from err
    finally:
        # Wait for every task (they write files) before the driver removes this run's files.
        # Not ray.cancel: in Ray 2.60 cancelling a task as it completes aborts the driver
        # ("Tried to complete task that was not pending"), seen in tests/test_ray.py.
        ray.wait(refs, num_returns=len(refs))
