"""The column-role map: the one source of truth for column names and roles.

Every module that needs a column name imports it from here (docs/architecture.md §3).
The committed TFDV schema (`schema.pbtxt`) declares the same columns with their types
and domains; `tests/test_schema.py` checks that the two agree.

Roles:
  time:         click identity and timestamps (never model inputs).
  serving:      features the student may read at serving time (dense scalars).
  teacher_only: offline signals only the teacher reads.
  label:        conversions reported by T, per delay window.
  exposure:     per-window exposure at T, the observed exposure (reported by T and
                observed) and the click's observed fraction.
  slice:        evaluation slice keys.
  panel:        offline-only measurement-panel membership (every conversion of a
                panel click is reported); in the click log, never a model input.
  truth:        synthetic ground truth; no model reads it.
  teacher:      columns the BulkInferrer writes (schema environment DISTILL).
"""

import dataclasses
import enum
from typing import Dict, Optional, Tuple


class Role(str, enum.Enum):
  TIME = 'time'
  SERVING = 'serving'
  TEACHER_ONLY = 'teacher_only'
  LABEL = 'label'
  EXPOSURE = 'exposure'
  SLICE = 'slice'
  PANEL = 'panel'
  TRUTH = 'truth'
  TEACHER = 'teacher'


class Kind(str, enum.Enum):
  """How a model feature is represented (TFLite-builtin transforms only)."""
  CATEGORICAL = 'categorical'  # int64 id -> floormod(id, buckets) -> embedding
  NUMERIC = 'numeric'  # z-score
  LOG_NUMERIC = 'log_numeric'  # log1p then z-score (heavy-tailed, >= 0)


@dataclasses.dataclass(frozen=True)
class Window:
  """A conversion delay window [start_hours, end_hours) after the click."""
  name: str
  start_hours: float
  end_hours: float


# The three delay windows of the paper (§I.B); their names are part of the contract.
WINDOWS: Tuple[Window, ...] = (
    Window('0_2d', 0.0, 48.0),
    Window('2_7d', 48.0, 168.0),
    Window('7_90d', 168.0, 2160.0),
)
WINDOW_NAMES = tuple(w.name for w in WINDOWS)


@dataclasses.dataclass(frozen=True)
class Column:
  """One column of the joined examples (or of the logs they are built from)."""
  name: str
  role: Role
  dtype: str  # 'int', 'float' or 'bytes'
  kind: Optional[Kind] = None  # model features only
  buckets: Optional[int] = None  # categorical: floormod bucket count
  group: Optional[str] = None  # serving features: query / user / product
  width: Optional[int] = 1  # values per example; None: declared in the schema


def _w(prefix: str) -> Tuple[str, ...]:
  return tuple(f'{prefix}_{w}' for w in WINDOW_NAMES)


# --- Names -------------------------------------------------------------------
CLICK_ID = 'click_id'
CLICK_TS = 'click_ts'
SNAPSHOT_TS = 'snapshot_ts'
CONVERSION_TS = 'conversion_ts'  # conversion log only
# Conversion log only: one id per conversion, so a re-delivered row is
# recognised as a copy (the join drops exact copies, fails on conflicting ones).
CONVERSION_ID = 'conversion_id'

BROWSER = 'browser'
TARGET_CPA = 'target_cpa'
# An advertiser setting known at serving time: it sends first-party (server-side)
# conversions, so browser cookie caps do not apply (docs/observability-world.md).
ADVERTISER_FIRST_PARTY = 'advertiser_first_party'
IN_PANEL = 'in_panel'

LABELS = _w('conversions')
EXPOSURES = _w('exposure')
# The share of a window's true conversions expected to be reported by T *and*
# observed, under the observability priors: the hard loss's offset with the
# observability correction (observation/labels.py; f_b * e_w when observability
# does not depend on the delay).
OBSERVED_EXPOSURES = _w('observed_exposure')
OBSERVED_FRACTION = 'observed_fraction'
TCPA_BUCKET = 'tcpa_bucket'
BROWSER_OBSERVABILITY = 'browser_observability'
TRUE_RATES = _w('true_rate')
TRUE_CONVERSIONS = 'true_conversions'
# The report probability of a conversion in each window given the click's hidden
# state (synthetic only; what an observability estimate is scored against).
TRUE_OBSERVABILITY = _w('true_observability')
TEACHER_RATES = _w('teacher_rate')
# The teacher's per-click observability of each window at maturity (1 on the
# panel; the prior's share without its observability head), scored against
# true_observability_<w>, and its observed exposure as of T (what its own
# likelihood used as the offset), from which the student's auxiliary head takes
# the unobserved exposure (models/distill.py).
TEACHER_OBSERVABILITY = _w('teacher_observability')
TEACHER_OBSERVED_EXPOSURES = _w('teacher_observed_exposure')
# Its width (value count) is declared in schema.pbtxt; `schemas.hint_width()` reads
# it, and the config check requires the teacher's hint layer to match.
TEACHER_HINT = 'teacher_hint'

