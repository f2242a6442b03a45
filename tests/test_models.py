"""Model code: architectures' sizes and inputs, the thinned Poisson loss, features."""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tensorflow_transform.tf_metadata import schema_utils

from components.example_gen import executor as example_gen_executor
import config as config_lib
from models import data
from models import distill
from models import features as features_lib
from models import losses
from models import nll
from models import student_trainer
from models import teacher_trainer
from models import towers
from schemas import codec
from schemas import columns
from world import synthetic


@pytest.fixture(scope='module')
def cfg():
  return config_lib.load_config()


def test_teacher_dense_tower_is_about_three_times_the_students(cfg):
  teacher = towers.parameter_counts(towers.build_teacher(cfg))
  student = towers.parameter_counts(towers.build_student_tower(cfg))
  assert 2.7 <= teacher['dense'] / student['dense'] <= 3.3, (teacher, student)
  # Embedding tables are counted apart: the teacher has the same tables.
  assert teacher['embedding'] == student['embedding'] > 0


def test_teacher_reads_teacher_only_features_and_the_student_does_not(cfg):
  teacher_inputs = set(towers.build_teacher(cfg).input)
  student_inputs = set(towers.build_student_tower(cfg).input)
  assert set(synthetic.TEACHER_ONLY_FEATURES) <= teacher_inputs
  assert student_inputs == set(synthetic.SERVING_FEATURES)
  # Panel membership and the truth are offline-only: no model reads them as a
  # feature (the teacher may use the panel in its likelihood, never as an input).
  offline = {synthetic.IN_PANEL} | set(synthetic.TRUTH_COLUMNS)
  assert synthetic.IN_PANEL in offline
  assert not offline & (teacher_inputs | student_inputs)
  assert synthetic.ADVERTISER_FIRST_PARTY in student_inputs


def test_hint_width_and_heads(cfg):
  out = towers.build_teacher(cfg).output
  assert out[towers.LOG_RATES].shape[-1] == len(synthetic.WINDOWS)
  assert out[towers.HINT].shape[-1] == cfg.model.teacher.hidden_units[
      cfg.model.teacher.hint_layer]


def test_thinned_poisson_equals_the_reference_nll():
  rng = np.random.default_rng(0)
  n = 500
  rates = rng.gamma(0.5, 0.05, (n, 3))
  exposures = rng.uniform(0, 1, (n, 3))
  exposures[:50, 2] = 0.0  # a window not yet open
  fraction = rng.choice([1.0, 0.3], (n, 1))
  offsets = exposures * fraction
  counts = rng.poisson(offsets * rates)
  targets = {losses.COUNTS: tf.constant(counts, tf.float32),
             losses.EXPOSURES: tf.constant(exposures, tf.float32),
             losses.OBSERVED_EXPOSURES: tf.constant(offsets, tf.float32),
             losses.OBSERVED_FRACTION: tf.constant(fraction, tf.float32)}
  got = losses.thinned_poisson_loss(targets, tf.constant(np.log(rates), tf.float32))
  want = sum(nll.poisson_nll_per_example(counts[:, w], offsets[:, w] * rates[:, w])
             for w in range(3))
  np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=1e-6)
  # Without the observability correction the offset is the exposure alone.
  got = losses.thinned_poisson_loss(targets, tf.constant(np.log(rates), tf.float32),
                                    observability=False)
  want = sum(nll.poisson_nll_per_example(counts[:, w], exposures[:, w] * rates[:, w])
             for w in range(3))
  np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=1e-6)
  # A closed window contributes exactly zero, whatever the rate.
  closed = losses.poisson_nll_with_offset(
      tf.zeros([4]), tf.constant([-30.0, 0.0, 5.0, 15.0]), tf.zeros([4]))
  assert closed.numpy().tolist() == [0.0, 0.0, 0.0, 0.0]


