"""Where work units run: ``local`` (the driver, one after another) or ``ray`` (Ray tasks).

With ``--engine ray`` (or ``medallion.engine: {type: ray, address: ...}`` in
``conf/project.yml``) the driver keeps what must happen once: the lock, the plan and the one
Delta commit. Each work unit becomes a Ray task (:func:`run_tasks`) running the same unit
function the local engine runs in the driver: bronze's file units (:func:`files_unit`:
reads its landing files), silver's key buckets (``keyunits.compute_bucket``) and gold's
date ranges (``range_units.range_unit``) read their slice of the source (a lazy Delta scan
at the planned version), run the DAG, write their Parquet file under the table root (or a
key unit's staged file) and return a small picklable value (the uncommitted ``AddAction``,
rows, schema; a key unit also its quality counts and rejected rows). Nothing a task
writes is visible until the driver commits; files of failed or retried attempts are
removed by the driver and never committed (what a killed driver leaves is in no version:
``vacuum --full`` removes it). A worker that dies is re-run by Ray (``max_retries``); an
exception fails the run; an attempt longer than ``task_timeout_s`` is cancelled.

Workers need the project folder (pipeline modules) and local landing folders at the driver's
paths, and ``medallion_cli`` importable in their Python (start the cluster from the same
environment); each task puts the project root on ``sys.path``. An object-store lake and
landing folder (``s3://``) need no shared path: the storage options travel with the task,
and key units then stage their rows in the lake (``keyunits.RemoteStaging``).

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
# Test hooks (``runner._crash_point``) a unit's task obeys in its worker: the driver passes its
# own values with every task, since a worker's environment is the one its node started with.
# ``MEDALLION_TEST_ONCE_FILE``: the first attempt that reaches the hooked point creates that
# file and fires; attempts that find it skip the hook (a retry then succeeds).
HOOK_ENV = ("MEDALLION_TEST_CRASH_AT", "MEDALLION_TEST_FAIL_AT", "MEDALLION_TEST_PAUSE_AT", "MEDALLION_TEST_PAUSE_FILE",
            "MEDALLION_TEST_ONCE_FILE")
_CONNECT = threading.Lock()


@dataclass(frozen=True)
class EngineConfig:
    """``type``: local or ray. ``address``: None (``RAY_ADDRESS`` if set, else a new local
    instance), ``local``, ``auto`` (a running cluster) or ``ray://host:10001``."""

    type: str = "local"
    address: str | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    # A unit's task running longer than this (seconds, per attempt) is cancelled and fails the
    # run; None: no limit (units of one table can legitimately take long).
    task_timeout_s: float | None = None


def parse_engine(value: Any, *, where: str) -> EngineConfig | None:
    """``medallion.engine`` of ``conf/project.yml``: a name or ``{type, address, max_retries,
    task_timeout_s}``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: medallion.engine must be a mapping", hint="e.g. `engine: {type: ray, address: auto}`")
    unknown = set(value) - {"type", "address", "max_retries", "task_timeout_s"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in medallion.engine: {', '.join(sorted(unknown))}",
                          hint="known keys: type, address, max_retries, task_timeout_s")
    kind = value.get("type", "local")
    if kind not in ENGINES:
        raise ConfigError(f"{where}: medallion.engine.type must be one of {', '.join(ENGINES)}, got {kind!r}")
    address = value.get("address")
    if address is not None and not isinstance(address, str):
        raise ConfigError(f"{where}: medallion.engine.address must be a string (auto, local or ray://host:port)")
    retries = value.get("max_retries", DEFAULT_MAX_RETRIES)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigError(f"{where}: medallion.engine.max_retries must be an integer of at least 0, got {retries!r}")
    timeout = value.get("task_timeout_s")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
        raise ConfigError(f"{where}: medallion.engine.task_timeout_s must be a number of seconds above 0 (or null), "
                          f"got {timeout!r}")
    return EngineConfig(type=kind, address=address, max_retries=retries,
                        task_timeout_s=float(timeout) if timeout is not None else None)


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
        shown = address or os.environ.get("RAY_ADDRESS", "")
        _probe(shown)
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every way of not getting a Ray is one line
            raise _connect_error(exc, shown) from exc
    _narration_to_stderr()


PROBE_TIMEOUT_S = 5.0


def _probe(address: str) -> None:
    """Fail at once when a cluster's ``host:port`` does not accept connections: Ray 2.60's
    ``ray.init`` keeps retrying an unreachable GCS for minutes (measured: over 200 s)."""
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return  # local, auto: Ray finds (or starts) the instance itself
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise PipelineError(f"cannot connect to Ray at {address}: {exc.strerror or exc}",
                            hint="start the cluster (`ray start --head`), or fix medallion.engine.address / "
                                 "RAY_ADDRESS; nothing was run") from None


def _connect_error(exc: BaseException, address: str) -> Exception:
    """A failed ``ray.init`` as medallion's error: a refused token is configuration (exit 2),
    a cluster that cannot be reached is a failed run (exit 1), as for the tracker."""
    from ray.exceptions import AuthenticationError

    reason = _first_sentence(" ".join(str(exc).split())) or type(exc).__name__
    where = f"Ray at {address}" if address and address != "local" else "a local Ray"
    if isinstance(exc, AuthenticationError):
        return ConfigError(f"cannot connect to {where}: {reason}",
                           hint="the cluster uses token authentication: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) "
                                "to its token (`ray get-auth-token` on the head node)")
    return PipelineError(f"cannot connect to {where}: {reason}",
                         hint="start the cluster (`ray start --head`), or fix medallion.engine.address / RAY_ADDRESS; "
                              "nothing was run")


def _narration_to_stderr() -> None:
    """Ray's driver prints cluster errors ("(raylet) A worker died ...") to *stdout*, which
    is medallion's data stream (``--json``): send everything Ray prints to stderr instead, each
    message cut to its first sentence (a worker's death is a dozen lines of advice; medallion's
    own error says what failed). (Ray 2.60: ``listen_error_messages`` calls the module's
    ``print_to_stdstream``.)"""
    from ray._private import worker

    original = worker.print_to_stdstream
    if getattr(original, "_medallion", False):
        return

    def to_stderr(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        lines = data.get("lines") or []
        if data.get("pid") == "raylet" and lines:
            lines = [_first_sentence(str(lines[0]))]
        return original({**data, "lines": lines, "is_err": True}, *args, **kwargs)

    to_stderr._medallion = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _first_sentence(text: str) -> str:
    line = text.strip().split("\n", 1)[0]
    head, dot, _rest = line.partition(". ")
    return head + dot.strip()


# -- in the worker -------------------------------------------------------------------------------
_FP: dict[str, Any] = {}  # per worker process: the FlowerPower project of each project root


def _set_hooks(hooks: dict[str, str]) -> None:
    """The driver's test hooks for this task (workers are reused: clear the ones it has not)."""
    for name in HOOK_ENV:
        if name in hooks:
            os.environ[name] = hooks[name]
        else:
            os.environ.pop(name, None)


