"""``medallion deploy``: ready-to-use files that run a project on a schedule.

Four targets, each a function returning file contents (nothing is written here until
:func:`apply_deploy`): a crontab line, a systemd ``.service`` + ``.timer`` pair, a
``Dockerfile`` + ``.dockerignore``, and a GitHub Actions workflow. Secrets are never
written: the files name the environment variables the project reads (``${VAR}`` in its
YAML, the ``AWS_*`` credentials for an object-store lake) and take their values from the
platform (an ``EnvironmentFile``, ``docker run --env-file``, ``${{ secrets.X }}``).

Cron expressions are checked by a small validator of the five standard fields (numbers,
``*``, ``a-b``, ``a,b``, ``*/n``, ``a-b/n``, month and weekday names, and the ``@hourly``
... ``@yearly`` macros): the forms crontab, GitHub Actions and systemd all understand.
Cheap: no heavy imports.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medallion_cli import __version__
from medallion_cli.errors import UsageError

TARGETS = ("cron", "systemd", "docker", "github-actions")
DEFAULT_SCHEDULE = "0 * * * *"
LOG_FILE = ".medallion/logs/medallion.log"

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
# (name, lowest, highest, names for lowest.. onwards)
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SELECTOR = re.compile(r"^\+?([a-z]+:)?[A-Za-z_][A-Za-z0-9_]*\+?$")


@dataclass(frozen=True)
class CronSchedule:
    """A validated five-field cron expression and the values each field allows."""

    expression: str  # five fields (a macro is expanded)
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]  # of the month
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is folded into 0)
    days_restricted: bool  # the field does not start with '*' (cron's rule for day OR weekday)
    weekdays_restricted: bool

    def min_interval_minutes(self) -> int:
        """The shortest gap between two runs within a day (1440 for once a day)."""
        times = sorted(h * 60 + m for h in self.hours for m in self.minutes)
        gaps = [b - a for a, b in zip(times, times[1:])] + [times[0] + 1440 - times[-1]]
        return min(gaps)

    def on_calendar(self) -> str:
        """The same schedule as a systemd ``OnCalendar=`` value.

        Raises UsageError when the day of month and the day of week are both restricted:
        cron runs when *either* matches, systemd only when both do.
        """
        if self.days_restricted and self.weekdays_restricted:
            raise UsageError(
                f"cron expression {self.expression!r} restricts both the day of month and the day of week: cron runs on "
                "either, systemd only on both, so it has no OnCalendar equivalent",
                hint="give the systemd schedule yourself with --on-calendar (see `man systemd.time`)",
            )
        date = f"*-{_compact(self.months, 1, 12)}-{_compact(self.days, 1, 31)}"
        time = f"{_compact(self.hours, 0, 23)}:{_compact(self.minutes, 0, 59)}:00"
        if not self.weekdays_restricted or self.weekdays == frozenset(range(7)):
            return f"{date} {time}"
        return f"{_weekdays(self.weekdays)} {date} {time}"


def parse_cron(text: str) -> CronSchedule:
    """Validate a five-field cron expression (or ``@hourly``...); UsageError (exit 2) says what is wrong."""
    raw = " ".join(str(text).split())
    expression = MACROS.get(raw.lower(), raw)
    if raw.startswith("@") and raw.lower() not in MACROS:
        raise UsageError(f"cron expression {raw!r}: unknown macro", hint=f"use one of {', '.join(MACROS)} or five fields")
    fields = expression.split(" ")
    if len(fields) != 5:
        raise UsageError(
            f"cron expression {raw!r} has {len(fields) if raw else 0} field(s), not 5",
            hint="minute hour day-of-month month day-of-week, e.g. --schedule '0 * * * *' (hourly) or '30 2 * * 1-5'",
        )
    values = [_parse_field(f, *spec, raw=raw) for f, spec in zip(fields, _FIELDS)]
    weekdays = frozenset(0 if d == 7 else d for d in values[4])
    return CronSchedule(expression, *map(frozenset, values[:4]), weekdays,  # type: ignore[arg-type]
                        days_restricted=not fields[2].startswith("*"), weekdays_restricted=not fields[4].startswith("*"))


def _parse_field(text: str, name: str, lo: int, hi: int, names: tuple[str, ...], *, raw: str) -> set[int]:
    def bad(why: str) -> UsageError:
        allowed = f"{lo}-{hi}" + (f" or {names[0]}-{names[-1]}" if names else "")
        return UsageError(f"cron expression {raw!r}: {name} field {text!r}: {why}",
                          hint=f"{name}: *, a number ({allowed}), a-b, a,b, */n or a-b/n")

    def number(token: str) -> int:
        if token.isdigit():
            value = int(token)
        elif token.lower() in names:
            value = lo + names.index(token.lower())
        else:
            raise bad(f"{token!r} is not a number" + (" or a name" if names else ""))
        if not lo <= value <= hi:
            raise bad(f"{value} is out of range {lo}-{hi}")
        return value

    out: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise bad(f"step {step_text!r} is not a positive number")
            step = int(step_text)
        if base == "*":
            start, end = lo, (6 if name == "day of week" else hi)
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = number(a), number(b)
            if start > end:
                raise bad(f"range {base!r} runs backwards")
        elif slash:
            raise bad(f"{item!r}: a step needs * or a range before it (e.g. */{step})")
        elif base:
            start = end = number(base)
        else:
            raise bad("empty item")
        out.update(range(start, end + 1, step))
    return out


def _compact(values: frozenset[int], lo: int, hi: int) -> str:
    """systemd's form of one field: ``*``, ``start/step``, or a list with ``a..b`` runs."""
    ordered = sorted(values)
    if ordered == list(range(lo, hi + 1)):
        return "*"
    if len(ordered) > 2:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(ordered[0], hi + 1, step)):
            return f"{ordered[0]:02d}/{step}"
    return ",".join(f"{a:02d}" if a == b else f"{a:02d}..{b:02d}" for a, b in _runs(ordered))


