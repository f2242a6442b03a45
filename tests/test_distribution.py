"""Distribution and XLA: the student's loss is strategy-independent; the
XLA-compiled train step runs on CPU."""

import numpy as np
import tensorflow as tf

import config as config_lib
from models import distill
from models import distribution
from models import student_trainer
import schemas
from tests.distribution_check import features
from tests.helpers import run_module_json
from tests.test_distill import batch


def test_two_replicas_with_unequal_masks_match_one_device():
  result = run_module_json('tests.distribution_check')
  assert result['replicas'] == 2
  assert result['loss_diff'] <= 1e-5 * abs(result['single_loss'])
  assert result['grad_diff'] <= 1e-5 * result['grad_scale'] + 1e-7


def test_default_strategy_on_cpu():
  strategy = distribution.get_strategy('auto')
  assert strategy.num_replicas_in_sync == 1
  assert not isinstance(strategy, (tf.distribute.MirroredStrategy,
                                   tf.distribute.TPUStrategy))


def test_xla_compiled_train_step_runs_on_cpu():
  cfg = config_lib.load_config(None, ['training.jit_compile=true'])
  w = distill.DistillWeights(alpha=0.5, aux_weight=0.5, hint_weight=0.1, tcpa_beta=0.5)
  network = student_trainer.build_network(cfg, w)
  model = student_trainer.compile_model(cfg, w, network)
  mask = [1, 0, 1, 1, 0, 1, 1, 0]
  rng = np.random.default_rng(0)
  feats = features(len(mask), rng)
  targets, _ = batch(mask, hint_width=schemas.hint_width())
  ds = tf.data.Dataset.from_tensors((feats, targets)).repeat()
  history = model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)
  assert np.isfinite(history.history['loss']).all()
  assert model._jit_compile  # pylint: disable=protected-access

  @tf.function(jit_compile=True)
  def step(f, t):
    with tf.GradientTape() as tape:
      out = distill.student_loss(t, network(f, training=True), w)
    return out['loss'], tape.gradient(out['loss'], network.trainable_variables)
  hlo = step.experimental_get_compiler_ir(feats, targets)(stage='hlo')
  assert 'HloModule' in hlo
  loss, grads = step(feats, targets)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
