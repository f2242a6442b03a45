"""Which partitions and rows make up the window [T - W, T), and its time split.

Pure logic over paths and times; the executor does the Beam work. Paths may be
local or gs:// (listing goes through tf.io.gfile).
"""

import dataclasses
import datetime
import os
from typing import List

import numpy as np
import tensorflow as tf

from observation import snapshot
from schemas import layout

DAY = datetime.timedelta(days=1)


class WindowError(ValueError):
  """The logs cannot make the requested window (names dates and paths)."""


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


def partition_days(data_root: str, log: str) -> List[datetime.date]:
  """The day partitions present under `<data_root>/<log>/`."""
  root = os.path.join(data_root, log)
  if not tf.io.gfile.isdir(root):
    raise WindowError(f'no {log} log at {root}')
  days = []
  for name in tf.io.gfile.listdir(root):
    day = layout.partition_day(name)
    if day is not None:
      days.append(day)
  return sorted(days)


def latest_day(data_root: str, log: str) -> datetime.date:
  days = partition_days(data_root, log)
  if not days:
    raise WindowError(f'no day partitions under {os.path.join(data_root, log)}')
  return days[-1]


def required_partitions(data_root: str, log: str, window: Window) -> List[str]:
  """Partition directories the window needs; all must exist and be complete.

  Raises:
    WindowError: naming the missing days (a hole in the logs is an upstream
      failure, not an empty day: the generator writes empty partitions too), or
      the first partition without its completeness marker (a half-written day
      would silently lower the labels).
  """
  present = set(partition_days(data_root, log))
  needed = window.days()
  missing = [d.isoformat() for d in needed if d not in present]
  if missing:
    shown = ', '.join(missing[:5]) + (' ...' if len(missing) > 5 else '')
    raise WindowError(
        f'{len(missing)} {log} partitions of the window [{window.start.isoformat()}, '
        f'{window.snapshot.isoformat()}) are missing under '
        f'{os.path.join(data_root, log)}: {shown}')
  paths = [layout.partition_path(data_root, log, d) for d in needed]
  for path in paths:
    if not tf.io.gfile.exists(os.path.join(path, layout.COMPLETE_MARKER)):
      raise WindowError(
          f'{path}: partition without its {layout.COMPLETE_MARKER} marker (its '
          'writer adds it after the last file); it may be half-written, so it is not '
          'read')
  return paths


def partition_files(partition: str) -> List[str]:
  """The record files of a partition directory, sorted (local or gs://).

  Every file but the marker and hidden files is a record file: a stray file is
  read, and fails as not a gzip TFRecord, rather than being skipped unseen.
  """
  out = []
  for name in tf.io.gfile.listdir(partition):
    if name.endswith('/'):  # a directory on GCS
      raise WindowError(f'{os.path.join(partition, name)}: a directory inside a '
                        'partition; partitions hold record files only')
    if layout.is_data_file(name):
      out.append(os.path.join(partition, name))
  return sorted(out)


def resolve_window(data_root: str, snapshot_time: str, policy: str, days: int,
                   eval_days: int, now=lambda: datetime.datetime.now(snapshot.UTC)
                   ) -> Window:
  """T (explicit or by policy) and the window ending at it."""
  t = snapshot.resolve(snapshot_time, policy,
                       lambda: latest_day(data_root, layout.CLICKS), now)
  return Window.ending_at(t, days, eval_days)


def tune_mask(click_ids, fraction: float) -> np.ndarray:
  """True for the clicks of the tune split: a hash of click_id below `fraction`.

  A hash, not a time range: the tune clicks span the train window like the
  student's training clicks do, and a click stays in (or out of) the tune split
  on every night whose window holds it, so a nightly teacher never trains on
  what an earlier sweep tuned on. SplitMix64's finaliser: ids are sequential.
  """
  z = np.asarray(click_ids, np.int64).astype(np.uint64)
  with np.errstate(over='ignore'):
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction
