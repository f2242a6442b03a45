"""The loss LossModel logs is the global batch's under a 2-replica strategy.

Logical devices must be set before TensorFlow starts, so the check runs in a fresh
process (`python -m tests.test_logged_loss`, as tests/distribution_check.py does)
and prints JSON; the test compares its numbers.
"""

import json
import os
import sys
from world import synthetic

# Unequal teacher-available counts across the two replicas' halves.
MASK = [1, 1, 1, 0, 1, 0, 0, 0]


def main():
  """Logged loss (fit and evaluate) under 2 replicas vs the one-device loss."""
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow as tf
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  import config as config_lib
  from models import distill
  from models import features as features_lib
  from models import losses
  from models import student_trainer
  from models import towers
  from models import training
  import schemas
  from tests.test_distill import batch
  from tests.test_distill import features
  # pylint: enable=g-import-not-at-top

  tf.keras.utils.set_random_seed(0)
  cfg = config_lib.load_config(None, ['training.jit_compile=false'])
  w = distill.DistillWeights(alpha=0.5, temperature=2.0, aux_weight=0.5,
                             hint_weight=0.1, tcpa_beta=0.5)
  rng = np.random.default_rng(0)
  targets, _ = batch(MASK, hint_width=schemas.hint_width())
  strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])

  def logged(build, compile_fn, loss_fn, names):
    """(one-device loss, logged evaluate loss, logged fit loss) on one batch."""
    feats = features(names, len(MASK), rng)
    single = build()
    want = float(loss_fn(targets, single(feats))['loss'])
    with strategy.scope():
      network = build()
      model = compile_fn(network)
      # Eager steps: the reductions are the same, without minutes of tracing.
      model.run_eagerly = True
    network.set_weights(single.get_weights())
    ds = tf.data.Dataset.from_tensor_slices((feats, targets)).batch(len(MASK))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
    ds = ds.with_options(options)
    evaluated = model.evaluate(ds, steps=1, verbose=0, return_dict=True)['loss']
    # fit logs the loss of the weights before its one update.
    fitted = model.fit(ds.repeat(), steps_per_epoch=1, epochs=1,
                       verbose=0).history['loss'][0]
    return {'single': want, 'evaluate': float(evaluated), 'fit': float(fitted)}

  def compile_teacher(network):
    model = training.LossModel(network, losses.teacher_loss)
    model.compile(optimizer=training.optimizer(cfg.model.teacher, 1))
    return model

  print(json.dumps({
      'replicas': strategy.num_replicas_in_sync,
      'student': logged(lambda: student_trainer.build_network(cfg, w),
                        lambda n: student_trainer.compile_model(cfg, w, n, 1),
                        lambda t, o: distill.student_loss(t, o, w),
                        synthetic.SERVING_FEATURES),
      'teacher': logged(lambda: towers.build_teacher(cfg), compile_teacher,
                        losses.teacher_loss, synthetic.TEACHER_FEATURES),
  }))


def test_logged_loss_under_two_replicas_is_the_global_loss():
  # Imported here: the module's own process must not load the pipeline.
  from tests.helpers import run_module_json  # pylint: disable=g-import-not-at-top
  result = run_module_json('tests.test_logged_loss')
  assert result['replicas'] == 2
  for model in ('student', 'teacher'):
    got = result[model]
    for key in ('evaluate', 'fit'):
      assert abs(got[key] - got['single']) <= 1e-5 * abs(got['single']), (model, got)


if __name__ == '__main__':
  sys.exit(main())
