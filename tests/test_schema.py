"""The generated schema: it is the spec's (and the curated schema it replaced);
real joined examples validate; planted defects yield the expected anomalies."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.coders import example_coder

from config import dataset as dataset_lib
from observation import labels
from pipeline import cli
import schemas
from schemas import codec
from schemas import columns
from schemas import records
from tests.helpers import make_world
from world import synthetic

_TYPES = {'int': 'INT', 'float': 'FLOAT', 'bytes': 'BYTES'}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_FILE = os.path.join(ROOT, 'datasets', 'synthetic_world', 'schema.pbtxt')
GOLDEN = os.path.join(ROOT, 'tests', 'golden',
                      'synthetic_world_schema_before_specs.pbtxt')


def _schema():
  return schemas.load_schema(SCHEMA_FILE)


def test_the_committed_schema_is_generated_from_the_spec():
  """The schema beside the spec (what the Vertex image reads) is the spec's."""
  with open(SCHEMA_FILE) as f:
    assert f.read() == dataset_lib.schema_text(synthetic.spec())
  assert cli.main(['schema', '--check']) == 0


def test_the_generated_schema_is_the_curated_one_it_replaced():
  """Golden: every feature of the hand-kept schema the spec replaced is generated
  exactly; the generator adds only the new pipeline columns (the priors' mature
  observability and each click's maturity)."""
  old = schemas.load_schema(GOLDEN)
  new = {f.name: f for f in _schema().feature}
  for feature in old.feature:
    assert new.pop(feature.name) == feature, feature.name
  assert set(new) == set(columns.prior_observability(synthetic.WINDOW_NAMES) +
                         (columns.MATURITY,))
  assert list(old.default_environment) == list(_schema().default_environment)


def test_schema_and_spec_agree():
  by_name = {f.name: f for f in _schema().feature}
  spec = synthetic.spec()
  assert set(by_name) == {c.name for c in spec.example_columns()}
  for col in spec.example_columns():
    f = by_name[col.name]
    assert schema_pb2.FeatureType.Name(f.type) == _TYPES[col.dtype], col.name
    # RAW (what the ExampleGen writes) has everything but the teacher columns.
    assert schemas.in_environment(f, schemas.RAW) == (col.role != columns.Role.TEACHER)
    assert schemas.in_environment(f, schemas.DISTILL)
    if col.role == columns.Role.SERVING:
      # Every serving feature is a dense FixedLen [1] feature (TFLite needs it;
      # docs/architecture.md §2).
      assert [d.size for d in f.shape.dim] == [1], col.name
      assert f.presence.min_fraction == 1.0
  assert schemas.hint_width(SCHEMA_FILE) == by_name[columns.TEACHER_HINT].value_count.min


def test_slice_domains_are_the_bucket_names():
  by_name = {f.name: f for f in _schema().feature}
  assert list(by_name[columns.TCPA_BUCKET].string_domain.value) == list(
      columns.TCPA_BUCKETS)
  assert list(by_name[columns.BROWSER_OBSERVABILITY].string_domain.value) == list(
      columns.OBSERVABILITY_BUCKETS)


@pytest.fixture(scope='module')
def joined(tmp_path_factory):
  """The joined examples of a 7-day window of a generated world, as of T."""
  cfg, path = make_world(tmp_path_factory.mktemp('schema_world'),
                         ['world.num_clicks=20000', 'world.days=10'])
  clicks = records.read_examples(os.path.join(path, 'clicks'))
  convs = records.read_examples(os.path.join(path, 'conversions'))
  t = int(cfg.world.start().timestamp()) + 10 * 86400
  in_window = clicks[columns.CLICK_TS] >= t - 7 * 86400
  clicks = {k: v[in_window] for k, v in clicks.items()}
  spec = cfg.label_spec()
  return labels.join_window(clicks, convs[columns.CLICK_ID],
                            convs[columns.CONVERSION_TS], t, spec,
                            labels.prior_delay(spec),
                            [c.name for c in cfg.dataset.example_columns()])


def _validate(stats, environment=None):
  anomalies = tfdv.validate_statistics(stats, _schema(),
                                       environment=environment)
  return {k: v.short_description for k, v in anomalies.anomaly_info.items()}


def _encoded(cols):
  """Joined columns as the ExampleGen writes them: float32, int64 and strings."""
  return codec.encode({k: v.astype(np.float32) if v.dtype.kind == 'f' else v
                           for k, v in cols.items()})


def _stats(cols):
  """TFDV statistics of the tf.Examples (decoded as TFX decodes them)."""
  batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(_encoded(cols))
  return stats_impl.generate_statistics_in_memory(batch)


def test_joined_examples_validate_as_tfrecords(joined, tmp_path):
  # Through TFRecord files and TFDV's Beam statistics, as StatisticsGen does.
  path = str(tmp_path / 'joined.tfrecord')
  with tf.io.TFRecordWriter(path) as w:
    for rec in _encoded(joined):
      w.write(rec)
  stats = tfdv.generate_statistics_from_tfrecord(path)
  # ExampleValidator validates with no environment: the declared-but-absent
  # teacher columns must not be anomalies there either.
  assert _validate(stats) == {}
  assert _validate(stats, schemas.RAW) == {}


@pytest.fixture(scope='module')
def clean_stats(joined):
  """The unaltered window's statistics, computed once for every planted defect."""
  return _stats(joined)


def _defect(joined, fn):
  cols = {k: np.array(v, copy=True) for k, v in joined.items()}
  fn(cols)
  return _stats(cols)


def _unknown_browser(c):
  c[synthetic.BROWSER][:3] = 9
  c[columns.OBSERVED_FRACTION][:3] = np.nan  # as labels_as_of writes it


@pytest.mark.parametrize('name, fn, feature, description', [
    ('negative count', lambda c: c['conversions_0_2d'].__setitem__(0, -1),
     'conversions_0_2d', 'Out-of-range values'),
    ('unknown browser id', _unknown_browser, synthetic.BROWSER, 'Out-of-range values'),
    ('missing column', lambda c: c.pop('price'), 'price', 'Column dropped'),
    ('exposure above one', lambda c: c['exposure_2_7d'].__setitem__(0, 1.5),
     'exposure_2_7d', 'Out-of-range values'),
    ('non-positive tCPA', lambda c: c[synthetic.TARGET_CPA].__setitem__(0, 0.0),
     synthetic.TARGET_CPA, 'Out-of-range values'),
    ('NaN feature', lambda c: c['user_engagement'].__setitem__(0, np.nan),
     'user_engagement', 'Invalid values'),
    ('NaN observed fraction', _unknown_browser, columns.OBSERVED_FRACTION,
     'Invalid values'),
])
def test_planted_defects_are_anomalies(joined, clean_stats, name, fn, feature,
                                      description):
  assert _validate(clean_stats) == {}
  found = _validate(_defect(joined, fn))
  assert feature in found, (name, found)
  assert description in found[feature], (name, found)


def test_teacher_columns_are_checked_in_distill(joined):
  cols = dict(joined)
  n = len(cols[columns.CLICK_ID])
  for name in synthetic.TEACHER_RATES:
    cols[name] = np.full(n, 0.01, np.float32)
  cols[synthetic.TEACHER_RATES[0]][0] = -1.0
  found = _validate(_stats(cols), schemas.DISTILL)
  assert synthetic.TEACHER_RATES[0] in found, found
