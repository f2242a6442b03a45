"""The snapshot time T: parsing, and resolving it at run time.

See docs/architecture.md §2.

T is given explicitly, or resolved when the run starts by a policy:
  data_end:            midnight (UTC) after the newest click-log day partition;
  execution_midnight:  the UTC midnight at or before the run's start.
Either way the ExampleGen records it on the Examples artifact and in `snapshot_ts`,
so a scheduled run gets the right T without recompiling the pipeline.
"""

import datetime
from typing import Callable, Optional

UTC = datetime.timezone.utc
POLICIES = ('data_end', 'execution_midnight')
SECONDS_PER_HOUR = 3600


def hours_to_seconds(hours: float) -> int:
  """A duration in hours as whole seconds (the logs' timestamps are seconds)."""
  return int(round(hours * SECONDS_PER_HOUR))


def parse_utc(text: str) -> datetime.datetime:
  """ISO 8601 time -> aware UTC datetime (naive times are taken as UTC).

  Raises:
    ValueError: not an ISO 8601 time.
  """
  try:
    t = datetime.datetime.fromisoformat(text.strip().replace('Z', '+00:00'))
  except ValueError as e:
    raise ValueError(f'{text!r} is not an ISO 8601 time') from e
  if t.tzinfo is None:
    t = t.replace(tzinfo=UTC)
  return t.astimezone(UTC)


def to_ts(t: datetime.datetime) -> int:
  """Epoch seconds of an aware datetime."""
  return int(t.timestamp())


def from_ts(ts: int) -> datetime.datetime:
  return datetime.datetime.fromtimestamp(ts, UTC)


def midnight(day: datetime.date) -> datetime.datetime:
  return datetime.datetime(day.year, day.month, day.day, tzinfo=UTC)


def resolve(snapshot_time: Optional[str], policy: str,
            latest_click_day: Callable[[], datetime.date],
            now: Callable[[], datetime.datetime]) -> datetime.datetime:
  """T from an explicit time, else from the policy.

  Args:
    snapshot_time: ISO 8601 time, or empty / None to resolve by `policy`.
    policy: one of POLICIES.
    latest_click_day: returns the newest click-log day partition (data_end).
    now: returns the current time (execution_midnight).

  Raises:
    ValueError: an unparsable time or an unknown policy.
  """
  if snapshot_time:
    return parse_utc(snapshot_time)
  if policy == 'data_end':
    return midnight(latest_click_day() + datetime.timedelta(days=1))
  if policy == 'execution_midnight':
    return midnight(now().astimezone(UTC).date())
  raise ValueError(f'unknown snapshot policy {policy!r}; expected one of {POLICIES}')
