"""Track each table's DAG run in the Hamilton UI (``medallion.tracker`` in conf/project.yml).

```yaml
medallion:
  tracker:
    project_id: 1                       # the project's id in the Hamilton UI (create it there first)
    username: you@example.com
    api_url: http://localhost:8241      # default; ${VAR} and ${VAR:-default} read the environment
    ui_url: http://localhost:8241       # default: api_url
    api_key: ${HAMILTON_API_KEY:-}      # optional
    tags: {env: prod}                   # optional, strings; medallion adds run_id, table, layer
    verify: true                        # TLS verification
    timeout_s: 10                       # the reachability check before the run
```

FlowerPower 0.37 ignores its own ``adapter.hamilton_tracker`` (it imports modules that
apache-hamilton 1.90 no longer has and runs untracked), so medallion builds the SDK's
``hamilton_sdk.adapters.HamiltonTracker`` itself and passes it to each table's run with
``adapter=``. Errors, all before any table runs:

- the SDK is not installed: :class:`ConfigError` (exit 2), install ``medallion-cli[tracker]``;
- the server cannot be reached or answers with a server error: :class:`TrackerError` (exit 1);
- the server refuses the username/key, or the project id does not exist: :class:`ConfigError` (exit 2).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from medallion_cli.errors import ConfigError, MedallionError

KEYS = ("project_id", "username", "api_url", "ui_url", "api_key", "tags", "verify", "timeout_s")
DEFAULT_URL = "http://localhost:8241"
INSTALL_HINT = "install the Hamilton SDK: pip install 'medallion-cli[tracker]' (or apache-hamilton-sdk)"


class TrackerError(MedallionError):
    """The Hamilton tracking server could not be reached (exit 1: nothing ran)."""


@dataclass(frozen=True)
class TrackerConfig:
    """``medallion.tracker``: where to send each table's DAG run."""

    project_id: int
    username: str
    api_url: str = DEFAULT_URL
    ui_url: str = DEFAULT_URL
    api_key: str | None = field(default=None, repr=False)
    tags: tuple[tuple[str, str], ...] = ()
    verify: bool = True
    timeout_s: float = 10.0


def load_tracker(project: Any) -> TrackerConfig | None:
    """The project's tracker, or None. A :class:`ConfigError` names what is wrong, and
    FlowerPower's own ``adapter.hamilton_tracker`` (which it ignores) is refused."""
    from medallion_cli import storage
    from medallion_cli.project import PROJECT_CONFIG, read_yaml
    from medallion_cli.runrecords import project_section

    path = project.root / PROJECT_CONFIG
    where = f"{path}: medallion.tracker"
    section = project_section(project).get("tracker")
    if section is None:
        _refuse_flowerpower_tracker(project, read_yaml(path), path)
        return None
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping", hint="e.g. tracker: {project_id: 1, username: you@example.com}")
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}", hint=f"keys: {', '.join(KEYS)}")

    def text(key: str, default: str | None = None) -> str | None:
        value = section.get(key, default)
        if value is None:
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key} must be a string")
        return storage.interpolate(str(value), where=f"medallion.tracker.{key}").strip() or None

    project_id = section.get("project_id")
    if isinstance(project_id, str):
        project_id = text("project_id")
    try:
        project_id = int(project_id) if project_id is not None and not isinstance(project_id, bool) else None
    except ValueError:
        project_id = None
    if project_id is None or project_id < 1:
        raise ConfigError(f"{where}.project_id must be the project's id in the Hamilton UI (a positive integer)",
                          hint="create the project in the Hamilton UI (Projects > New) and copy its id")
    username = text("username")
    if not username:
        raise ConfigError(f"{where}.username is required (the Hamilton UI user, an e-mail address)")
    api_url = (text("api_url", DEFAULT_URL) or DEFAULT_URL).rstrip("/")
    if not api_url.lower().startswith(("http://", "https://")):
        raise ConfigError(f"{where}.api_url must be an http(s) URL, got {api_url!r}")
    ui_url = (text("ui_url") or api_url).rstrip("/")
    api_key = text("api_key")
    if api_key:
        storage._SECRETS.add(api_key)  # never printed
    tags = section.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                             for k, v in tags.items()):
        raise ConfigError(f"{where}.tags must map names to strings", hint="e.g. tags: {env: prod}")
    verify = section.get("verify", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"{where}.verify must be true or false")
    timeout = section.get("timeout_s", TrackerConfig.timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"{where}.timeout_s must be a positive number of seconds, got {timeout!r}")
    return TrackerConfig(project_id, username, api_url, ui_url, api_key,
                         tuple((k, str(v)) for k, v in tags.items()), verify, float(timeout))


def _refuse_flowerpower_tracker(project: Any, project_yml: dict[str, Any], path: Any) -> None:
    """FlowerPower's ``adapter.hamilton_tracker`` does nothing in 0.37: say so instead of
    running untracked while the user believes otherwise."""
    from medallion_cli.project import read_yaml

    candidates = [(path, project_yml)]
    pipelines = project.root / "conf" / "pipelines"
    if pipelines.is_dir():
        candidates += [(p, read_yaml(p)) for p in sorted(pipelines.glob("*.yml"))]
    for file, data in candidates:
        adapter = data.get("adapter") if isinstance(data, dict) else None
        settings = adapter.get("hamilton_tracker") if isinstance(adapter, dict) else None
        # FlowerPower's defaults (api_url, tags: {}, ...) say nothing; these keys ask for tracking
        if settings is True or (isinstance(settings, dict) and any(settings.get(k) for k in ("enabled", "project_id", "username"))):
            raise ConfigError(
                f"{file}: adapter.hamilton_tracker is ignored by FlowerPower 0.37 (the run would not be tracked)",
                hint="configure medallion.tracker in conf/project.yml instead: {project_id, username, api_url}",
            )


def check_sdk() -> None:
    """ConfigError (exit 2) when ``hamilton_sdk`` is not importable."""
    try:
        import hamilton_sdk.adapters  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"medallion.tracker is configured but the Hamilton SDK is not installed ({exc})",
                          hint=INSTALL_HINT) from None


def preflight(config: TrackerConfig) -> None:
    """Check, before anything runs, that the SDK is installed and that the server answers
    for this user and project (bounded by ``timeout_s``: the SDK's own calls have no timeout)."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    check_sdk()
    headers = {"x-api-user": config.username, "x-api-key": config.api_key or "", "User-Agent": "medallion"}
    context = None if config.verify else ssl._create_unverified_context()  # noqa: S323 - the user's verify: false

    def get(path: str) -> Any:
        request = urllib.request.Request(f"{config.api_url}/api/v1/{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=config.timeout_s, context=context) as response:  # noqa: S310
            return json.loads(response.read() or b"null")

    for path, what in (("phone_home", "auth"), (f"projects/{config.project_id}", "project")):
        try:
            get(path)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and what == "auth":
                raise ConfigError(f"the Hamilton tracker at {config.api_url} refused user {config.username!r} "
                                  f"(HTTP {exc.code})", hint="check medallion.tracker.username and api_key") from None
            if 400 <= exc.code < 500:
                raise ConfigError(f"the Hamilton tracker at {config.api_url} has no project {config.project_id} "
                                  f"visible to {config.username!r} (HTTP {exc.code})",
                                  hint=f"create it at {config.ui_url}/dashboard/projects and set medallion.tracker.project_id") from None
            raise TrackerError(f"the Hamilton tracker at {config.api_url} answered HTTP {exc.code}",
                               hint="check the server's logs, or remove medallion.tracker to run untracked") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackerError(f"the Hamilton tracker at {config.api_url} is unreachable ({reason})",
                               hint="start it (`hamilton ui`), fix medallion.tracker.api_url, "
                                    "or remove medallion.tracker from conf/project.yml to run untracked") from None


def make_adapter(config: TrackerConfig, *, dag_name: str, tags: dict[str, str]) -> Any:
    """A ``HamiltonTracker`` for one table's run (it checks the server again on creation)."""
    import logging

    check_sdk()
    logging.getLogger("hamilton_sdk").setLevel(logging.ERROR)  # its run link is a WARNING on stderr
    try:
        return _tracker_class()(
            project_id=config.project_id, username=config.username, dag_name=dag_name,
            tags={**dict(config.tags), **tags}, api_key=config.api_key, hamilton_api_url=config.api_url,
            hamilton_ui_url=config.ui_url, verify=config.verify,
        )
    except Exception as exc:  # requests' ConnectionError, the SDK's Unauthorized/ResourceDoesNotExist
        raise TrackerError(f"the Hamilton tracker at {config.api_url} failed: {type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                           hint="see `medallion.tracker` in conf/project.yml") from None


@functools.cache
def _tracker_class() -> type:
    from hamilton_sdk.adapters import HamiltonTracker

    class Tracker(HamiltonTracker):
        """FlowerPower deep-copies the ``adapter=`` dict of every run; a copied tracker
        starts a second client thread that :func:`close` would never stop. Copies are
        this same tracker."""

        def __deepcopy__(self, memo: dict) -> Tracker:
            return self

        def __copy__(self) -> Tracker:
            return self

    return Tracker


def close(adapter: Any, timeout_s: float = 10.0) -> None:
    """Send what the tracker still holds and stop its worker thread (the SDK's own stop()
    waits up to 5 s for a queue poll)."""
    client = getattr(adapter, "client", None)
    queue, worker = getattr(client, "data_queue", None), getattr(client, "worker_thread", None)
    if queue is None or worker is None:
        return
    import atexit

    queue.put(None)  # the worker flushes its batch and returns
    worker.join(timeout_s)
    # Its atexit stop() would flush the None its main-thread watcher queues and raise.
    atexit.unregister(client.stop)
