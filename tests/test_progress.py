"""Progress of `medallion run`: live per-table lines on a terminal, nothing extra elsewhere."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading

from conftest import medallion

ESC = "\x1b["


def run_on_a_terminal(project, *args: str) -> tuple[int, str, str]:
    """`medallion run all` in a real process whose stderr is a pseudo-terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "medallion_cli", "run", "all", "-C", str(project), *args],
                            stdout=subprocess.PIPE, stderr=slave, env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the other side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    stdout, _ = proc.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(master)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))  # colours, cursor moves
    return proc.returncode, stdout.decode(), screen


def test_progress_on_a_terminal(project):
    code, stdout, stderr = run_on_a_terminal(project, "--json")
    assert code == 0, stderr
    assert stdout.startswith("{")  # stdout stays data
    for table in ("bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_daily_sales",
                  "gold_sales_by_segment"):
        assert f"waiting {table} " in stderr and f"running {table} " in stderr
    assert re.search(r"written bronze_events +\d:\d\d:\d\d 94 rows", stderr)  # how it ended: elapsed, rows
    assert "-:--:--" in stderr  # a waiting table has no elapsed time yet


def test_quiet_silences_progress_on_a_terminal(project):
    code, stdout, stderr = run_on_a_terminal(project, "--quiet")
    assert code == 0, stderr
    assert stderr == "" and stdout == ""


def test_no_progress_when_stderr_is_not_a_terminal(project):
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 0, r
    assert "waiting" not in r.stderr and "running" not in r.stderr and ESC not in r.stderr
    assert "written" in r.stderr  # the plain status lines stay
