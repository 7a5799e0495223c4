"""Hooks: tell someone how a run ended (``medallion.hooks`` in conf/project.yml).

```yaml
medallion:
  hooks:
    timeout_s: 10                       # per hook (default 10)
    on_failure:
      - callable: hooks.notify:on_failure   # hooks/notify.py in the project, called with the run document
      - webhook: ${SLACK_WEBHOOK_URL}       # POSTs a JSON summary
        format: slack                       # {"text": ...} instead of the JSON summary
    on_success: [...]
    on_finish: [...]                    # after on_success / on_failure, whatever the outcome
```

A hook runs after the run is recorded, in a thread bounded by its timeout. A hook that
raises, answers an HTTP error, cannot be reached or outlives its timeout is reported as a
warning: it never changes the run's outcome or exit code. Payloads carry no secrets
(known secret values are scrubbed; the webhook URL itself counts as one).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from medallion_cli.errors import ConfigError

EVENTS = ("on_success", "on_failure", "on_finish")
FORMATS = ("json", "slack")
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Hook:
    """One configured hook."""

    event: str
    index: int
    callable: str | None = None  # "module.path:function", the module under the project root
    webhook: str | None = None  # URL as configured (``${VAR}`` resolved when it fires)
    format: str = "json"
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def name(self) -> str:
        what = self.callable if self.callable else "webhook"
        return f"{self.event}[{self.index}] ({what})"


@dataclass(frozen=True)
class HookOutcome:
    """How one hook went: ``ok``, or the one-line reason it did not."""

    hook: Hook
    ok: bool
    error: str | None
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"hook": self.hook.name, "ok": self.ok, "error": self.error, "duration_s": round(self.duration_s, 3)}


def load_hooks(project: Any) -> list[Hook]:
    """The project's hooks, validated (a :class:`ConfigError` names what is wrong)."""
    from medallion_cli.runrecords import project_section

    where = f"{project.root / 'conf' / 'project.yml'}: medallion.hooks"
    section = project_section(project).get("hooks")
    if section is None:
        return []
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping", hint="e.g. hooks: {on_failure: [{webhook: ${SLACK_WEBHOOK_URL}}]}")
    unknown = sorted(set(section) - {*EVENTS, "timeout_s"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}", hint=f"known keys: {', '.join(EVENTS)}, timeout_s")
    default = _timeout(section.get("timeout_s", DEFAULT_TIMEOUT_S), f"{where}.timeout_s")
    hooks = []
    for event in EVENTS:
        entries = section.get(event) or []
        if not isinstance(entries, list):
            raise ConfigError(f"{where}.{event} must be a list of hooks")
        for i, entry in enumerate(entries):
            at = f"{where}.{event}[{i}]"
            if not isinstance(entry, dict) or len({"callable", "webhook"} & set(entry)) != 1:
                raise ConfigError(f"{at} must be a mapping with either `callable:` or `webhook:`",
                                  hint="e.g. {callable: hooks.notify:on_failure} or {webhook: ${SLACK_WEBHOOK_URL}}")
            extra = sorted(set(entry) - {"callable", "webhook", "format", "timeout_s"})
            if extra:
                raise ConfigError(f"{at}: unknown key {extra[0]!r}", hint="known keys: callable, webhook, format, timeout_s")
            fmt = entry.get("format", "json")
            if fmt not in FORMATS or ("callable" in entry and "format" in entry):
                raise ConfigError(f"{at}.format must be json or slack (webhooks only), got {fmt!r}")
            target = entry.get("callable")
            if target is not None:
                module, sep, func = str(target).partition(":")
                if not sep or not module or not func or not all(p.isidentifier() for p in module.split(".")) \
                        or not func.isidentifier():
                    raise ConfigError(f"{at}.callable must be MODULE:FUNCTION, got {target!r}",
                                      hint="e.g. hooks.notify:on_failure for def on_failure(run) in hooks/notify.py")
            url = entry.get("webhook")
            if url is not None and (not isinstance(url, str) or not url.strip()):
                raise ConfigError(f"{at}.webhook must be a URL (e.g. ${{SLACK_WEBHOOK_URL}})")
            hooks.append(Hook(event, i, callable=target, webhook=url, format=fmt,
                              timeout_s=_timeout(entry.get("timeout_s", default), f"{at}.timeout_s")))
    return hooks


def _timeout(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where} must be a positive number of seconds, got {value!r}")
    return float(value)


def fire(project: Any, document: dict[str, Any], hooks: list[Hook] | None = None) -> list[HookOutcome]:
    """Call the hooks a finished run's status selects, one after another, each bounded by
    its timeout. Never raises for a hook's failure: see each :class:`HookOutcome`."""
    hooks = load_hooks(project) if hooks is None else hooks
    status = document.get("status")
    events = {"succeeded": ("on_success", "on_finish"), "failed": ("on_failure", "on_finish")}.get(status, ())
    selected = [h for event in events for h in hooks if h.event == event]
    return [_call(project, hook, document) for hook in selected]


def _call(project: Any, hook: Hook, document: dict[str, Any]) -> HookOutcome:
    from medallion_cli.storage import scrub

    box: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            if hook.callable:
                _call_function(project, hook, copy.deepcopy(document))
            else:
                _post(hook, document)
            box["error"] = None
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a hook included: it is only a warning
            box["error"] = exc

    t0 = time.perf_counter()
    thread = threading.Thread(target=target, name=f"medallion-hook-{hook.event}-{hook.index}", daemon=True)
    thread.start()
    thread.join(hook.timeout_s)
    took = time.perf_counter() - t0
    if thread.is_alive():  # a daemon thread: it cannot keep the process alive
        return HookOutcome(hook, False, f"did not finish within {hook.timeout_s:g}s", took)
    error = box.get("error")
    if error is None:
        return HookOutcome(hook, True, None, took)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return HookOutcome(hook, False, scrub(f"{type(error).__name__}: {text}" if text else type(error).__name__), took)


def _call_function(project: Any, hook: Hook, document: dict[str, Any]) -> None:
    from medallion_cli.project import import_file

    module, _, func = hook.callable.partition(":")
    path = project.root.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        raise FileNotFoundError(f"{path.relative_to(project.root)} does not exist")
    fn = getattr(import_file(path), func, None)
    if not callable(fn):
        raise AttributeError(f"{path.relative_to(project.root)} has no function {func!r}")
    fn(document)


def _post(hook: Hook, document: dict[str, Any]) -> None:
    import urllib.request

    from medallion_cli import storage

    url = storage.interpolate(hook.webhook, where=f"medallion.hooks.{hook.event}[{hook.index}].webhook").strip()
    storage._SECRETS.add(url)  # a webhook URL is a credential (Slack's carry their token): never printed
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError("the webhook is not an http(s) URL")
    body = json.dumps(slack_message(document) if hook.format == "slack" else summary(document)).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "medallion"})
    with urllib.request.urlopen(request, timeout=hook.timeout_s) as response:  # noqa: S310 - http(s) checked above
        response.read(65536)


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """The JSON a webhook receives: the run's outcome and each table's, one line per error."""
    from medallion_cli.storage import scrub

    def line(text: Any) -> str | None:
        return scrub(str(text).strip().splitlines()[0]) if text else None

    tables = [{"table": t["table"], "status": t["status"], "duration_s": t.get("duration_s"),
               "rows_out": t.get("rows_out"), "version": t.get("version"), "error": line(t.get("error"))}
              for t in document.get("layers", [])]
    error = document.get("error") or {}
    return {
        "project": document.get("project"),
        "run_id": document.get("run_id"),
        "command": document.get("command"),
        "status": document.get("status"),
        "exit_code": document.get("exit_code"),
        "started_at": document.get("started_at"),
        "ended_at": document.get("ended_at"),
        "duration_s": document.get("duration_s"),
        "host": document.get("host"),
        "error": line(error.get("message")),
        "failed": [{"table": t["table"], "error": t["error"]} for t in tables if t["status"] == "failed"],
        "skipped": [t["table"] for t in tables if t["status"] == "skipped"],
        "tables": tables,
    }


def slack_message(document: dict[str, Any]) -> dict[str, str]:
    """``{"text": ...}`` for a Slack incoming webhook (plain mrkdwn)."""
    s = summary(document)
    icon = ":white_check_mark:" if s["status"] == "succeeded" else ":x:"
    duration = f" in {s['duration_s']:.1f}s" if isinstance(s["duration_s"], (int, float)) else ""
    lines = [f"{icon} medallion `{s['project']}` {s['command']} `{s['run_id']}` {s['status']}{duration}"]
    lines += [f"• `{f['table']}` failed: {f['error']}" for f in s["failed"]]
    if s["skipped"]:
        lines.append(f"• skipped: {', '.join(s['skipped'])}")
    if not s["failed"] and s["error"]:
        lines.append(f"• {s['error']}")
    return {"text": "\n".join(lines)}
