"""The columns the pipeline itself writes, and the types every column is described by.

A dataset's own columns (its ids, timestamps and features, and the optional
columns that carry a meaning: an observability segment, a first-party flag, tCPA,
a measurement panel) are declared by its dataset spec (config/dataset.py,
`datasets/<name>/dataset.yaml`); no module names them. This module names only
what the pipeline writes: the join's identity and time columns, the labels and
exposures per delay window, the slices, the teacher's columns and, for synthetic
data, the truth (docs/architecture.md §3). Window columns are named after the
spec's delay windows (`conversions_<window>`), so they are functions of the
window names.

Roles:
  time:         click identity and timestamps (never model inputs).
  serving:      features the student may read at serving time (dense scalars).
  teacher_only: offline signals only the teacher reads.
  meaning:      a log column the pipeline gives a meaning (segment, first-party
                flag, tCPA, panel) that is not a model feature; carried through.
  label:        conversions reported by T, per delay window.
  exposure:     per-window exposure at T, the observed exposure (reported by T and
                observed), the prior's mature observed share, the click's
                observed fraction and its maturity.
  slice:        evaluation slice keys.
  truth:        synthetic ground truth; no model reads it.
  teacher:      columns the BulkInferrer writes (schema environment DISTILL).
"""

import dataclasses
import enum
from typing import Optional, Sequence, Tuple


class Role(str, enum.Enum):
  TIME = 'time'
  SERVING = 'serving'
  TEACHER_ONLY = 'teacher_only'
  MEANING = 'meaning'
  LABEL = 'label'
  EXPOSURE = 'exposure'
  SLICE = 'slice'
  TRUTH = 'truth'
  TEACHER = 'teacher'


class Kind(str, enum.Enum):
  """How a model feature is represented (TFLite-builtin transforms only)."""
  CATEGORICAL = 'categorical'  # int64 id -> floormod(id, buckets) -> embedding
  NUMERIC = 'numeric'  # z-score
  LOG_NUMERIC = 'log_numeric'  # log1p then z-score (heavy-tailed, >= 0)


MODEL_ROLES = (Role.SERVING, Role.TEACHER_ONLY)


@dataclasses.dataclass(frozen=True)
class Window:
  """A conversion delay window [start_hours, end_hours) after the click."""
  name: str
  start_hours: float
  end_hours: float


@dataclasses.dataclass(frozen=True)
class Column:
  """One column of the joined examples, as the TFDV schema and the parsers see it.

  Attributes:
    name: the column's name in the examples.
    role: what it is for.
    dtype: 'int', 'float' or 'bytes' (strings are hashed or mapped to int ids at
      ingestion, so only the pipeline's slices are bytes).
    kind: model features only.
    buckets: categorical: the floormod bucket count.
    group: serving features: an optional group (query / user / product).
    width: values per example; None: declared in the schema (the teacher hint).
    min, max: the domain (None: unbounded); categorical ids are >= 0.
    required: present in every example (truth and teacher columns are not).
    values: a string domain.
  """
  name: str
  role: Role
  dtype: str
  kind: Optional[Kind] = None
  buckets: Optional[int] = None
  group: Optional[str] = None
  width: Optional[int] = 1
  min: Optional[float] = None
  max: Optional[float] = None
  required: bool = True
  values: Optional[Tuple[str, ...]] = None


def window_columns(prefix: str, window_names: Sequence[str]) -> Tuple[str, ...]:
  """`<prefix>_<window>` for each delay window, in window order."""
  return tuple(f'{prefix}_{w}' for w in window_names)


# --- Names the pipeline writes ------------------------------------------------
CLICK_ID = 'click_id'
CLICK_TS = 'click_ts'
SNAPSHOT_TS = 'snapshot_ts'
# The conversion log's columns as the join names them (the spec maps the log's
# own names onto these).
CONVERSION_TS = 'conversion_ts'
# One id per conversion, so a re-delivered row is recognised as a copy (the join
# drops exact copies, fails on conflicting ones).
CONVERSION_ID = 'conversion_id'
# A conversion-log row standing for this many conversions (spec: conversions.count).
CONVERSION_COUNT = 'conversion_count'