def test_preprocessing_fn_uses_builtin_friendly_transforms(tmp_path):
  rng = np.random.default_rng(0)
  names = synthetic.TEACHER_FEATURES
  rows = []
  for _ in range(200):
    row = {}
    for name in names:
      col = synthetic.column(name)
      row[name] = ([int(rng.integers(0, 10_000))] if col.dtype == 'int'
                   else [float(rng.lognormal(2, 1))])
    rows.append(row)
  meta = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(
      features_lib.raw_feature_spec(synthetic.features(names))))
  with tft_beam.Context(temp_dir=str(tmp_path)):
    (out, _), _ = (rows, meta) | tft_beam.AnalyzeAndTransformDataset(
        functools.partial(features_lib.preprocessing_fn,
                          custom_config=features_lib.transform_config(
                              synthetic.features(names))))
  for name in names:
    col = synthetic.column(name)
    values = np.array([r[name] for r in out]).ravel()
    if col.kind == columns.Kind.CATEGORICAL:
      want = np.array([r[name][0] for r in rows]) % col.buckets
      np.testing.assert_array_equal(values, want)
    else:
      assert abs(values.mean()) < 1e-4 and abs(values.std() - 1) < 1e-2, name


def test_rescaling_embeddings_leaves_the_float_function_unchanged(cfg):
  network = towers.build_student_tower(cfg)
  rng = np.random.default_rng(0)
  feats = {}
  for name in synthetic.SERVING_FEATURES:
    col = synthetic.column(name)
    feats[name] = (rng.integers(0, col.buckets, (64, 1)) if col.buckets
                   else rng.normal(size=(64, 1)).astype(np.float32))
  before = network(feats)[towers.LOG_RATES].numpy()
  towers.rescale_embeddings(network, synthetic.features(synthetic.SERVING_FEATURES),
                           target=2.0)
  after = network(feats)[towers.LOG_RATES].numpy()
  np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
  for layer in network.layers:
    if isinstance(layer, tf.keras.layers.Embedding):
      assert abs(float(np.abs(layer.get_weights()[0]).max()) - 2.0) < 1e-5


def _day_sorted_examples(days=4, per_day=500):
  """Clicks in day-sorted runs (how the join delivers them to the writer)."""
  ids = np.arange(days * per_day, dtype=np.int64)  # ids grow with time
  return {columns.CLICK_ID: ids,
          columns.CLICK_TS: (ids // per_day) * 86400 + ids % per_day}


def _files(tmp_path, cols, hashed):
  """Two gzip TFRecord files: the ExampleGen's (by a hash of click_id, in hash
  order) or day-sorted halves (how its Beam write used to shard)."""
  ids = cols[columns.CLICK_ID]
  if hashed:
    key = example_gen_executor.order_keys(ids)
    parts = [np.flatnonzero(key % 2 == f) for f in range(2)]
    parts = [p[np.argsort(key[p])] for p in parts]
  else:
    parts = np.array_split(np.arange(len(ids)), 2)
  paths = []
  for f, part in enumerate(parts):
    paths.append(str(tmp_path / f'part-{f}.gz'))
    with tf.io.TFRecordWriter(paths[-1], options='GZIP') as w:
      for record in codec.encode({k: v[part] for k, v in cols.items()}):
        w.write(record)
  return paths


@pytest.mark.parametrize('hashed,buffer,days_in_batch', [
    (True, 16, 4),  # the ExampleGen's shards: a small buffer mixes every day
    (False, 10_000, 4),  # day-sorted files needed a window-sized buffer,
    (False, 16, 1)])  # else single-day batches (the bug the shards remove)
def test_training_batches_mix_days_with_a_bounded_buffer_on_the_example_gen_shards(
    tmp_path, hashed, buffer, days_in_batch):
  files = _files(tmp_path, _day_sorted_examples(), hashed)
  ds = data.raw_dataset(files, [columns.CLICK_TS], 256, synthetic.spec(), seed=3,
                        shuffle_buffer=buffer, read_parallelism=1)
  days = {int(t) // 86400 for t in next(iter(ds))[columns.CLICK_TS].numpy().ravel()}
  assert len(days) == days_in_batch


def test_model_config_shuffle_buffer_reaches_both_trainers(cfg, monkeypatch):
  seen = []

  class Built(Exception):
    pass

  def record(*unused_args, **kwargs):
    seen.append((kwargs['shuffle_buffer'], kwargs['read_parallelism']))
    raise Built

  monkeypatch.setattr(data, 'model_dataset', record)
  cfg = config_lib.load_config(None, ['model.shuffle_buffer=1234',
                                      'model.read_parallelism=3'])
  with pytest.raises(Built):
    teacher_trainer.training_dataset(['x'], None, cfg)
  with pytest.raises(Built):
    student_trainer.dataset(['x'], None, cfg, distill.DistillWeights.from_config(cfg.distill))
  assert seen == [(1234, 3), (1234, 3)]
