"""The synthetic world's columns by name, for the generator, benchmarks and tests.

The world writes one dataset, `datasets/synthetic_world/dataset.yaml`; the
pipeline reads its columns from that spec and never names them. What generates
or scores synthetic data (world/, bench/, tests/) names them here;
tests/test_world.py checks that these agree with the spec.
"""

import functools

from config import dataset as dataset_lib
from config import loader
from schemas import columns

WINDOW_NAMES = ('0_2d', '2_7d', '7_90d')
# The meaning columns.
BROWSER = 'browser'
TARGET_CPA = 'target_cpa'
ADVERTISER_FIRST_PARTY = 'advertiser_first_party'
IN_PANEL = 'in_panel'
COUNTRY = 'country'
ADVERTISER = 'advertiser_id'

SERVING_FEATURES = (
    'query_category', 'query_length', 'device', 'hour', BROWSER, COUNTRY,
    'user_engagement', 'user_past_conversions', ADVERTISER, 'product_category',
    'price', TARGET_CPA, ADVERTISER_FIRST_PARTY)
TEACHER_ONLY_FEATURES = ('user_intent', 'landing_page_quality', 'cross_device_history')
TEACHER_FEATURES = SERVING_FEATURES + TEACHER_ONLY_FEATURES

LABELS = columns.labels(WINDOW_NAMES)
EXPOSURES = columns.exposures(WINDOW_NAMES)
OBSERVED_EXPOSURES = columns.observed_exposures(WINDOW_NAMES)
PRIOR_OBSERVABILITY = columns.prior_observability(WINDOW_NAMES)
TRUE_RATES = columns.true_rates(WINDOW_NAMES)
TRUE_OBSERVABILITY = columns.true_observability(WINDOW_NAMES)
TRUTH_COLUMNS = columns.truth_columns(WINDOW_NAMES)
TEACHER_RATES = columns.teacher_rates(WINDOW_NAMES)
TEACHER_OBSERVABILITY = columns.teacher_observability(WINDOW_NAMES)
TEACHER_OBSERVED_EXPOSURES = columns.teacher_observed_exposures(WINDOW_NAMES)
WINDOWS = (columns.Window('0_2d', 0.0, 48.0), columns.Window('2_7d', 48.0, 168.0),
           columns.Window('7_90d', 168.0, 2160.0))


@functools.lru_cache(maxsize=None)
def spec() -> dataset_lib.DatasetSpec:
  """The synthetic world's dataset spec (read from its file once, on first use)."""
  return loader.load_config(None, []).dataset


def column(name: str) -> columns.Column:
  """A column of the synthetic world's examples (kind, buckets, dtype)."""
  return spec().column(name)


def features(names) -> tuple:
  """The synthetic world's model features of these names, as Columns."""
  return tuple(column(n) for n in names)