LABEL_PREFIX = 'conversions'
EXPOSURE_PREFIX = 'exposure'
# The share of a window's true conversions expected to be reported by T *and*
# observed, under the observability priors: the hard loss's offset with the
# observability correction (observation/labels.py; f_b * e_w when observability
# does not depend on the delay).
OBSERVED_EXPOSURE_PREFIX = 'observed_exposure'
# The prior's observed share of a window's conversions once it is mature, for the
# click's segment x first-party flag (1 on the panel): what the teacher's
# observability estimate starts from and is compared with.
PRIOR_OBSERVABILITY_PREFIX = 'prior_observability'
OBSERVED_FRACTION = 'observed_fraction'
# The share of the click's conversions expected to be reported by T:
# sum_w pi_w e_w with the delay model's window shares pi_w. Eval label modes
# scale pConvs by it (observation/eval_labels.py).
MATURITY = 'maturity'
TCPA_BUCKET = 'tcpa_bucket'
BROWSER_OBSERVABILITY = 'browser_observability'
TRUE_CONVERSIONS = 'true_conversions'
TRUE_RATE_PREFIX = 'true_rate'
# The report probability of a conversion in each window given the click's hidden
# state (synthetic only; what an observability estimate is scored against).
TRUE_OBSERVABILITY_PREFIX = 'true_observability'
TEACHER_RATE_PREFIX = 'teacher_rate'
# The teacher's per-click observability of each window at maturity (1 on the
# panel; the prior's share without its observability head), scored against
# true_observability_<w>, and its observed exposure as of T (what its own
# likelihood used as the offset), from which the student's auxiliary head takes
# the unobserved exposure (models/distill.py).
TEACHER_OBSERVABILITY_PREFIX = 'teacher_observability'
TEACHER_OBSERVED_EXPOSURE_PREFIX = 'teacher_observed_exposure'
# Its width (value count) is declared in the schema; `schemas.hint_width()`
# reads it, and the config check requires the teacher's hint layer to match.
TEACHER_HINT = 'teacher_hint'
HINT_WIDTH = 64


def labels(window_names: Sequence[str]) -> Tuple[str, ...]:
  return window_columns(LABEL_PREFIX, window_names)


def exposures(window_names: Sequence[str]) -> Tuple[str, ...]:
  return window_columns(EXPOSURE_PREFIX, window_names)


def observed_exposures(window_names: Sequence[str]) -> Tuple[str, ...]:
  return window_columns(OBSERVED_EXPOSURE_PREFIX, window_names)


def prior_observability(window_names: Sequence[str]) -> Tuple[str, ...]:
  return window_columns(PRIOR_OBSERVABILITY_PREFIX, window_names)


def true_rates(window_names: Sequence[str]) -> Tuple[str, ...]:
  return window_columns(TRUE_RATE_PREFIX, window_names)


def true_observability(window_names: Sequence[str]) -> Tuple[str, ...]:
  return window_columns(TRUE_OBSERVABILITY_PREFIX, window_names)


def teacher_rates(window_names: Sequence[str]) -> Tuple[str, ...]:
  return window_columns(TEACHER_RATE_PREFIX, window_names)


def teacher_observability(window_names: Sequence[str]) -> Tuple[str, ...]:
  return window_columns(TEACHER_OBSERVABILITY_PREFIX, window_names)


def teacher_observed_exposures(window_names: Sequence[str]) -> Tuple[str, ...]:
  return window_columns(TEACHER_OBSERVED_EXPOSURE_PREFIX, window_names)


def truth_columns(window_names: Sequence[str]) -> Tuple[str, ...]:
  """The synthetic truth a click log may carry (only benchmarks read it)."""
  return (true_rates(window_names) + (TRUE_CONVERSIONS,) +
          true_observability(window_names))


def teacher_columns(window_names: Sequence[str]) -> Tuple[str, ...]:
  """What the BulkInferrer appends."""
  return (teacher_rates(window_names) + teacher_observability(window_names) +
          teacher_observed_exposures(window_names) + (TEACHER_HINT,))


