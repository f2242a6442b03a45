"""Where the logs live: day partitions of the click and conversion logs.

  <data_root>/clicks/date=YYYY-MM-DD/...        one tf.Example per click
  <data_root>/conversions/date=YYYY-MM-DD/...   one tf.Example per reported conversion
  <data_root>/<log>/date=YYYY-MM-DD/_SUCCESS    written last: the partition is complete

Part of the data contract (docs/architecture.md §3): the generator writes this
layout and the ExampleGen reads it; both take the names from here.
"""

import datetime
import os
import re
from typing import Optional

CLICKS = 'clicks'
CONVERSIONS = 'conversions'
LOGS = (CLICKS, CONVERSIONS)
# Written into a partition after its last file (the Hadoop / Spark convention):
# a partition without it may be half-written.
COMPLETE_MARKER = '_SUCCESS'

_PARTITION = re.compile(r'^date=(\d{4}-\d{2}-\d{2})/?$')


def partition_name(day: datetime.date) -> str:
  return f'date={day.isoformat()}'


def partition_path(data_root: str, log: str, day: datetime.date) -> str:
  """Directory of one day partition of `log` (local or gs://)."""
  return os.path.join(data_root, log, partition_name(day))


def partition_day(name: str) -> Optional[datetime.date]:
  """The day of a partition directory name (`date=YYYY-MM-DD`), else None."""
  m = _PARTITION.match(name)
  return datetime.date.fromisoformat(m.group(1)) if m else None


def is_data_file(name: str) -> bool:
  """Whether a file in a partition holds records: anything but the marker and
  hidden (`.`-prefixed) files, which uploaders use for their temporaries."""
  return name != COMPLETE_MARKER and not name.startswith('.')
