"""Where tables and landing files live: local paths or object-store URIs (``s3://``...).

One place resolves storage options (the project's ``medallion.storage_options`` with
``${ENV}`` interpolation, the standard ``AWS_*`` variables, ``--storage-option``), hands
each library the form it wants (delta-rs: strings; polars: typed; s3fs: keyword
arguments), retries transient object-store faults with backoff and jitter (tenacity), and masks
secrets in anything medallion prints.
"""

from __future__ import annotations

import errno
import os
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from medallion_cli.errors import ConfigError, MedallionError

T = TypeVar("T")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SECRET_HINTS = ("SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "SAS", "ACCOUNT_KEY", "PRIVATE")
AWS_ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
                "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_PROFILE")
_SECRETS: set[str] = set()  # every secret value seen by this process, for scrub()


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def interpolate(value: Any, *, where: str) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` from the environment; a missing variable is an error."""
    if not isinstance(value, str):
        return value

    def sub(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set", hint=f"export {name}=... or give a default: ${{{name}:-value}}")

    return _ENV.sub(sub, value)


def is_secret(key: str) -> bool:
    upper = key.upper()
    return any(hint in upper for hint in SECRET_HINTS)


def mask(options: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if is_secret(k) and v else v) for k, v in options.items()}


# scheme://user:password@host -> scheme://***@host
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#'\"]+@")


def _secret_forms() -> list[str]:
    """Known secrets (storage options, secret-named environment variables), as printed raw,
    in a JSON document and in a repr()."""
    import json

    found = {v for v in _SECRETS if v and len(v) >= 4}
    # A pipeline may read any secret-named variable; short values ("true") are not secrets.
    found.update(v for k, v in os.environ.items() if is_secret(k) and len(v) >= 8)
    forms = set()
    for secret in found:
        forms.update({secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]})
    return sorted(forms, key=len, reverse=True)


def scrub(text: str) -> str:
    """Replace every known secret value in ``text``, and the user-info of URLs, by ``***``."""
    if not text:
        return text
    for secret in _secret_forms():
        text = text.replace(secret, "***")
    return _USERINFO.sub(r"\1***@", text)


class ScrubbedStream:
    """A text stream that scrubs secrets from everything written through it.

    ``cli.app.main`` puts one in front of stdout and stderr for the whole command, so JSON
    documents, narration, warnings and ``--debug`` tracebacks are all covered.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient object-store faults; deterministic errors fail at once."""

    max_attempts: int = 5
    initial_delay_s: float = 0.2
    max_delay_s: float = 5.0
    budget_s: float = 45.0

    @classmethod
    def from_config(cls, value: Any, *, where: str) -> RetryPolicy:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: medallion.retry must be a mapping")
        unknown = set(value) - {"max_attempts", "initial_delay_s", "max_delay_s", "budget_s"}
        if unknown:
            raise ConfigError(f"{where}: unknown medallion.retry key {sorted(unknown)[0]!r}",
                              hint="keys: max_attempts, initial_delay_s, max_delay_s, budget_s")
        try:
            policy = cls(**{k: type(getattr(cls(), k))(v) for k, v in value.items()})
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: medallion.retry values must be numbers") from None
        if policy.max_attempts < 1 or policy.budget_s <= 0:
            raise ConfigError(f"{where}: medallion.retry needs max_attempts >= 1 and budget_s > 0")
        return policy


_TRANSIENT = ("error sending request", "connection", "timed out", "timeout", "broken pipe", "reset by peer",
              " 500", " 502", " 503", " 504", "status code: 5", "slowdown", "slow down", "throttl", "internalerror",
              "serviceunavailable", "service unavailable", "too many requests", " 429", "commitfailed",
              "version already exists", "concurrent", "transaction failed")
_DETERMINISTIC = ("accessdenied", "access denied", " 403", "forbidden", "invalidaccesskeyid", "signaturedoesnotmatch",
                  "nosuchbucket", "no such bucket", "invalid access key", "not a delta table", "schema", "invalid",
                  "notfound", " 404", "not found", "permission")


# s3fs turns S3's SlowDown, ServiceUnavailable, OperationAborted and any 503 into
# OSError(EBUSY, <the server's message>), InternalError and 500 into EREMOTEIO: the
# message alone ("Please reduce your request rate.") says nothing of a status.
_TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EREMOTEIO, errno.EAGAIN})


def is_transient(exc: BaseException) -> bool:
    from deltalake.exceptions import CommitFailedError

    if isinstance(exc, CommitFailedError):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    if any(word in text for word in _DETERMINISTIC):
        return False
    return any(word in text for word in _TRANSIENT)


@dataclass
class Storage:
    """Storage options for one project (or one command outside a project)."""

    options: dict[str, str] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retries: int = 0  # transient faults retried so far in this process
    recovered: int = 0  # writes that failed to hear back but had landed (found by their write id)

    @classmethod
    def resolve(cls, configured: dict[str, Any] | None = None, overrides: Iterable[str] = (), *,
                where: str = "storage options", retry: RetryPolicy | None = None) -> Storage:
        """Environment ``AWS_*`` first, then the project's options, then ``--storage-option``."""
        options: dict[str, str] = {k: os.environ[k] for k in AWS_ENV_KEYS if os.environ.get(k)}
        for key, value in (configured or {}).items():
            value = interpolate(value, where=f"{where}: {key}")
            if value is not None and value != "":  # `${VAR:-}` leaves an option unset
                options[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
        for pair in overrides:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                from medallion_cli.errors import UsageError

                raise UsageError(f"--storage-option {pair.split('=')[0]!r}... is not KEY=VALUE")
            options[key.strip()] = value
        if "AWS_DEFAULT_REGION" in options and "AWS_REGION" not in options:
            options["AWS_REGION"] = options["AWS_DEFAULT_REGION"]
        _SECRETS.update(v for k, v in options.items() if is_secret(k))
        _SECRETS.update(m.group(0)[len(m.group(1)):-1] for v in options.values() for m in _USERINFO.finditer(v))
        return cls(options=options, retry=retry or RetryPolicy())

    # -- per-library forms ---------------------------------------------------------------
    def delta(self, uri: str) -> dict[str, str] | None:
        """Options for delta-rs: strings, with object_store's own retries kept short."""
        if not is_remote(uri):
            return None
        opts = {k: v for k, v in self.options.items() if k != "AWS_PROFILE" and k != "AWS_DEFAULT_REGION"}
        opts.setdefault("max_retries", "2")
        opts.setdefault("retry_timeout", "10s")
        opts.setdefault("connect_timeout", "5s")
        opts.setdefault("timeout", "60s")
        return opts

    def polars(self, uri: str) -> dict[str, Any] | None:
        if not is_remote(uri):
            return None
        opts: dict[str, Any] = {k: v for k, v in self.options.items() if k.startswith("AWS_") and k not in ("AWS_PROFILE", "AWS_DEFAULT_REGION")}
        opts["max_retries"] = 2
        return opts

    def fs(self, uri: str) -> Any:
        """An fsspec filesystem for ``uri`` (s3fs for ``s3://``)."""
        import fsspec

        if not is_remote(uri):
            return fsspec.filesystem("file")
        scheme = uri.split("://", 1)[0]
        if scheme in ("s3", "s3a"):
            o = self.options
            client: dict[str, Any] = {}
            if o.get("AWS_REGION"):
                client["region_name"] = o["AWS_REGION"]
            return fsspec.filesystem(
                "s3", key=o.get("AWS_ACCESS_KEY_ID"), secret=o.get("AWS_SECRET_ACCESS_KEY"), token=o.get("AWS_SESSION_TOKEN"),
                endpoint_url=o.get("AWS_ENDPOINT_URL"), profile=o.get("AWS_PROFILE"), client_kwargs=client,
                config_kwargs={"retries": {"max_attempts": 2, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 60},
                skip_instance_cache=True,
            )
        return fsspec.filesystem(scheme, **{k.lower(): v for k, v in self.options.items()})

    # -- Delta helpers -------------------------------------------------------------------
    def is_table(self, uri: str) -> bool:
        from deltalake import DeltaTable

        check_local_path(uri)
        return self.call(lambda: DeltaTable.is_deltatable(uri, storage_options=self.delta(uri)), what=f"checking {uri}", uri=uri)

    def table(self, uri: str, version: int | None = None) -> Any:
        from deltalake import DeltaTable

        check_local_path(uri)
        return self.call(lambda: DeltaTable(uri, version=version, storage_options=self.delta(uri)), what=f"opening {uri}", uri=uri)

    def scan_delta(self, uri: str, version: int | None = None) -> Any:
        """A polars ``LazyFrame`` over the Delta table at ``uri`` (at ``version``, default latest).

        Every scan of a Delta table goes through here. delta-rs lists a local table's files
        as percent-encoded paths (``a%20b/...`` for ``a b/...``, ``caf%C3%A9`` for ``café``)
        and polars' native reader opens them as they are, so a project under a folder whose
        name has a space, a non-ASCII letter or a ``%`` fails with "No such file". Such
        tables are read through deltalake's own dataset, which decodes the paths; every
        other table keeps polars' native (faster) reader.
        """
        import polars as pl

        check_local_path(uri)
        if not is_remote(uri) and _needs_encoding(uri):
            dt = self.table(uri, version=version)
            return pl.scan_delta(dt, use_pyarrow=True)
        return pl.scan_delta(uri, version=version, storage_options=self.polars(uri))

    def write_guard(self, uri: str, metadata: dict[str, str], *, exists: bool | None = None
                    ) -> tuple[dict[str, str], Callable[[], bool]]:
        """``metadata`` with a unique write id, and the ``done`` probe :meth:`call` asks before a retry.

        A commit can reach the store while its reply is lost (dropped connection, a 5xx
        from a proxy): retrying it blindly appends the batch twice. The probe reads the
        commits made since the table version before the write, looking for the write id.
        """
        from medallion_cli.commits import WRITE_ID, commits_since, new_write_id

        token = new_write_id()
        exists = self.is_table(uri) if exists is None else exists
        before = self.table(uri).version() if exists else -1

        def done() -> bool:
            if not self.is_table(uri):
                return False
            return any(c.write_id == token for c in commits_since(self.table(uri), before))

        return {**metadata, WRITE_ID: token}, done

    def call(self, fn: Callable[[], T], *, what: str, uri: str | None = None,
             done: Callable[[], bool] | None = None) -> T | None:
        """Run ``fn``; retry transient faults with exponential backoff and jitter within the budget.

        ``done`` (for writes, from :meth:`write_guard`): asked after a transient failure,
        before any retry; when it says the write already landed, the call counts as done and
        returns ``None``. If it cannot tell, the write fails rather than risk a duplicate.
        """
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_before_delay

        policy = self.retry
        start = time.monotonic()

        def attempt() -> Any:
            try:
                return fn()
            except MedallionError:
                raise
            except Exception as exc:
                if done is not None and is_transient(exc) and self.call(done, what=f"checking whether {what} landed", uri=uri):
                    return _LANDED
                raise

        def counted(_state: Any) -> None:
            self.retries += 1

        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.budget_s),
            wait=backoff_wait(policy),
            before_sleep=counted,
            sleep=time.sleep,
            reraise=True,
        )
        try:
            value = retrying(attempt)
        except MedallionError:
            raise
        except Exception as exc:  # not transient, or retried for as long as the policy allows
            attempts = retrying.statistics.get("attempt_number", 1)
            elapsed = time.monotonic() - start
            explained = explain(exc, uri=uri, storage=self) if uri else None
            if explained is not None:
                explained.message += f" (after {attempts} attempt(s) in {elapsed:.0f}s)" if attempts > 1 else ""
                raise explained from exc
            if is_transient(exc):
                raise StorageError(
                    f"{what} failed after {attempts} attempt(s) in {elapsed:.0f}s: {first_line(exc)}",
                    hint="the object store kept failing; check the endpoint and try again later, or raise medallion.retry.budget_s",
                ) from exc
            raise
        if value is _LANDED:
            self.recovered += 1
            return None
        return value


_LANDED = object()  # a write whose reply was lost, found in the log by its write id


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, MedallionError) and is_transient(exc)


def backoff_wait(policy: Any) -> Callable[[Any], float]:
    """A tenacity wait: after attempt n, min(max_delay_s, initial_delay_s * 2**(n-1)), scaled
    by a random factor in [0.5, 1) so that concurrent writers spread out (``policy`` has
    ``initial_delay_s`` and ``max_delay_s``)."""

    def wait(state: Any) -> float:
        return min(policy.max_delay_s, policy.initial_delay_s * 2 ** (state.attempt_number - 1)) * random.uniform(0.5, 1.0)

    return wait


class StorageError(MedallionError):
    """An object store that kept failing, or that refused us."""


_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _needs_encoding(path: str) -> bool:
    from urllib.parse import quote

    path = path.removeprefix("file://")
    return quote(path, safe="/:") != path


def check_local_path(uri: str) -> None:
    """Refuse a local table path delta-rs 1.6 cannot use: one with a ``%`` escape such as ``%20``.

    delta-rs writes the files under the literal folder ``x%20y`` and then reads the log
    from ``x y`` (it decodes the path once more), so the table is written but can never be
    read back. Spaces, non-ASCII letters and other ``%`` signs work.
    """
    if is_remote(uri):
        return
    match = _PERCENT_ESCAPE.search(uri.removeprefix("file://"))
    if match:
        raise ConfigError(
            f"the local table path {uri} contains {match.group(0)!r}, which delta-rs decodes as a URL escape: "
            "its Delta tables would be written but could not be read back",
            hint="rename the folder so that no '%' is followed by two hex digits, or set medallion.lake_root to another path",
        )


def first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    parts = [p.strip(" ↳") for p in text.splitlines() if p.strip(" ↳")]
    return scrub(" ".join(parts[:4])) if parts else type(exc).__name__


# errno texts (Rust's "(os error N)", Python's strerror) and what to do about them
_OS_ERRORS = (
    (("no space left on device", "os error 28"), "the disk is full",
     "free space on the disk that holds it (or move medallion.lake_root), then run again: nothing was committed"),
    (("disk quota exceeded", "os error 122"), "the disk quota is exhausted",
     "free space or raise the quota, then run again: nothing was committed"),
    (("file too large", "os error 27"), "a file size limit was hit (ulimit -f)",
     "raise the limit (ulimit -f unlimited) or lower target_file_size_mb, then run again"),
    (("read-only file system", "os error 30"), "the file system is read-only",
     "remount it read-write, or point medallion.lake_root at a writable place"),
    (("permission denied", "os error 13", "operation not permitted", "os error 1)"), "permission denied",
     "make it writable (and readable) by this user, or run as the user that owns it"),
)
_OS_ERRNOS = {28: 0, 122: 1, 27: 2, 30: 3, 13: 4, 1: 4}
_PATH_IN_TEXT = re.compile(r"(?:file|path|directory|location)[: ]+['\"]?(/[^\s'\"#:]+)", re.IGNORECASE)


def classify_os_error(exc: BaseException, *, uri: str | None = None) -> MedallionError | None:
    """Disk full, quota, size limit, read-only or permission problems as one clear line
    naming the path, whatever library raised them (Python OSError or a delta-rs error)."""
    index = None
    if isinstance(exc, OSError) and exc.errno in _OS_ERRNOS:
        index = _OS_ERRNOS[exc.errno]
    else:
        text = f"{exc}".lower()
        if "object at location" in text and "not found" in text:
            return None
        index = next((i for i, (words, _, _) in enumerate(_OS_ERRORS) if any(w in text for w in words)), None)
    if index is None:
        return None
    _, what, hint = _OS_ERRORS[index]
    path = getattr(exc, "filename", None)
    if not path:
        match = _PATH_IN_TEXT.search(str(exc))
        path = match.group(1) if match else uri
    verb = "cannot access" if what == "permission denied" else "cannot write"  # a read may be refused too
    return StorageError(f"{verb} {path}: {what}" if path else what, hint=hint)


def explain(exc: BaseException, *, uri: str, storage: Storage) -> MedallionError | None:
    """A clear error for a deterministic storage failure (wrong endpoint, bucket, credentials;
    disk full, read-only or permission denied)."""
    if not is_remote(uri):
        return classify_os_error(exc, uri=uri)
    text = f"{exc}".lower()
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    endpoint = storage.options.get("AWS_ENDPOINT_URL", "the default AWS endpoint")
    if "nosuchbucket" in text or "no such bucket" in text or ("404" in text and "list" in text):
        return StorageError(f"bucket {bucket!r} does not exist at {endpoint}", hint="create it, or fix the bucket in medallion.lake_root / the landing path")
    if "169.254.169.254" in text:  # no credentials given: the client fell back to instance metadata
        return StorageError(f"no credentials for bucket {bucket!r} at {endpoint}",
                            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or medallion.storage_options)")
    if any(w in text for w in ("invalidaccesskeyid", "signaturedoesnotmatch", "403", "accessdenied", "access denied", "forbidden")):
        return StorageError(f"access to bucket {bucket!r} at {endpoint} was denied",
                            hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile) and the bucket policy")
    if any(w in text for w in ("error sending request", "connection refused", "dns error", "failed to lookup")):
        return StorageError(f"cannot reach the object store at {endpoint} (bucket {bucket!r})",
                            hint="check AWS_ENDPOINT_URL / medallion.storage_options and that the service is up")
    return None
