"""Run a graph of tasks, independent ones on a thread pool.

A task starts once every parent it has in the graph succeeded; a failed task skips its
descendants only, so independent branches still run. With ``fail_fast`` the first failure
stops new tasks from starting (running ones finish). Callbacks are called from the calling
thread only, one at a time. Knows nothing of tables: :func:`runner.run_project` gives it
table names, their selected parents and a function that runs one table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DONE, FAILED, SKIPPED = "done", "failed", "skipped"


def default_threads() -> int:
    """Tables run at once by default: one per core, at most 4 (each table's polars and
    delta-rs work is multi-threaded already)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Outcome:
    """How one task ended."""

    name: str
    status: str  # done | failed | skipped
    value: Any = None  # done: what the task returned
    error: BaseException | None = None  # failed: the exception it raised
    blocked_by: tuple[str, ...] = ()  # skipped: failed tasks upstream (or, with fail_fast, the first failure)
    fail_fast: bool = False  # skipped because fail_fast stopped the run, not because of an upstream failure
    duration_s: float = 0.0


def run_graph(
    order: Sequence[str],
    parents: Mapping[str, Iterable[str]],
    work: Callable[[str], Any],
    *,
    threads: int = 1,
    fail_fast: bool = False,
    failure: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``work(name)`` for every name of ``order`` (a topological order) and return the
    outcomes in that order.

    Args:
        parents: each name's parents; names that are not in ``order`` are ignored (not
            selected: they count as done).
        threads: tasks running at once; ``1`` runs them one after another in ``order``, in
            the calling thread.
        failure: exceptions that fail a task (its descendants are skipped). Any other
            exception (a bug, ``KeyboardInterrupt``) stops scheduling, lets running tasks
            finish and is raised.
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    selected = set(order)
    deps = {name: tuple(p for p in dict.fromkeys(parents.get(name, ())) if p in selected) for name in order}
    outcomes: dict[str, Outcome] = {}
    stopped: list[str] = []  # with fail_fast: the failure that stopped the run

    def finish(outcome: Outcome) -> None:
        outcomes[outcome.name] = outcome
        if outcome.status == FAILED and fail_fast and not stopped:
            stopped.append(outcome.name)
        if on_done:
            on_done(outcome)

    def blockers(name: str) -> tuple[str, ...]:
        """The failed tasks upstream of ``name`` (through skipped ones), in order."""
        found: dict[str, None] = {}
        for p in deps[name]:
            o = outcomes.get(p)
            if o is not None and o.status == FAILED:
                found[p] = None
            elif o is not None and o.status == SKIPPED and not o.fail_fast:
                found.update(dict.fromkeys(o.blocked_by))
        return tuple(found)

    def skip_or_none(name: str) -> Outcome | None:
        blocked = blockers(name)
        if blocked:
            return Outcome(name, SKIPPED, blocked_by=blocked)
        if stopped:
            return Outcome(name, SKIPPED, blocked_by=tuple(stopped), fail_fast=True)
        return None

    def call(name: str) -> Outcome:
        t0 = time.perf_counter()
        try:
            value = work(name)
        except failure as exc:
            return Outcome(name, FAILED, error=exc, duration_s=time.perf_counter() - t0)
        return Outcome(name, DONE, value=value, duration_s=time.perf_counter() - t0)

    if threads == 1 or len(order) <= 1:
        for name in order:
            outcome = skip_or_none(name)
            if outcome is None:
                if on_start:
                    on_start(name)
                outcome = call(name)
            finish(outcome)
        return [outcomes[name] for name in order]

    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    pending = list(order)
    running: dict[Any, str] = {}
    crash: BaseException | None = None
    position = {name: i for i, name in enumerate(order)}
    with ThreadPoolExecutor(max_workers=min(threads, len(order)), thread_name_prefix="medallion-table") as pool:
        try:
            while pending or running:
                for name in list(pending):  # in order: a skipped task skips its descendants in the same pass
                    if crash is not None:
                        break
                    if any(p not in outcomes for p in deps[name]):
                        continue
                    outcome = skip_or_none(name)
                    if outcome is not None:
                        pending.remove(name)
                        finish(outcome)
                    elif len(running) < threads:
                        pending.remove(name)
                        if on_start:
                            on_start(name)
                        running[pool.submit(call, name)] = name
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: position[running[f]]):
                    name = running.pop(future)
                    try:
                        finish(future.result())
                    except BaseException as exc:  # noqa: BLE001 - not a task failure: stop, then raise
                        crash = crash or exc
        except BaseException as exc:  # KeyboardInterrupt while waiting: let running tasks finish
            crash = crash or exc
            for future in running:
                future.cancel()
        if crash is not None:
            raise crash
    return [outcomes[name] for name in order]