_S, _T = Role.SERVING, Role.TEACHER_ONLY
_CAT, _NUM, _LOG = Kind.CATEGORICAL, Kind.NUMERIC, Kind.LOG_NUMERIC

COLUMNS: Tuple[Column, ...] = (
    Column(CLICK_ID, Role.TIME, 'int'),
    Column(CLICK_TS, Role.TIME, 'int'),
    Column(SNAPSHOT_TS, Role.TIME, 'int'),
    # Serving features, grouped as in the paper (§III.B).
    Column('query_category', _S, 'int', _CAT, buckets=64, group='query'),
    Column('query_length', _S, 'int', _LOG, group='query'),
    Column('device', _S, 'int', _CAT, buckets=3, group='query'),
    Column('hour', _S, 'int', _CAT, buckets=24, group='query'),
    Column(BROWSER, _S, 'int', _CAT, buckets=5, group='user'),
    Column('country', _S, 'int', _CAT, buckets=32, group='user'),
    Column('user_engagement', _S, 'float', _NUM, group='user'),
    Column('user_past_conversions', _S, 'int', _LOG, group='user'),
    Column('advertiser_id', _S, 'int', _CAT, buckets=4096, group='product'),
    Column('product_category', _S, 'int', _CAT, buckets=128, group='product'),
    Column('price', _S, 'float', _LOG, group='product'),
    Column(TARGET_CPA, _S, 'float', _LOG, group='product'),
    Column(ADVERTISER_FIRST_PARTY, _S, 'int', _CAT, buckets=2, group='product'),
    # Offline signals the serving path does not have.
    Column('user_intent', _T, 'float', _NUM),
    Column('landing_page_quality', _T, 'float', _NUM),
    Column('cross_device_history', _T, 'int', _LOG),
    *(Column(n, Role.LABEL, 'int') for n in LABELS),
    *(Column(n, Role.EXPOSURE, 'float') for n in EXPOSURES),
    *(Column(n, Role.EXPOSURE, 'float') for n in OBSERVED_EXPOSURES),
    Column(OBSERVED_FRACTION, Role.EXPOSURE, 'float'),
    Column(TCPA_BUCKET, Role.SLICE, 'bytes'),
    Column(BROWSER_OBSERVABILITY, Role.SLICE, 'bytes'),
    Column(IN_PANEL, Role.PANEL, 'int'),
    *(Column(n, Role.TRUTH, 'float') for n in TRUE_RATES),
    Column(TRUE_CONVERSIONS, Role.TRUTH, 'int'),
    *(Column(n, Role.TRUTH, 'float') for n in TRUE_OBSERVABILITY),
    *(Column(n, Role.TEACHER, 'float') for n in TEACHER_RATES),
    *(Column(n, Role.TEACHER, 'float') for n in TEACHER_OBSERVABILITY),
    *(Column(n, Role.TEACHER, 'float') for n in TEACHER_OBSERVED_EXPOSURES),
    Column(TEACHER_HINT, Role.TEACHER, 'float', width=None),
)

BY_NAME: Dict[str, Column] = {c.name: c for c in COLUMNS}
if len(BY_NAME) != len(COLUMNS):
  raise AssertionError('duplicate column names in the role map')


def names(role: Role) -> Tuple[str, ...]:
  """Names of the columns with `role`, in declaration order."""
  return tuple(c.name for c in COLUMNS if c.role == role)


SERVING_FEATURES = names(Role.SERVING)
TEACHER_ONLY_FEATURES = names(Role.TEACHER_ONLY)
TRUTH_COLUMNS = names(Role.TRUTH)

# Columns of the click log: identity, features, panel membership and (synthetic
# only) truth.
CLICK_LOG_COLUMNS = (CLICK_ID, CLICK_TS) + SERVING_FEATURES + (
    TEACHER_ONLY_FEATURES + names(Role.PANEL) + TRUTH_COLUMNS)
# Columns of the conversion log.
CONVERSION_LOG_COLUMNS = (CONVERSION_ID, CLICK_ID, CONVERSION_TS)
# Columns the ExampleGen writes: everything but the teacher's.
EXAMPLE_COLUMNS = tuple(c.name for c in COLUMNS if c.role != Role.TEACHER)