def _hook(layer: Any, point: str) -> None:
    """``runner._crash_point`` in a worker, once per run with ``MEDALLION_TEST_ONCE_FILE``."""
    from medallion_cli.runner import _crash_point

    here = f"{layer.name}:{point}"
    once = os.environ.get("MEDALLION_TEST_ONCE_FILE")
    hooked = [os.environ.get(name, "").partition("=")[0] for name in HOOK_ENV[:3]]
    if here not in hooked:
        return
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    _crash_point(layer, point)


def _unit_task(work: Any, common: tuple[Any, ...], index: int, unit: Any, hooks: dict[str, str], clock: Any = None
               ) -> tuple[Any, int, list[str], str, int]:
    """One unit in a Ray worker: ``work(fp_project, project, layer, shared, index, unit)``
    computes it and writes its file. Returns (its output, attempts, retry warnings, the node
    it ran on, the transient storage faults it retried). ``common``: ``(project, layer,
    shared)``, the same for every unit of the table. ``clock``: the run's :class:`_Clock`
    actor (with a task timeout), told when this attempt starts."""
    import ray

    from medallion_cli.flow import load_flowerpower

    if clock is not None:
        clock.start.remote(index)
    project, layer, shared = common
    _set_hooks(hooks)
    _hook(layer, "unit_started")
    root = str(project.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    if root not in _FP:
        _FP[root] = load_flowerpower(project.root)
    storage = project.storage
    before = storage.retries if storage is not None else 0
    out, tries, retried = work(_FP[root], project, layer, shared, index, unit)
    _hook(layer, "unit_file_written")  # the file is written, the driver has not heard of it
    storage_retries = (storage.retries - before) if storage is not None else 0
    return out, tries, retried, ray.get_runtime_context().get_node_id(), storage_retries


def files_unit(fp_project: Any, project: Any, layer: Any, shared: tuple[Any, ...], index: int, files: list[Any]
               ) -> tuple[Any, int, list[str]]:
    """A bronze unit (its landing ``files``): ``runner.compute_unit`` and its Parquet file."""
    from medallion_cli import units
    from medallion_cli.runner import compute_unit

    columns, file_times, started_at, inputs, executor, uri, run_id, exists = shared
    df, rows_in, tries, retried = compute_unit(project, fp_project, layer, files, columns=columns,
                                               file_times=file_times, started_at=started_at, inputs=inputs,
                                               executor=executor)
    out = units.unit_output(df, rows_in, uri, layer.target, index=index, run_id=run_id, exists=exists,
                            storage=project.storage)
    return out, tries, retried


# -- on the driver -------------------------------------------------------------------------------
POLL_S = 0.5  # how often the driver looks for tasks past task_timeout_s


class _Clock:
    """A Ray actor (no CPU) that notes when each unit's attempt started, on its own clock:
    Ray does not tell a driver when a queued task starts running, and the nodes' clocks
    may differ."""

    def __init__(self) -> None:
        import time

        self._time = time.monotonic
        self.started: dict[int, float] = {}

    def start(self, index: int) -> None:
        self.started[index] = self._time()  # a retry starts its own timeout

    def running_for(self) -> dict[int, float]:
        now = self._time()
        return {index: now - at for index, at in self.started.items()}


def ray_units(engine: EngineConfig, project: Any, layer: Any, batch: Sequence[Sequence[Any]], *, columns: Any,
              file_times: dict[str, int], started_at: datetime, inputs: dict[str, Any], executor: str | None,
              uri: str, run_id: str, exists: bool, placed: dict[int, str] | None = None
              ) -> Iterator[tuple[Any, int, list[str]]]:
    """Bronze's units (``batch``: each unit's landing files) as Ray tasks: :func:`run_tasks`
    with :func:`files_unit`."""
    unit_inputs = {k: v for k, v in inputs.items() if k != layer.source.input_name}  # each unit scans its own files
    shared = (columns, file_times, started_at, unit_inputs, executor, uri, run_id, exists)
    return run_tasks(engine, project, layer, files_unit, shared, [list(files) for files in batch], placed=placed)


def run_tasks(engine: EngineConfig, project: Any, layer: Any, work: Any, shared: Any, units: Sequence[Any], *,
              placed: dict[int, str] | None = None) -> Iterator[tuple[Any, int, list[str]]]:
    """Submit one Ray task per unit and yield ``(output, attempts, warnings)`` in unit
    order; ``placed`` (when given) gets the Ray node id each unit ran on. Closing the generator
    early (a failed unit) waits for the other tasks to end, so that no task writes a file
    after the driver removed the run's files.

    ``work``: a module-level function ``work(fp_project, project, layer, shared, index, unit)``
    that computes one unit wherever it runs (the local engine calls the same function in the
    driver) and returns ``(output, attempts, warnings)``; ``shared`` and each of ``units``
    must be picklable (frames as lazy scans: each task reads its own slice).

    Tasks are spread over the cluster's nodes (``SPREAD``): units are alike and read and write
    their own files, so spreading them spreads the I/O and the memory. The project (with its
    storage options, credentials included) reaches the workers through Ray's object store,
    never through a log or a task's name. With ``engine.task_timeout_s``, an attempt running
    longer is cancelled (its worker killed) and the run fails; the other tasks still running
    are cancelled too, since nothing of the run will be committed.
    """
    ray = connect(engine)
    task = ray.remote(max_retries=engine.max_retries, retry_exceptions=False, scheduling_strategy="SPREAD")(_unit_task)
    common = ray.put((project, layer, shared))
    hooks = {name: os.environ[name] for name in HOOK_ENV if name in os.environ}
    clock = ray.remote(num_cpus=0)(_Clock).remote() if engine.task_timeout_s is not None else None
    refs = [task.remote(work, common, index, unit, hooks, clock) for index, unit in enumerate(units)]
    timed_out = False
    try:
        for index, ref in enumerate(refs):
            if clock is not None:
                _wait_or_cancel(ray, refs, index, clock, engine.task_timeout_s)
            try:
                out, tries, retried, node, storage_retries = ray.get(ref)
            except ray.exceptions.RayTaskError as err:
                cause = getattr(err, "cause", None)
                if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
                    raise cause from None
                raise PipelineError(f"unit {index} of {layer.target.table} failed in a Ray task: {err}") from err
            except ray.exceptions.RayError as err:  # worker died more than max_retries times, cluster gone
                raise PipelineError(f"unit {index} of {layer.target.table} failed in Ray: {type(err).__name__}",
                                    hint=f"the task ran {engine.max_retries + 1} time(s); nothing was committed") from err
            if placed is not None:
                placed[index] = node
            if storage_retries and project.storage is not None:  # the run document counts them
                project.storage.retries += storage_retries
            yield out, tries, retried
    except _TimedOut as late:
        timed_out = True
        raise PipelineError(
            f"unit {late.index} of {layer.target.table} ran longer than medallion.engine.task_timeout_s "
            f"({engine.task_timeout_s:g} s): its task was cancelled and nothing was committed",
            hint="see the worker's log for where it hung, or raise task_timeout_s if units are this slow") from None
    finally:
        # Wait for every task (they write files) before the driver removes this run's files.
        # Cancelled only after a timeout: in Ray 2.60 cancelling a task as it completes can
        # abort the driver ("Tried to complete task that was not pending").
        if timed_out:
            for ref in ray.wait(refs, num_returns=len(refs), timeout=0)[1]:
                ray.cancel(ref, force=True)
        ray.wait(refs, num_returns=len(refs))
        if clock is not None:
            ray.kill(clock)


class _TimedOut(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _wait_or_cancel(ray: Any, refs: list[Any], index: int, clock: Any, timeout: float) -> None:
    """Wait for unit ``index``; meanwhile cancel (force: its worker is killed) any unit whose
    attempt has run longer than ``timeout`` and raise :class:`_TimedOut`."""
    while not ray.wait([refs[index]], timeout=POLL_S)[0]:
        running = ray.get(clock.running_for.remote())
        late = sorted(i for i, seconds in running.items() if seconds > timeout and not ray.wait([refs[i]], timeout=0)[0])
        if late:
            for i in late:
                ray.cancel(refs[i], force=True)
            raise _TimedOut(late[0])
