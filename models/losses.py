"""Losses as pure TensorFlow functions (docs/architecture.md §4-5).

Observation model: observed_w ~ Poisson(o_w * lambda_w), so a head predicting
log lambda_w is trained with the offset log(o_w): o_w the observed exposure
`observed_exposure_<w>` (f_b * e_w when observability does not depend on the delay;
observation/labels.py) for the teacher and the offset-corrected student, o_w = e_w
for the production recipe, which ignores observability. All NLLs are exact (they include log y!), so their values compare
with the reference implementation `models.nll`.

Reductions: per-example losses are summed over windows and averaged over the
*global* batch (tf.nn.compute_average_loss), so gradients are the same under any
distribution strategy.
"""

from typing import Dict

import tensorflow as tf

from models import towers

# Keeps exp() finite and gradients alive for absurd early predictions.
_LOG_RATE_RANGE = (-30.0, 15.0)

COUNTS = 'counts'  # [B, windows] conversions reported by T
EXPOSURES = 'exposures'  # [B, windows] e_w
OBSERVED_EXPOSURES = 'observed_exposures'  # [B, windows] o_w
OBSERVED_FRACTION = 'observed_fraction'  # [B, 1] f_b
# [B, 1] 1 for a measurement-panel click (the dataset's panel column, renamed
# to this key by the trainers' input pipelines).
IN_PANEL = 'panel'
# Keeps the prior's observed share inside (0, 1) for its logit.
_SHARE_RANGE = (1e-6, 1.0 - 1e-6)


def poisson_nll_with_offset(counts: tf.Tensor, log_rates: tf.Tensor,
                            offsets: tf.Tensor) -> tf.Tensor:
  """Exact Poisson NLL of counts with mean offsets * exp(log_rates), elementwise.

  A window with offset 0 (not open yet, or nothing observable) contributes exactly
  0: its mean is 0 and its count must be 0.
  """
  log_rates = tf.clip_by_value(log_rates, *_LOG_RATE_RANGE)
  mu = offsets * tf.exp(log_rates)
  return (mu - tf.math.xlogy(counts, offsets) - counts * log_rates +
          tf.math.lgamma(counts + 1.0))


def observation_offsets(targets: Dict[str, tf.Tensor],
                        observability: bool) -> tf.Tensor:
  """The observed exposure o_w with the observability correction, else e_w."""
  return targets[OBSERVED_EXPOSURES] if observability else targets[EXPOSURES]


def thinned_poisson_loss(targets: Dict[str, tf.Tensor], log_rates: tf.Tensor,
                         observability: bool = True) -> tf.Tensor:
  """Per-example NLL of the reported counts, summed over windows: shape [B]."""
  return tf.reduce_sum(poisson_nll_with_offset(
      targets[COUNTS], log_rates, observation_offsets(targets, observability)),
                       axis=1)


def clip_share(share: tf.Tensor) -> tf.Tensor:
  """An observed share kept inside (0, 1), so that its logit is finite."""
  return tf.clip_by_value(share, *_SHARE_RANGE)


def logit(share: tf.Tensor) -> tf.Tensor:
  return tf.math.log(share) - tf.math.log1p(-share)


def teacher_offsets(targets: Dict[str, tf.Tensor],
                    outputs: Dict[str, tf.Tensor]) -> tf.Tensor:
  """The teacher's offsets: o_w, or with its observability head
  e_w * sigmoid(logit(o_w / e_w) + d_w) off the panel and e_w on it.

  A panel click's conversions are all observed: the head does not apply there,
  so the panel pins the rate and the head learns, elsewhere, what the prior's
  observed share o_w / e_w misses. The logit scale keeps the share in (0, 1)
  with gradients everywhere (a factor capped at e_w would stall at the cap).
  """
  offsets = observation_offsets(targets, True)
  if towers.OBS_LOGIT_SHIFT not in outputs:
    return offsets
  exposures = targets[EXPOSURES]
  share = clip_share(tf.math.divide_no_nan(offsets, exposures))
  learned = exposures * tf.sigmoid(logit(share) + outputs[towers.OBS_LOGIT_SHIFT])
  panel = tf.cast(targets[IN_PANEL], tf.bool)
  return tf.where(panel, exposures, learned)


def teacher_loss(targets: Dict[str, tf.Tensor],
                 outputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """The teacher's loss: the exact thinned likelihood (offset log o_w, with
  the observability head's factor when the teacher has one)."""
  per_example = tf.reduce_sum(poisson_nll_with_offset(
      targets[COUNTS], outputs[towers.LOG_RATES], teacher_offsets(targets, outputs)),
                              axis=1)
  return {'loss': tf.nn.compute_average_loss(per_example)}