# Names a dataset spec may not use for its own columns: the pipeline writes them.
RESERVED_PREFIXES = (LABEL_PREFIX, EXPOSURE_PREFIX, OBSERVED_EXPOSURE_PREFIX,
                     PRIOR_OBSERVABILITY_PREFIX, TRUE_RATE_PREFIX,
                     TRUE_OBSERVABILITY_PREFIX, TEACHER_RATE_PREFIX,
                     TEACHER_OBSERVABILITY_PREFIX, TEACHER_OBSERVED_EXPOSURE_PREFIX)
RESERVED_NAMES = (CLICK_ID, CLICK_TS, SNAPSHOT_TS, CONVERSION_TS, CONVERSION_ID,
                  CONVERSION_COUNT, OBSERVED_FRACTION, MATURITY, TCPA_BUCKET,
                  BROWSER_OBSERVABILITY, TRUE_CONVERSIONS, TEACHER_HINT)


def is_reserved(name: str) -> bool:
  """Whether a dataset column named `name` would clash with a pipeline column."""
  return name in RESERVED_NAMES or any(
      name.startswith(p + '_') for p in RESERVED_PREFIXES)


# tCPA slice buckets (the ExampleGen writes them when the dataset has tCPA); the
# paper's key slice is tCPA > 250.
TCPA_BOUNDARIES = (50.0, 100.0, 250.0)
TCPA_BUCKETS = ('tcpa_le_50', 'tcpa_50_100', 'tcpa_100_250', 'tcpa_gt_250')
HIGH_TCPA_BUCKET = TCPA_BUCKETS[-1]
OBSERVABILITY_BUCKETS = ('full', 'partial', 'low')
LOW_OBSERVABILITY_BUCKET = 'low'


def _float(name, role, lo=None, hi=None, required=True):
  return Column(name, role, 'float', min=lo, max=hi, required=required)


def _int(name, role, lo=0, hi=None, required=True):
  return Column(name, role, 'int', min=lo, max=hi, required=required)


def pipeline_columns(window_names: Sequence[str], *, tcpa: bool, segment: bool,
                     truth: bool) -> Tuple[Column, ...]:
  """The columns the ExampleGen writes beside the log's own, in schema order.

  Args:
    window_names: the spec's delay windows.
    tcpa: the dataset has a tCPA column (then the `tcpa_bucket` slice).
    segment: it has an observability segment (then `browser_observability`).
    truth: synthetic: the click log carries truth columns (optional in examples).
  """
  w = window_names
  out = [*(_int(n, Role.LABEL) for n in labels(w)),
         *(_float(n, Role.EXPOSURE, 0.0, 1.0) for n in exposures(w)),
         *(_float(n, Role.EXPOSURE, 0.0, 1.0) for n in observed_exposures(w)),
         *(_float(n, Role.EXPOSURE, 0.0, 1.0) for n in prior_observability(w)),
         _float(OBSERVED_FRACTION, Role.EXPOSURE, 0.0, 1.0),
         _float(MATURITY, Role.EXPOSURE, 0.0, 1.0)]
  if tcpa:
    out.append(Column(TCPA_BUCKET, Role.SLICE, 'bytes', values=TCPA_BUCKETS))
  if segment:
    out.append(Column(BROWSER_OBSERVABILITY, Role.SLICE, 'bytes',
                      values=OBSERVABILITY_BUCKETS))
  if truth:
    out += [*(_float(n, Role.TRUTH, 0.0, required=False) for n in true_rates(w)),
            _int(TRUE_CONVERSIONS, Role.TRUTH, required=False),
            *(_float(n, Role.TRUTH, 0.0, 1.0, required=False)
              for n in true_observability(w))]
  out += [*(_float(n, Role.TEACHER, 0.0, required=False) for n in teacher_rates(w)),
          *(_float(n, Role.TEACHER, 0.0, 1.0, required=False)
            for n in teacher_observability(w)),
          *(_float(n, Role.TEACHER, 0.0, 1.0, required=False)
            for n in teacher_observed_exposures(w)),
          Column(TEACHER_HINT, Role.TEACHER, 'float', width=HINT_WIDTH,
                 required=False)]
  return tuple(out)
