"""training.set_seed: two runs with the same seed train the same weights."""

import numpy as np
import pytest
import tensorflow as tf
# pylint: disable-next=g-direct-tensorflow-import
from tensorflow.python.framework import config as tf_config

import config as config_lib
from models import distill
from models import features as features_lib
from models import student_trainer
from models import training
from tests.test_distill import batch
from tests.test_distill import features
from world import synthetic

W = distill.DistillWeights(alpha=0.5, temperature=2.0, aux_weight=0.5,
                           hint_weight=0.1, tcpa_beta=0.5)


def train(seed):
  """A few Adam steps of a small student (with dropout) on shuffled batches."""
  training.set_seed(seed)
  cfg = config_lib.load_config(None, [
      'model.student.hidden_units=[16,8]', 'model.student.dropout=0.2',
      'training.jit_compile=false'])
  network = student_trainer.build_network(cfg, W, hint_width=4)
  model = student_trainer.compile_model(cfg, W, network, train_steps=6)
  # Eager steps, the same kernels and random streams: tracing fit takes ~30 s.
  model.run_eagerly = True
  n = 64
  rng = np.random.default_rng(0)  # the data are fixed; their order is not
  feats = features(synthetic.SERVING_FEATURES, n, rng)
  targets, _ = batch(rng.integers(0, 2, n), n=n)
  ds = tf.data.Dataset.from_tensor_slices((feats, targets))
  ds = ds.shuffle(n, reshuffle_each_iteration=True).batch(16).repeat()
  model.fit(ds, steps_per_epoch=6, epochs=1, verbose=0)
  return network.get_weights()


@pytest.mark.usefixtures('restore_op_determinism')
def test_same_seed_trains_the_same_weights():
  first, second = train(7), train(7)
  assert tf_config.is_op_determinism_enabled()
  assert all(np.array_equal(a, b) for a, b in zip(first, second))
  # Not vacuous: another seed (initialisation, dropout, order) trains others.
  other = train(8)
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.usefixtures('restore_op_determinism')
def test_training_input_order_depends_on_its_seed_alone(tmp_path):
  """What run_fn does (set_seed, then the datasets) shuffles the same whatever
  global seed an earlier Trainer in the process left behind."""
  from models import data  # pylint: disable=g-import-not-at-top
  from schemas import codec  # pylint: disable=g-import-not-at-top
  from schemas import columns  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'part.gz')
  with tf.io.TFRecordWriter(path, options='GZIP') as w:
    for record in codec.encode({columns.CLICK_ID: np.arange(400, dtype=np.int64),
                                columns.CLICK_TS: np.arange(400, dtype=np.int64)}):
      w.write(record)

  def order(prior, seed_first=True):
    tf.keras.utils.set_random_seed(prior)  # left by an earlier Trainer
    if seed_first:
      training.set_seed(0)
    ds = data.raw_dataset([path], [columns.CLICK_TS], 40, synthetic.spec(), seed=0)
    return np.concatenate([b[columns.CLICK_TS][:, 0] for b in ds.take(10).as_numpy_iterator()])
  assert np.array_equal(order(1), order(2))
  # Not vacuous: without seeding first, the earlier seed decides the order.
  assert not np.array_equal(order(1, False), order(2, False))
