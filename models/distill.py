"""The student's loss: hard window heads, output distillation, the modeled-
conversion auxiliary head, the FitNets hint, and tCPA weights (docs/architecture.md §5).

Per example i and window w, with o_iw the observation offset (f_b * e_w, or e_w
without the observability correction), s_iw the student's log-rate, a_iw its
auxiliary log-rate, t_iw the teacher's rate, m_i = 1 if the teacher's columns are
available (click_ts <= T - lag) and finite, else 0 (the teacher terms are masked),
and v_i = (tCPA_i / tcpa_reference)^beta the tCPA weight of the distilled terms:

  hard_i = sum_w NLL_Poisson(y_iw | o_iw e^{s_iw})
  soft_i = KL(Poisson(T_i) || Poisson(S_i))
           + tau^2 T_i KL(softmax_w(log t_iw / tau) || softmax_w(s_iw / tau)),
           T_i = sum_w t_iw, S_i = sum_w e^{s_iw}
  aux_i  = sum_w NLL_Poisson(y_iw + (e_iw - o~_iw) t_iw | e_iw e^{a_iw})
           (observed + modeled conversions, paper §IV.A; o~_iw the teacher's
           observed exposure, its observability head's, else o_iw)
  hint_i = 0.5 ||h^T_i - g(h^S_i)||^2            (g: learned linear projection)

  L = (1 - alpha) * sum_i hard_i / B
      + [alpha * sum_i m_i v_i soft_i + lambda_aux * sum_i m_i v_i aux_i
         + gamma * sum_i m_i v_i hint_i] / max(1, M)

The soft term: independent Poisson windows factorise exactly as
KL(prod_w Poi(t_w) || prod_w Poi(s_w)) = KL(Poi(T) || Poi(S)) + T KL(t/T || s/S),
so at tau = 1 soft_i is the Poisson KL summed over windows. The temperature
softens only the split over delay windows (Hinton's temperature on the
categorical part; tau^2 keeps its gradient scale), never the total rate, which
is matched exactly. (Tempering log-rates instead, t -> t^{1/tau}, would move
rates of ~0.05 towards 1: a change of scale, not a softening.)

Denominators: B is the global batch size and M = sum_i m_i the global number of
teacher-available examples, both over all replicas (an all-reduce of the local
mask count), so every replica's share of the loss, and the summed gradients, are
those of the global batch whatever the strategy and however the masked examples
fall across replicas. With alpha = lambda_aux = gamma = 0 the loss is the hard loss.
A masked example's teacher columns are replaced by finite placeholders before any
term is computed, so it adds exactly zero to the loss and to every gradient
whatever those columns hold (NaN, inf).
"""

import dataclasses
from typing import Dict, List, Tuple

import tensorflow as tf

from config import DistillConfig
from models import losses
from models import towers

# Keys of the student network's outputs.
LOG_RATES = towers.LOG_RATES
AUX_LOG_RATES = towers.AUX_LOG_RATES
HINT_PROJECTION = towers.HINT_PROJECTION
# Keys of the targets the distillation terms read.
TEACHER_RATES = 'teacher_rates'  # [B, W]
TEACHER_HINT = 'teacher_hint'  # [B, H]
# [B, W] the teacher's observed exposure as of T (its observability head's, or
# the prior's o_w without one).
TEACHER_OBSERVED = 'teacher_observed_exposures'
TEACHER_MASK = 'teacher_mask'  # [B, 1] 1.0 where the teacher's columns count
# [B, 1] the click's tCPA (the dataset's tCPA column; tcpa_reference, a weight of
# 1, when it has none).
TCPA = 'tcpa'

TERMS = ('loss', 'hard', 'soft', 'aux', 'hint', 'teacher_examples')
_LOG_RANGE = (-30.0, 15.0)


@dataclasses.dataclass(frozen=True)
class DistillWeights:
  """The weights of the student's loss terms (see the module docstring)."""
  hard_observability: bool = True
  alpha: float = 0.0
  temperature: float = 1.0
  aux_weight: float = 0.0
  hint_weight: float = 0.0
  tcpa_beta: float = 0.0
  tcpa_reference: float = 60.0
  # Teacher-free uses of the measurement panel (config.DistillConfig's recipes).
  panel_only: bool = False
  panel_calibrated: bool = False
  observability_head: bool = False

  @property
  def uses_panel(self) -> bool:
    return self.panel_only or self.panel_calibrated or self.observability_head

  @property
  def uses_teacher(self) -> bool:
    return self.alpha > 0 or self.aux_weight > 0 or self.hint_weight > 0

  @classmethod
  def from_config(cls, distill: DistillConfig) -> 'DistillWeights':
    """The weights of the configured recipe (teacher terms only for kd)."""
    if distill.recipe == 'production':
      return cls(hard_observability=False)
    if distill.recipe == 'offset':
      return cls(hard_observability=True)
    if distill.recipe == 'offset_panel_calibrated':
      return cls(hard_observability=True, panel_calibrated=True)
    if distill.recipe == 'panel_only':
      return cls(hard_observability=True, panel_only=True)
    if distill.recipe == 'offset_observability_head':
      return cls(hard_observability=True, observability_head=True)
    return cls(hard_observability=distill.hard_observability, alpha=distill.alpha,
               temperature=distill.temperature, aux_weight=distill.aux_weight,
               hint_weight=distill.hint_weight, tcpa_beta=distill.tcpa_beta,
               tcpa_reference=distill.tcpa_reference)


def poisson_kl(teacher_log_rate: tf.Tensor, student_log_rate: tf.Tensor) -> tf.Tensor:
  """KL(Poisson(e^{lt}) || Poisson(e^{ls})) elementwise; 0 where they are equal."""
  lt = tf.clip_by_value(teacher_log_rate, *_LOG_RANGE)
  ls = tf.clip_by_value(student_log_rate, *_LOG_RANGE)
  rate_t = tf.exp(lt)
  return rate_t * (lt - ls) - rate_t + tf.exp(ls)


def soft_kl(teacher_log_rate: tf.Tensor, student_log_rate: tf.Tensor,
            temperature: float = 1.0) -> tf.Tensor:
  """soft_i of the module docstring from [B, W] log-rates: shape [B].

  Args:
    teacher_log_rate: log t_iw.
    student_log_rate: s_iw.
    temperature: tau; it softens the split over windows, not the total rate.

  Returns:
    KL(Poi(T) || Poi(S)) + tau^2 T KL(softmax(log t / tau) || softmax(s / tau)):
    0 where s = log t, non-negative, and at tau = 1 the sum over windows of
    poisson_kl (with the same clipping).
  """
  lt = tf.clip_by_value(teacher_log_rate, *_LOG_RANGE)
  ls = tf.clip_by_value(student_log_rate, *_LOG_RANGE)
  log_total_t = tf.reduce_logsumexp(lt, axis=1)
  log_total_s = tf.reduce_logsumexp(ls, axis=1)
  total_t = tf.exp(log_total_t)
  total = total_t * (log_total_t - log_total_s) - total_t + tf.exp(log_total_s)
  log_p = tf.nn.log_softmax(lt / temperature, axis=1)
  log_q = tf.nn.log_softmax(ls / temperature, axis=1)
  split = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=1)
  return total + temperature**2 * total_t * split


def global_sum(x: tf.Tensor) -> tf.Tensor:
  """Sum over the global batch: all-reduced across replicas, if any."""
  total = tf.reduce_sum(x)
  ctx = tf.distribute.get_replica_context()
  if ctx is not None and ctx.num_replicas_in_sync > 1:
    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, total)
  return total


def global_batch_size(x: tf.Tensor) -> tf.Tensor:
  return global_sum(tf.ones_like(x[:, 0]))


def per_example_terms(targets: Dict[str, tf.Tensor], outputs: Dict[str, tf.Tensor],
                      w: DistillWeights) -> Dict[str, tf.Tensor]:
  """hard_i, soft_i, aux_i, hint_i, each [B] (unmasked, unweighted)."""
  if w.observability_head:
    # Its own head moves the prior's observed share off the panel, as the
    # teacher's does (losses.teacher_offsets).
    out = {'hard': tf.reduce_sum(losses.poisson_nll_with_offset(
        targets[losses.COUNTS], outputs[LOG_RATES],
        losses.teacher_offsets(targets, outputs)), axis=1)}
  else:
    out = {'hard': losses.thinned_poisson_loss(targets, outputs[LOG_RATES],
                                               w.hard_observability)}
  zeros = tf.zeros_like(out['hard'])
  if w.alpha > 0:
    log_t = tf.math.log(tf.maximum(targets[TEACHER_RATES], 1e-30))
    out['soft'] = soft_kl(log_t, outputs[LOG_RATES], w.temperature)
  else:
    out['soft'] = zeros
  if w.aux_weight > 0:
    # Modeled conversions: the unobserved part of what is due by T, (e_w - o~_w)
    # t_w, with the teacher's observed exposure o~_w where it wrote one (its
    # observability head's estimate), else the prior's o_w.
    exposure = targets[losses.EXPOSURES]
    observed = targets.get(TEACHER_OBSERVED, targets[losses.OBSERVED_EXPOSURES])
    unobserved = tf.maximum(exposure - observed, 0.0)
    modeled = unobserved * targets[TEACHER_RATES]
    out['aux'] = tf.reduce_sum(losses.poisson_nll_with_offset(
        targets[losses.COUNTS] + modeled, outputs[AUX_LOG_RATES], exposure), axis=1)
  else:
    out['aux'] = zeros
  if w.hint_weight > 0:
    out['hint'] = 0.5 * tf.reduce_sum(
        tf.square(targets[TEACHER_HINT] - outputs[HINT_PROJECTION]), axis=1)
  else:
    out['hint'] = zeros
  return out


