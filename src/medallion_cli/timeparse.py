"""Parse the times and durations users type: ISO dates and timestamps (UTC), and relative
forms such as ``7 days ago``, ``yesterday`` or ``2 hours``."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone

from medallion_cli.errors import UsageError

_UNITS = {
    "s": "seconds", "sec": "seconds", "second": "seconds", "seconds": "seconds",
    "m": "minutes", "min": "minutes", "minute": "minutes", "minutes": "minutes",
    "h": "hours", "hour": "hours", "hours": "hours",
    "d": "days", "day": "days", "days": "days",
    "w": "weeks", "week": "weeks", "weeks": "weeks",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")
# Times medallion accepts: window arithmetic (lookbacks, rolling windows, `until - 1 µs`)
# must stay inside what datetime can represent.
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 1, 1, tzinfo=timezone.utc)
_RANGE_HINT = "use a time between 1900-01-01 and 9999-01-01 (UTC)"


def iso_utc(value: datetime) -> str:
    """``2026-11-28T06:34:00.123456Z``: how medallion writes every time it shows or stores."""
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """``"2 hours"``, ``"30m"``, ``"1 day"``, ``"0"`` to a timedelta."""
    text = text.strip().lower()
    if text in ("0", ""):
        return timedelta(0)
    match = _DURATION.match(text)
    if not match or match.group(2) not in _UNITS:
        raise UsageError(f"{what}: cannot read {text!r} as a duration", hint="e.g. '2 hours', '30 minutes', '1 day'")
    try:
        return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    except OverflowError:
        raise UsageError(f"{what}: {text!r} is too long a duration", hint="e.g. '2 hours', '30 minutes', '1 day'") from None


def parse_time(text: str, *, now: datetime | None = None, what: str = "time") -> datetime:
    """An ISO date or timestamp (naive means UTC), ``now``, ``today``, ``yesterday`` or ``N units ago``."""
    now = now or datetime.now(timezone.utc)
    raw = text.strip().lower()
    today = datetime.combine(now.date(), time(), tzinfo=timezone.utc)
    if raw == "now":
        return now
    if raw == "today":
        return today
    if raw == "yesterday":
        return today - timedelta(days=1)
    if raw.endswith(" ago"):
        try:
            return _in_range(now - parse_duration(raw[: -len(" ago")], what=what), text, what)
        except OverflowError:
            raise UsageError(f"{what}: {text!r} is too far in the past", hint=_RANGE_HINT) from None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text.strip()), time())
        except ValueError:
            raise UsageError(
                f"{what}: cannot read {text!r} as a time",
                hint="use an ISO date or timestamp (2024-01-31, 2024-01-31T12:00:00Z) or a relative form ('7 days ago')",
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        parsed = parsed.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00
        raise UsageError(f"{what}: {text!r} is out of range", hint=_RANGE_HINT) from None
    return _in_range(parsed, text, what)


def _in_range(value: datetime, text: str, what: str) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise UsageError(f"{what}: {text!r} is out of range", hint=_RANGE_HINT)
    return value
