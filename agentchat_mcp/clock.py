"""UTC time, one way: timezone-aware datetimes, stored as ISO-8601 text that sorts by time."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Fixed-width ISO-8601 with microseconds, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    """now() as stored text."""
    return iso(now())


def parse(text: str) -> datetime:
    """Stored text back to an aware datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