def _teacher_columns(w: DistillWeights, targets: Dict[str, tf.Tensor]
                     ) -> List[Tuple[str, float]]:
  """The teacher columns the weighted terms read, each with a finite placeholder
  (the teacher's observed exposure only where it was given)."""
  cols = []
  if w.alpha > 0 or w.aux_weight > 0:
    cols.append((TEACHER_RATES, 1.0))
  if w.hint_weight > 0:
    cols.append((TEACHER_HINT, 0.0))
  if w.aux_weight > 0 and TEACHER_OBSERVED in targets:
    cols.append((TEACHER_OBSERVED, 0.0))
  return cols


def student_loss(targets: Dict[str, tf.Tensor], outputs: Dict[str, tf.Tensor],
                 w: DistillWeights) -> Dict[str, tf.Tensor]:
  """This replica's share of the global loss, and each term's global value.

  Returns:
    'loss' (to differentiate; replicas' shares sum to the global loss), the
    global values of 'hard', 'soft', 'aux' and 'hint' (each over its own
    denominator, before its weight), and 'teacher_examples' (M).
  """
  outputs = {k: tf.cast(v, tf.float32) for k, v in outputs.items()}
  mask = tf.reshape(targets.get(TEACHER_MASK,
                                tf.zeros_like(outputs[LOG_RATES][:, :1])), [-1])
  available = mask > 0
  teacher_columns = _teacher_columns(w, targets)
  for key, _ in teacher_columns:
    # A non-finite teacher column (a failed inference) masks its example too.
    available &= tf.reduce_all(tf.math.is_finite(targets[key]), axis=1)
  # tf.where zeroes a masked term's value, but the gradient through its branch
  # is 0 * d(term), NaN if a teacher column is: so the terms never see them.
  targets = dict(targets)
  for key, placeholder in teacher_columns:
    targets[key] = tf.where(available[:, None], targets[key], placeholder)
  terms = per_example_terms(targets, outputs, w)
  batch = global_batch_size(terms['hard'][:, None])
  out = {'hard': tf.reduce_sum(terms['hard']) / batch}
  loss = (1.0 - w.alpha) * out['hard']
  mask = tf.where(available, mask, 0.0)
  teacher_examples = global_sum(mask)
  denominator = tf.maximum(teacher_examples, 1.0)
  weight = mask
  if w.tcpa_beta != 0:
    weight = weight * tf.pow(tf.reshape(targets[TCPA], [-1]) / w.tcpa_reference,
                             w.tcpa_beta)
  # Masked (or non-finite, e.g. tCPA 0 with beta < 0) weights are exactly 0: the
  # gradient of weight * term is weight * d(term).
  weight = tf.where(available & tf.math.is_finite(weight), weight, 0.0)
  for name, coef in (('soft', w.alpha), ('aux', w.aux_weight),
                     ('hint', w.hint_weight)):
    # tf.where, not only the product: exactly 0 even if a masked term overflows.
    weighted = tf.where(weight > 0, weight * terms[name], 0.0)
    out[name] = tf.reduce_sum(weighted) / denominator
    if coef > 0:
      loss += coef * out[name]
  # Each replica holds its own examples' part of the global sums, so its loss
  # share is its local sums over the global denominators: the shares (and the
  # gradients the optimizer all-reduces) add up to the global loss.
  out['loss'] = loss
  out['teacher_examples'] = teacher_examples
  # Reported values are global: sum the replicas' shares.
  for name in ('hard', 'soft', 'aux', 'hint'):
    out[name] = global_sum(out[name])
  return out