def _weekdays(values: frozenset[int]) -> str:
    order = sorted(values, key=lambda d: (d + 6) % 7)  # Monday first, as systemd counts
    monday_first = [(d + 6) % 7 for d in order]
    return ",".join(_SYSTEMD_DAYS[(a + 1) % 7] if a == b else f"{_SYSTEMD_DAYS[(a + 1) % 7]}..{_SYSTEMD_DAYS[(b + 1) % 7]}"
                    for a, b in _runs(monday_first))


def _runs(ordered: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of three or more become one (a, b) pair; others stay single."""
    runs: list[list[int]] = []
    for v in ordered:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    out: list[tuple[int, int]] = []
    for run in runs:
        if len(run) >= 3:
            out.append((run[0], run[-1]))
        else:
            out.extend((v, v) for v in run)
    return out


def check_on_calendar(value: str) -> str:
    """A systemd calendar expression given with --on-calendar: one line; checked by
    ``systemd-analyze calendar`` when it is installed."""
    import shutil
    import subprocess

    value = value.strip()
    if not value or "\n" in value or "\r" in value:
        raise UsageError("--on-calendar must be one systemd calendar expression", hint="e.g. --on-calendar 'hourly' or '*-*-* 02:30:00'")
    tool = shutil.which("systemd-analyze")
    if tool:
        done = subprocess.run([tool, "calendar", value], capture_output=True, text=True, timeout=10, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["invalid"])[-1]
            raise UsageError(f"--on-calendar {value!r} is not a systemd calendar expression: {why}",
                             hint="see `man systemd.time`, e.g. 'hourly', 'Mon..Fri *-*-* 06:00:00'")
    return value


# -- what the files need to know ------------------------------------------------------------

@dataclass(frozen=True)
class DeployFile:
    """One file to write, and what writing it would do (create, identical, overwrite, conflict)."""

    path: Path
    content: str
    action: str = "create"
    executable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "action": self.action, "content": self.content}


@dataclass(frozen=True)
class DeployPlan:
    """The files of one target, checked against what is on disk."""

    target: str
    project: str
    command: tuple[str, ...]  # the medallion command the files run
    schedule: str | None  # the cron expression (None for docker)
    on_calendar: str | None  # systemd only
    env: tuple[str, ...]  # environment variables the project reads (names only)
    files: tuple[DeployFile, ...]
    notes: tuple[str, ...] = ()
    written: bool = False

    @property
    def conflicts(self) -> list[DeployFile]:
        return [f for f in self.files if f.action == "conflict"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "project": self.project,
            "command": list(self.command),
            "schedule": self.schedule,
            "on_calendar": self.on_calendar,
            "env": list(self.env),
            "files": [f.to_dict() for f in self.files],
            "notes": list(self.notes),
            "written": self.written,
        }


@dataclass(frozen=True)
class _Context:
    root: Path
    name: str
    selection: tuple[str, ...]
    medallion: tuple[str, ...]  # argv prefix that runs medallion (absolute path)
    env: tuple[str, ...]
    remote: bool
    python: str = field(default_factory=lambda: f"{sys.version_info.major}.{sys.version_info.minor}")


def plan_deploy(
    project: Any,
    target: str,
    *,
    schedule: str | None = None,
    on_calendar: str | None = None,
    selection: Sequence[str] = ("all",),
    output: Path | None = None,
) -> DeployPlan:
    """The files for ``target`` (``cron``, ``systemd``, ``docker`` or ``github-actions``),
    each marked ``create``, ``identical`` or ``conflict`` (exists with other content).

    Args:
        project: a loaded :class:`~medallion_cli.project.Project`.
        schedule: a cron expression (default hourly); refused when invalid (UsageError).
        on_calendar: systemd only: a calendar expression used as it is instead of the
            one converted from ``schedule``.
        selection: the selectors ``medallion run`` gets (checked against the project).
        output: the folder to write to (default: per target, see the README).
    """
    if target not in TARGETS:
        raise UsageError(f"unknown deploy target {target!r}", hint=f"use one of: {', '.join(TARGETS)}")
    if on_calendar is not None and target != "systemd":
        raise UsageError("--on-calendar is for the systemd target only", hint="use --schedule with a cron expression")
    if target == "docker" and schedule is not None:
        raise UsageError("a Docker image has no schedule: it runs once per container start",
                         hint="run the container from cron, a systemd timer or a Kubernetes CronJob; drop --schedule")
    cron = parse_cron(DEFAULT_SCHEDULE if schedule is None else schedule) if target != "docker" else None
    calendar = None
    if target == "systemd":
        calendar = check_on_calendar(on_calendar) if on_calendar is not None else cron.on_calendar()
    ctx = _context(project, selection)
    notes: list[str] = []
    if target == "cron":
        folder, files = output or project.root / "deploy", [_cron(ctx, cron)]
    elif target == "systemd":
        folder, files = output or project.root / "deploy", list(_systemd(ctx, calendar))
    elif target == "docker":
        folder, files = output or project.root, list(_docker(ctx))
        if not ctx.remote:
            notes.append("the lake is local: mount lake/ and .medallion/ as volumes, or they are lost with the container")
    else:
        repo = _git_root(project.root)
        folder = output or (repo or project.root) / ".github" / "workflows"
        workdir = os.path.relpath(project.root, repo) if repo else "."
        files = [_github(ctx, cron, workdir)]
        if cron.min_interval_minutes() < 5:
            notes.append("GitHub Actions runs schedules at most every 5 minutes")
        if not ctx.remote:
            notes.append("the lake is local: on a GitHub runner it is lost after each job; use an object-store lake")
    folder = Path(folder)
    checked = tuple(_check(DeployFile(folder / name, content, executable=x)) for name, content, x in files)
    command = (*ctx.medallion, "run", *ctx.selection)
    return DeployPlan(target, ctx.name, command, cron.expression if cron else None, calendar, ctx.env, checked, tuple(notes))


def apply_deploy(plan: DeployPlan, *, force: bool = False) -> DeployPlan:
    """Write the plan's files. Nothing is written when a file exists with other content and
    ``force`` is false (UsageError naming it); identical files are left alone."""
    if plan.conflicts and not force:
        names = ", ".join(str(f.path) for f in plan.conflicts)
        raise UsageError(f"{names} already exist(s) with other content: nothing was written",
                         hint="pass --force to overwrite, or --output DIR to write elsewhere")
    files = []
    for f in plan.files:
        if f.action == "identical":
            files.append(f)
            continue
        f.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.path.with_name(f".{f.path.name}.tmp-{os.getpid()}")
        tmp.write_text(f.content, encoding="utf-8")
        if f.executable:
            tmp.chmod(0o755)
        os.replace(tmp, f.path)
        files.append(DeployFile(f.path, f.content, "overwrite" if f.action == "conflict" else "create", f.executable))
    from dataclasses import replace

    return replace(plan, files=tuple(files), written=True)


def _check(f: DeployFile) -> DeployFile:
    if not f.path.exists():
        return f
    try:
        same = f.path.read_text(encoding="utf-8") == f.content
    except (OSError, UnicodeDecodeError):
        same = False
    return DeployFile(f.path, f.content, "identical" if same else "conflict", f.executable)


def _context(project: Any, selection: Sequence[str]) -> _Context:
    from medallion_cli.runner import select_layers
    from medallion_cli.selection import parse_selection

    tokens = tuple(t for s in selection for t in s.split()) or ("all",)
    for token in tokens:
        if not _SELECTOR.match(token):
            raise UsageError(f"--selection {token!r} is not a selector", hint="e.g. all, silver, silver_events+, +gold")
    select_layers(project, parse_selection(tokens))  # unknown names fail here (exit 2)
    remote = any("://" in u and not u.startswith("file://") for u in _uris(project))
    return _Context(project.root, project.name, tokens, _medallion_argv(), _env_names(project, remote), remote)


def _uris(project: Any) -> list[str]:
    uris = [project.lake_uri]
    for layer in project.layers:
        uris.append(project.table_uri(layer.target.table))
        if layer.source.landing is not None:
            uris.append(project.resolve_path(layer.source.landing))
    return uris


def _medallion_argv() -> tuple[str, ...]:
    """The absolute path of this installation's ``medallion`` (the venv's), else ``python -m``."""
    import shutil

    here = Path(sys.executable).parent / "medallion"
    if here.is_file():
        return (str(here.absolute()),)
    found = shutil.which("medallion")
    if found:
        return (str(Path(found).absolute()),)
    return (str(Path(sys.executable).absolute()), "-m", "medallion_cli")


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _env_names(project: Any, remote: bool) -> tuple[str, ...]:
    """Environment variables the project's YAML reads (``${VAR}``), plus the AWS
    credentials when anything lives in an object store. Names only, never values."""
    names: dict[str, None] = {}
    conf = project.root / "conf"
    for path in sorted(conf.rglob("*.yml")) + sorted(conf.rglob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        lines = [line.split("#", 1)[0] for line in text.splitlines()]  # commented-out examples are not read
        names.update(dict.fromkeys(m.group(1) for line in lines for m in _ENV_REF.finditer(line)))
    if remote:
        names.update(dict.fromkeys(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")))
    return tuple(names)


def _git_root(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


# -- the four targets -------------------------------------------------------------------------

def _cron(ctx: _Context, cron: CronSchedule) -> tuple[str, str, bool]:
    argv = " ".join(shlex.quote(a) for a in (*ctx.medallion, "run", *ctx.selection))
    line = (f"{cron.expression} cd {shlex.quote(str(ctx.root))} && mkdir -p {shlex.quote(str(Path(LOG_FILE).parent))} "
            f"&& {argv} >> {LOG_FILE} 2>&1")
    line = line.replace("%", "\\%")  # cron turns a bare % into a newline
    env = ""
    if ctx.env:
        env = ("# cron starts with an almost empty environment and this project reads: " + ", ".join(ctx.env) + ".\n"
               "# Set them in the crontab above this line (NAME=value, a crontab readable only by you),\n"
               "# never in the project's files.\n")
    text = (
        f"# medallion project {ctx.name}: `medallion run {' '.join(ctx.selection)}` on schedule '{cron.expression}'.\n"
        f"# Written by `medallion deploy cron` (medallion {__version__}). Install with:\n"
        f"#   (crontab -l 2>/dev/null; cat medallion.cron) | crontab -\n"
        "# Runs never overlap: a second run of a layer fails at once with exit code 4 (medallion's\n"
        f"# own lock), so no flock is needed. Output is appended to {LOG_FILE} in the project.\n"
        f"{env}{line}\n"
    )
    return "medallion.cron", text, False


def _systemd_quote(arg: str) -> str:
    arg = arg.replace("%", "%%")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd(ctx: _Context, calendar: str) -> list[tuple[str, str, bool]]:
    import getpass

    unit = f"medallion-{ctx.name}"
    exec_start = " ".join(_systemd_quote(a) for a in (*ctx.medallion, "run", *ctx.selection))
    env = f"/etc/medallion/{ctx.name}.env"
    env_note = ("# Environment variables this project reads: " + ", ".join(ctx.env) + ".\n"
                f"# Put them (NAME=value) in {env}, readable only by the service's user.\n") if ctx.env else ""
    service = (
        f"# medallion project {ctx.name}: written by `medallion deploy systemd` (medallion {__version__}).\n"
        f"# Install: copy {unit}.service and {unit}.timer to /etc/systemd/system/, then\n"
        f"#   systemctl daemon-reload && systemctl enable --now {unit}.timer\n"
        f"# Logs: journalctl -u {unit}.service\n"
        f"{env_note}"
        "[Unit]\n"
        f"Description=medallion run {' '.join(ctx.selection)} (project {ctx.name})\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"User={getpass.getuser()}\n"
        f"WorkingDirectory={str(ctx.root).replace('%', '%%')}\n"
        f"EnvironmentFile=-{env}\n"
        f"ExecStart={exec_start}\n"
    )
    timer = (
        f"# The schedule of {unit}.service (written by `medallion deploy systemd`).\n"
        "[Unit]\n"
        f"Description=Schedule of medallion project {ctx.name}\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar={calendar}\n"
        "Persistent=true\n"
        f"Unit={unit}.service\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return [(f"{unit}.service", service, False), (f"{unit}.timer", timer, False)]


def _project_dependencies(root: Path) -> list[str]:
    import tomllib

    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    deps = data.get("project", {}).get("dependencies", [])
    return [d for d in deps if isinstance(d, str)]


def _docker(ctx: _Context) -> list[tuple[str, str, bool]]:
    import json

    requirements = " ".join(shlex.quote(d) for d in _project_dependencies(ctx.root))
    cmd = json.dumps(["medallion", "run", *ctx.selection])
    env_note = ("# This project reads " + ", ".join(ctx.env) + " from the environment: pass them at run time\n"
                "# (docker run --env-file FILE ...), never with ENV or ARG here.\n") if ctx.env else ""
    dockerfile = (
        f"# medallion project {ctx.name}: written by `medallion deploy docker` (medallion {__version__}).\n"
        f"#   docker build -t {ctx.name.lower()} .\n"
        f"#   docker run --rm -v \"$PWD/lake:/project/lake\" -v \"$PWD/.medallion:/project/.medallion\" {ctx.name.lower()}\n"
        "# To install medallion from a wheel instead, copy it into the project and install ./medallion_cli-X-py3-none-any.whl.\n"
        f"{env_note}"
        f"FROM python:{ctx.python}-slim\n"
        "\n"
        "ENV PYTHONDONTWRITEBYTECODE=1 \\\n"
        "    PYTHONUNBUFFERED=1 \\\n"
        "    PIP_NO_CACHE_DIR=1 \\\n"
        "    PIP_DISABLE_PIP_VERSION_CHECK=1\n"
        "\n"
        "RUN useradd --create-home --uid 10001 medallion \\\n"
        "    && mkdir /project \\\n"
        "    && chown medallion:medallion /project\n"
        "WORKDIR /project\n"
        "COPY --chown=medallion:medallion . /project\n"
        f"RUN pip install --no-cache-dir \"medallion-cli=={__version__}\"{' ' + requirements if requirements else ''}\n"
        "\n"
        "USER 10001\n"
        f"CMD {cmd}\n"
    )
    ignore = (
        "# Not part of the image: data the container makes, local state, secrets, tooling.\n"
        "lake/\n"
        ".medallion/\n"
        ".venv/\n"
        "venv/\n"
        ".git/\n"
        ".github/\n"
        "deploy/\n"
        "**/__pycache__/\n"
        "**/*.pyc\n"
        ".pytest_cache/\n"
        ".env\n"
        "*.env\n"
        "Dockerfile\n"
        ".dockerignore\n"
    )
    return [("Dockerfile", dockerfile, False), (".dockerignore", ignore, False)]


def _yaml_str(value: str) -> str:
    import json

    return json.dumps(value)  # a JSON string is a YAML string


def _github(ctx: _Context, cron: CronSchedule, workdir: str) -> tuple[str, str, bool]:
    selection = " ".join(ctx.selection)
    lines = [
        f"# medallion project {ctx.name}: written by `medallion deploy github-actions` (medallion {__version__}).",
        "# Secrets come from the repository's secret store (Settings > Secrets and variables > Actions).",
        f"name: medallion {ctx.name}",
        "",
        "on:",
        "  schedule:",
        f"    - cron: {_yaml_str(cron.expression)}",
        "  workflow_dispatch: {}",
        "",
        "permissions:",
        "  contents: read",
        "",
        "concurrency:  # one run at a time; a scheduled run waits for the one in flight",
        f"  group: medallion-{ctx.name}",
        "  cancel-in-progress: false",
        "",
        "jobs:",
        "  run:",
        "    runs-on: ubuntu-latest",
        "    timeout-minutes: 120",
    ]
    if ctx.env:
        lines.append("    env:")
        lines += [f"      {name}: ${{{{ secrets.{name} }}}}" for name in ctx.env]
    if workdir != ".":
        lines += ["    defaults:", "      run:", f"        working-directory: {_yaml_str(workdir)}"]
    artifact_dir = "" if workdir == "." else workdir.rstrip("/") + "/"
    lines += [
        "    steps:",
        "      - uses: actions/checkout@v4",
        "      - uses: actions/setup-python@v5",
        "        id: python",
        "        with:",
        f"          python-version: {_yaml_str(ctx.python)}",
        "          cache: pip",
        f"          cache-dependency-path: {_yaml_str(artifact_dir + 'pyproject.toml')}",
        "      - name: Cache the virtualenv",
        "        uses: actions/cache@v4",
        "        with:",
        f"          path: {artifact_dir}.venv",
        f"          key: medallion-venv-${{{{ runner.os }}}}-${{{{ steps.python.outputs.python-version }}}}-{__version__}-"
        f"${{{{ hashFiles('{artifact_dir}pyproject.toml') }}}}",
        "      - name: Install medallion",
        "        run: |",
        "          if [ ! -x .venv/bin/medallion ]; then",
        "            python -m venv .venv",
        f"            .venv/bin/python -m pip install 'medallion-cli=={__version__}'",
        "          fi",
        '          echo "$PWD/.venv/bin" >> "$GITHUB_PATH"',
        "      - name: Check the project",
        "        run: medallion check",
        "      - name: Run",
        f"        run: medallion run {selection} --json > medallion-run.json",
        "      - name: Upload the run record",
        "        if: always()",
        "        uses: actions/upload-artifact@v4",
        "        with:",
        "          name: medallion-run-${{ github.run_id }}-${{ github.run_attempt }}",
        "          path: |",
        f"            {artifact_dir}medallion-run.json",
        f"            {artifact_dir}.medallion/runs/",
        "          if-no-files-found: warn",
        "          retention-days: 30",
    ]
    return "medallion.yml", "\n".join(lines) + "\n", False
