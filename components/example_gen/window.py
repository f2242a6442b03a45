"""Which partitions and rows make up the window [T - W, T), and its time split.

Pure logic over paths and times; the executor does the Beam work. Paths may be
local or gs:// (listing goes through tf.io.gfile).
"""

import dataclasses
import datetime
from typing import List

import numpy as np

from components.example_gen import sources
from config.dataset import DatasetSpec
from observation import snapshot

DAY = datetime.timedelta(days=1)


WindowError = sources.WindowError


@dataclasses.dataclass(frozen=True)
class Window:
  """[start, snapshot) with the eval split [eval_start, snapshot)."""
  snapshot: datetime.datetime  # T
  start: datetime.datetime  # T - W days
  eval_start: datetime.datetime  # T - E days

  @classmethod
  def ending_at(cls, t: datetime.datetime, days: int, eval_days: int) -> 'Window':
    if not 0 < eval_days < days:
      raise WindowError(f'eval_days ({eval_days}) must be in (0, days={days})')
    return cls(snapshot=t, start=t - days * DAY, eval_start=t - eval_days * DAY)

  def days(self) -> List[datetime.date]:
    """Every calendar day the window touches (UTC)."""
    last = (self.snapshot - datetime.timedelta(microseconds=1)).date()
    day, out = self.start.date(), []
    while day <= last:
      out.append(day)
      day += DAY
    return out


def log_partitions(data_root: str, spec: DatasetSpec, log: str,
                   window: Window) -> List[str]:
  """The partition directories of `log` the window needs (all present and
  complete; see sources.required_partitions)."""
  source = getattr(spec.source, log)
  describe = f'the window [{window.start.isoformat()}, {window.snapshot.isoformat()})'
  return sources.required_partitions(sources.log_pattern(data_root, source),
                                     source.complete_marker, window.days(), log,
                                     describe)


def resolve_window(data_root: str, spec: DatasetSpec, snapshot_time: str, policy: str,
                   days: int, eval_days: int,
                   now=lambda: datetime.datetime.now(snapshot.UTC)) -> Window:
  """T (explicit or by policy) and the window ending at it."""
  def data_end() -> datetime.date:
    if spec.source.format == 'bigquery':
      raise WindowError('window.snapshot_policy data_end lists day partitions; a '
                        'BigQuery source has none (use execution_midnight or give T)')
    return sources.latest_day(sources.log_pattern(data_root, spec.source.clicks))
  t = snapshot.resolve(snapshot_time, policy, data_end, now)
  return Window.ending_at(t, days, eval_days)


def click_hash(click_ids, salt: int = 0) -> np.ndarray:
  """SplitMix64's finaliser of click_id (+ `salt`) as uint64: ids are sequential
  (and grow with time); their hashes are not."""
  z = np.asarray(click_ids, np.int64).astype(np.uint64)
  with np.errstate(over='ignore'):
    z = z + np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return z


def tune_mask(click_ids, fraction: float) -> np.ndarray:
  """True for the clicks of the tune split: a hash of click_id below `fraction`.

  A hash, not a time range: the tune clicks span the train window like the
  student's training clicks do, and a click stays in (or out of) the tune split
  on every night whose window holds it, so a nightly teacher never trains on
  what an earlier sweep tuned on. SplitMix64's finaliser: ids are sequential.
  """
  z = click_hash(click_ids)
  return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction
