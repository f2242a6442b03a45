"""Run in a fresh process (logical devices must be set before TF starts): the
student's loss and gradients on one device vs a 2-replica MirroredStrategy.

Prints JSON: the largest absolute differences of loss and gradients.
"""

import json
import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

CPU = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import config as config_lib  # pylint: disable=g-import-not-at-top
from models import distill  # pylint: disable=g-import-not-at-top
from models import student_trainer  # pylint: disable=g-import-not-at-top
import schemas  # pylint: disable=g-import-not-at-top
from schemas import columns  # pylint: disable=g-import-not-at-top
from tests.test_distill import batch  # pylint: disable=g-import-not-at-top
from world import synthetic

W = distill.DistillWeights(alpha=0.5, temperature=2.0, aux_weight=0.5,
                           hint_weight=0.1, tcpa_beta=0.5)
# Unequal teacher-available counts: 3 on the first replica's half, 1 on the second.
MASK = [1, 1, 1, 0, 1, 0, 0, 0]


def features(n, rng):
  out = {}
  for name in synthetic.SERVING_FEATURES:
    col = synthetic.column(name)
    out[name] = (rng.integers(0, col.buckets, (n, 1)) if col.buckets
                 else rng.normal(size=(n, 1)).astype(np.float32))
  return out


def main():
  cfg = config_lib.load_config()
  rng = np.random.default_rng(0)
  feats = features(len(MASK), rng)
  targets, _ = batch(MASK, hint_width=schemas.hint_width())

  single = student_trainer.build_network(cfg, W)
  with tf.GradientTape() as tape:
    terms = distill.student_loss(targets, single(feats), W)
  single_grads = tape.gradient(terms['loss'], single.trainable_variables)

  strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  with strategy.scope():
    mirrored = student_trainer.build_network(cfg, W)
  mirrored.set_weights(single.get_weights())
  half = len(MASK) // 2

  def shard(tree):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: {k: v[ctx.replica_id_in_sync_group * half:
                          (ctx.replica_id_in_sync_group + 1) * half]
                     for k, v in tree.items()})

  def step(f, t):
    with tf.GradientTape() as tape:
      out = distill.student_loss(t, mirrored(f), W)
    return out['loss'], tape.gradient(out['loss'], mirrored.trainable_variables)

  shares, grads = strategy.run(step, args=(shard(feats), shard(targets)))
  loss = strategy.reduce(tf.distribute.ReduceOp.SUM, shares, axis=None)
  dense = tf.convert_to_tensor  # embedding gradients come as IndexedSlices
  grads = [dense(strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None))
           for g in grads]
  single_grads = [dense(g) for g in single_grads]
  print(json.dumps({
      'replicas': strategy.num_replicas_in_sync,
      'single_loss': float(terms['loss']),
      'loss_diff': abs(float(loss) - float(terms['loss'])),
      'grad_diff': max(float(tf.reduce_max(tf.abs(a - b)))
                       for a, b in zip(grads, single_grads)),
      'grad_scale': max(float(tf.reduce_max(tf.abs(b))) for b in single_grads),
  }))


if __name__ == '__main__':
  sys.exit(main())
