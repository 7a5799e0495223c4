"""One run per layer at a time: an exclusive ``flock`` on ``.medallion/locks/<layer>.lock``.

The kernel releases the lock when the holding process ends, however it ends (SIGKILL
included), so a killed run never leaves a stale lock behind. The file records who holds
it, for the message the second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from medallion_cli.errors import ConflictError
from medallion_cli.timeparse import iso_utc


@contextmanager
def layer_lock(lock_dir: Path, layer: str, *, run_id: str, wait: float | None = None,
               command: str | None = None) -> Iterator[None]:
    """Hold ``layer``'s lock for the duration of the block.

    Args:
        wait: ``None`` fails at once if another run holds the lock; otherwise wait up to
            this many seconds (``float('inf')`` waits for ever).
        command: what holds it when it is not a run (``medallion restore silver_events``),
            for the message another process prints.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{layer}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    raise ConflictError(
                        f"layer {layer!r} is being run by {_holder(path)}",
                        hint="wait for it to finish, or pass --wait to queue behind it",
                    ) from None
                time.sleep(0.1)
        holder = {
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": iso_utc(datetime.now(timezone.utc)),
        }
        if command:
            holder["command"] = command
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def layer_locks(lock_dir: Path, layers: Iterable[str], *, run_id: str, wait: float | None = None,
                command: str | None = None) -> Iterator[None]:
    """Hold several layers' locks at once, for commands that change a table a run writes.

    Pass the layers in the project's order: every holder then takes them in one order, so
    two waiting commands cannot deadlock (a run holds one layer at a time).
    """
    with ExitStack() as stack:
        for layer in dict.fromkeys(layers):
            stack.enter_context(layer_lock(lock_dir, layer, run_id=run_id, wait=wait, command=command))
        yield


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    if info.get("command"):
        return f"`{info['command']}` (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"
    return f"run {info.get('run_id')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"
