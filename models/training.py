"""A Keras model that trains a network with a loss over (targets, outputs).

Keras' compiled losses take one label tensor per output; the losses here read
several targets (counts, exposures, observed fraction, teacher columns, masks), so
the step is written out. It runs under Model.fit, so distribution strategies,
steps_per_execution and jit_compile apply as usual.
"""

import math
from typing import Callable, Dict, Sequence

import tensorflow as tf

from config import NetConfig
from models import distill
from models import progress

LossFn = Callable[[Dict[str, tf.Tensor], Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]


class LossModel(tf.keras.Model):
  """Wraps `network` (features -> outputs dict) with `loss_fn` -> {'loss', ...}.

  `term_names` are the keys `loss_fn` returns; each is tracked as a running mean
  over the epoch (Keras reports a model's metrics, not the last step's values).
  `loss_fn`'s 'loss' must be this replica's share of the global batch's loss (the
  replicas' shares add up to it, as tf.nn.compute_average_loss and
  distill.student_loss return); it is differentiated as is and reported summed
  over replicas. Every other term is reported as returned, so must be global.
  """

  def __init__(self, network: tf.keras.Model, loss_fn: LossFn,
               term_names: Sequence[str] = ('loss',), **kwargs):
    super().__init__(**kwargs)
    self.network = network
    self.loss_fn = loss_fn
    self.trackers = {n: tf.keras.metrics.Mean(name=n) for n in term_names}

  @property
  def metrics(self):
    return list(self.trackers.values())

  def call(self, features, training=False):
    return self.network(features, training=training)

  def _track(self, terms):
    # Each replica's tracker averages what it is given, and Keras averages the
    # replicas: a share would be reported as global / replicas.
    terms = dict(terms, loss=distill.global_sum(terms['loss']))
    for name, tracker in self.trackers.items():
      tracker.update_state(terms[name])
    return {name: tracker.result() for name, tracker in self.trackers.items()}

  def train_step(self, data):
    features, targets = data
    with tf.GradientTape() as tape:
      terms = self.loss_fn(targets, self(features, training=True))
      loss = terms['loss']
      if self.network.losses:
        # Summed over replicas like the data loss, so divided by their number.
        loss += tf.nn.scale_regularization_loss(tf.add_n(self.network.losses))
    grads = tape.gradient(loss, self.trainable_variables)
    self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
    return self._track(terms)

  def test_step(self, data):
    features, targets = data
    return self._track(self.loss_fn(targets, self(features, training=False)))


def set_seed(seed: int) -> None:
  """Seeds Python, NumPy and TensorFlow, and makes TensorFlow's ops deterministic.

  With the same seed and the same files, two runs train the same weights (op
  determinism also fixes the order of tf.data's parallel maps and of reductions).
  It holds for the rest of the process, and random ops without a seed then raise.
  Call it before building the datasets: tf.data's seeded shuffles combine their
  seed with the process's global seed, so a dataset built before it would
  shuffle by whatever seed an earlier Trainer in the same process (BeamDagRunner
  runs them in one) left behind.
  """
  tf.keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()


def steps_from_data(net_cfg: NetConfig, examples: int) -> int:
  """Training steps for `examples` training examples: ceil(epochs x examples /
  batch_size), at least 1, at most max_steps (config NetConfig)."""
  steps = math.ceil(net_cfg.epochs * max(0, int(examples)) / net_cfg.batch_size)
  return int(min(net_cfg.max_steps, max(1, steps)))


def resolve_steps(fn_args, net_cfg: NetConfig,
                  count: Callable[[], int]) -> Dict:
  """Sets fn_args.train_steps (and eval_steps, 1/20 of it) when the Trainer was
  given none (the config's train_steps unset: pipeline.py) from the number of
  training examples, `count()` (called only then); returns the summary's record
  of the training length (examples seen = steps x batch size)."""
  explicit = bool(getattr(fn_args, 'train_steps', None))
  record = {}
  if explicit:
    record['steps_from'] = 'train_steps'
  else:
    examples = int(count())
    wanted = math.ceil(net_cfg.epochs * examples / net_cfg.batch_size)
    fn_args.train_steps = steps_from_data(net_cfg, examples)
    # What set the length: epochs over the data, or the budget.
    record['steps_from'] = 'max_steps' if wanted > net_cfg.max_steps else 'epochs'
    record['training_examples'] = examples
    record['epochs_seen'] = round(
        fn_args.train_steps * net_cfg.batch_size / max(1, examples), 3)
  if not getattr(fn_args, 'eval_steps', None):
    fn_args.eval_steps = max(1, fn_args.train_steps // 20)
  record.update(train_steps=fn_args.train_steps,
                examples_seen=fn_args.train_steps * net_cfg.batch_size)
  return record


def optimizer(net_cfg: NetConfig, train_steps: int) -> tf.keras.optimizers.Optimizer:
  """Adam with the configured learning rate and schedule."""
  rate = net_cfg.learning_rate
  if net_cfg.lr_schedule == 'cosine':
    rate = tf.keras.optimizers.schedules.CosineDecay(rate, max(1, train_steps),
                                                     alpha=0.1)
  return tf.keras.optimizers.Adam(rate)


def fit(model: tf.keras.Model, train: tf.data.Dataset, evaluation: tf.data.Dataset,
        fn_args, callbacks: Sequence[tf.keras.callbacks.Callback] = (),
        batch_size: int = 0) -> tf.keras.callbacks.History:
  """One epoch of the Trainer's train_steps, validated on its eval_steps
  (`callbacks`: e.g. pruning's mask steps). Every step is reported to
  models.progress (the console's progress line and key figure, which says how
  many examples it saw at `batch_size` a step)."""
  return model.fit(train, steps_per_epoch=fn_args.train_steps, epochs=1,
                   validation_data=evaluation,
                   validation_steps=max(1, fn_args.eval_steps or 1), verbose=2,
                   callbacks=[*callbacks,
                              progress.KerasProgress(fn_args.train_steps,
                                                     batch_size)])
