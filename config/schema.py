"""The configuration's schema: one dataclass tree with defaults and checks.

Every section is a dataclass; `_field` attaches range and choice constraints that
`config.loader` checks on load, and a section's `check` validates across fields.
Sections also build the parameter types the components take (the LabelSpec of the
ExampleGen, the eval label of the Quantizer and the metric, the teacher's bar), so
each parameter is derived from the config in one place. Section numbers (§N)
refer to docs/architecture.md; this is §9.
"""

import dataclasses
import datetime
import fnmatch
import json
import math
import os
from typing import Dict, List, Optional, Tuple

from observation import eval_labels
from observation import labels
from observation import snapshot
from schemas import columns

from config.base import ConfigError  # pylint: disable=unused-import
from config.base import _field
from config.dataset import DatasetSpec


def _parse_utc(key: str, value: str) -> datetime.datetime:
  try:
    return snapshot.parse_utc(value)
  except ValueError as e:
    raise ConfigError(f'{key}: {value!r} is not an ISO 8601 time') from e


# --- Sections ----------------------------------------------------------------


@dataclasses.dataclass
class BrowserConfig:
  """A browser and the fraction of its conversions the advertiser observes."""
  id: int = _field(0, min=0)
  name: str = ''
  observed_fraction: float = _field(1.0, min=0.0, max=1.0, min_exclusive=True)


def _default_browsers() -> List[BrowserConfig]:
  # Fractions in the spirit of the paper: Chrome observed, others modeled.
  return [
      BrowserConfig(0, 'chrome', 1.0),
      BrowserConfig(1, 'android_webview', 0.9),
      BrowserConfig(2, 'safari', 0.3),
      BrowserConfig(3, 'firefox', 0.6),
      BrowserConfig(4, 'other', 0.2),
  ]


@dataclasses.dataclass
class PriorConfig:
  """A measurement study's observed share of true conversions for one segment
  (browser) x first-party flag, per delay segment (observability.segment_edges_hours;
  by default [0, 24), [24, 48), [48, 168), [168, 2160) hours)."""
  browser: int = _field(0, min=0)
  first_party: int = _field(0, min=0, max=1)
  segment_shares: List[float] = _field(
      default_factory=lambda: [1.0] * (len(labels.SEGMENT_EDGES_HOURS) - 1))

  def check(self, key: str) -> None:
    shares = self.segment_shares
    if not all(0.0 < x <= 1.0 for x in shares):
      raise ConfigError(f'{key}.segment_shares: values in (0, 1], one per delay '
                        f'segment, got {shares}')


PRIOR_SOURCES = ('config', 'world_manifest')


@dataclasses.dataclass
class ObservabilityConfig:
  """What the pipeline knows of observability: population priors, as measurement
  studies give them. `browsers` has f_b per browser; `priors`, when given, the
  observed share per browser x first-party flag x delay segment (every pair);
  without them every segment of browser b is f_b. `priors_source:
  world_manifest` takes both from the synthetic world's manifest.json under
  paths.data_root (what the generator computed as a measurement study would)."""
  browsers: List[BrowserConfig] = _field(default_factory=_default_browsers)
  priors: List[PriorConfig] = _field(default_factory=list)
  priors_source: str = _field('config', choices=PRIOR_SOURCES)
  # browser_observability slice: 'full' if f >= full_threshold, 'low' if
  # f < low_threshold, else 'partial'.
  full_threshold: float = _field(0.95, min=0.0, max=1.0)
  low_threshold: float = _field(0.5, min=0.0, max=1.0)
  # The delay segments the priors' shares are given for (hours; from 0 to at
  # least the last delay window's end): the windows' edges plus the cookie caps.
  segment_edges_hours: List[float] = _field(
      default_factory=lambda: list(labels.SEGMENT_EDGES_HOURS))

  def check(self, key: str) -> None:
    edges = self.segment_edges_hours
    if (len(edges) < 2 or edges[0] != 0 or
        any(b <= a for a, b in zip(edges[:-1], edges[1:]))):
      raise ConfigError(f'{key}.segment_edges_hours: increasing hours from 0, got '
                        f'{edges}')
    for i, p in enumerate(self.priors):
      if len(p.segment_shares) != len(edges) - 1:
        raise ConfigError(f'{key}.priors[{i}].segment_shares: needs {len(edges) - 1} '
                          f'values, one per delay segment of segment_edges_hours '
                          f'{edges}')
    ids = [b.id for b in self.browsers]
    if not ids:
      raise ConfigError(f'{key}.browsers: at least one browser is required')
    if sorted(ids) != list(range(len(ids))):
      raise ConfigError(f'{key}.browsers: ids must be 0..{len(ids) - 1} '
                        f'(dense int64 ids), got {ids}')
    if self.low_threshold > self.full_threshold:
      raise ConfigError(f'{key}.low_threshold: {self.low_threshold} is above '
                        f'{key}.full_threshold {self.full_threshold}')
    if self.priors:
      pairs = [(p.browser, p.first_party) for p in self.priors]
      want = [(b, fp) for b in ids for fp in (0, 1)]
      if sorted(pairs) != sorted(want):
        missing = sorted(set(want) - set(pairs))
        extra = sorted(set(pairs) - set(want))
        raise ConfigError(
            f'{key}.priors: needs exactly one entry per browser x first_party '
            f'(missing {missing}, unknown or repeated {extra or sorted(pairs)})')

  def segment_priors(self) -> Tuple[Tuple[float, ...], ...]:
    """Rows 2 * browser + first_party of segment shares (empty: none given)."""
    rows = sorted(self.priors, key=lambda p: (p.browser, p.first_party))
    return tuple(tuple(p.segment_shares) for p in rows)

  def fractions(self) -> List[float]:
    """Observed fraction indexed by browser id."""
    return [b.observed_fraction for b in sorted(self.browsers, key=lambda b: b.id)]


DELAY_SOURCES = ('fitted', 'prior')


@dataclasses.dataclass
class DelayConfig:
  """Where every exposure's delay distribution comes from (§4;
  observation/delay_fit.py).

  fitted: measured by the ExampleGen on the window's reported conversions (each
  right-truncated at its click's age, weighted by the observability priors'
  share by delay, by the spec's delay.segment_by), shrunk to the dataset spec's
  prior with `prior_conversions` pseudo-conversions; a segment with fewer than
  `min_segment_conversions` keeps the pooled fit. prior: the spec's prior as it
  is (the windows' prior_share and prior_scale_hours). Inside each window the
  delay is a truncated exponential either way.
  """
  source: str = _field('fitted', choices=DELAY_SOURCES)
  prior_conversions: float = _field(20.0, min=0.0)
  min_segment_conversions: int = _field(500, min=1)


@dataclasses.dataclass
class WorldConfig:
  """The synthetic world (§3): its difficulty is measured, never tuned."""
  seed: int = 42
  num_clicks: int = _field(100_000, min=1)
  start_date: str = '2026-01-01'
  days: int = _field(35, min=1)
  num_advertisers: int = _field(2000, min=1)
  advertiser_zipf_exponent: float = _field(1.1, min=0.0)
  tcpa_median: float = _field(60.0, min=0.0, min_exclusive=True)
  tcpa_sigma: float = _field(1.0, min=0.0)
  base_rate: float = _field(0.05, min=0.0, min_exclusive=True)
  # Multiplies the teacher-only features' effect on the true rate; 0 removes it.
  privileged_scale: float = _field(1.0, min=0.0)
  mobile_share: float = _field(0.55, min=0.0, max=1.0)
  # docs/observability-world.md: 0 reports each conversion with its browser's
  # observed fraction (the world before spec 1); 1 by click-level consent,
  # cookie caps and tag coverage. The spec's default world is 1.0 with a 0.03
  # panel; these defaults stay 0 until the pipeline reads priors and the panel.
  observability_heterogeneity: float = _field(0.0, min=0.0, max=1.0)
  # Share of clicks in the fully observed measurement panel (`in_panel`).
  panel_share: float = _field(0.0, min=0.0, max=0.5)
  # Browser shares by device class, indexed by browser id.
  browser_shares_desktop: List[float] = _field(
      default_factory=lambda: [0.60, 0.0, 0.15, 0.15, 0.10])
  browser_shares_mobile: List[float] = _field(
      default_factory=lambda: [0.35, 0.15, 0.45, 0.0, 0.05])
  # The true delay model the world samples from (the synthetic dataset's windows):
  # each window's share of conversions and its truncated exponential's scale.
  delay_window_shares: List[float] = _field(
      default_factory=lambda: [0.55, 0.25, 0.20])
  delay_window_scale_hours: List[float] = _field(
      default_factory=lambda: [8.0, 48.0, 480.0])
  # Conversions reported more than this many days after the last click day are
  # not in the conversion log (0: the log ends with the world).
  conversion_horizon_days: int = _field(0, min=0)
  chunk_size: int = _field(50_000, min=1)

  def check(self, key: str) -> None:
    try:
      datetime.date.fromisoformat(self.start_date)
    except ValueError as e:
      raise ConfigError(f'{key}.start_date: {self.start_date!r} is not a '
                        'YYYY-MM-DD date') from e
    for name in ('browser_shares_desktop', 'browser_shares_mobile',
                 'delay_window_shares'):
      shares = getattr(self, name)
      if any(s < 0 for s in shares) or not math.isclose(sum(shares), 1.0,
                                                        abs_tol=1e-6):
        raise ConfigError(f'{key}.{name}: must be non-negative and sum to 1, '
                          f'got {shares}')
    if any(s <= 0 for s in self.delay_window_scale_hours):
      raise ConfigError(f'{key}.delay_window_scale_hours: must be > 0, got '
                        f'{self.delay_window_scale_hours}')

  def start(self) -> datetime.datetime:
    d = datetime.date.fromisoformat(self.start_date)
    return datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc)


SNAPSHOT_POLICIES = snapshot.POLICIES


@dataclasses.dataclass
class WindowConfig:
  """The training window [T - days, T) and its time split (§2, 4)."""
  days: int = _field(28, min=1, doc='W: days of clicks in the window')
  eval_days: int = _field(1, min=1, doc='E: the last E days are the eval split')
  teacher_lag_hours: float = _field(40.0, min=0.0)
  # T; unset: resolved at run time by the ExampleGen with snapshot_policy.
  snapshot_time: Optional[str] = None
  # data_end: midnight after the newest click partition; execution_midnight:
  # the UTC midnight at or before the run's start.
  snapshot_policy: str = _field('data_end', choices=SNAPSHOT_POLICIES)

  def check(self, key: str) -> None:
    if self.eval_days >= self.days:
      raise ConfigError(f'{key}.eval_days: {self.eval_days} must be smaller '
                        f'than {key}.days ({self.days})')
    if self.snapshot_time is not None:
      _parse_utc(f'{key}.snapshot_time', self.snapshot_time)

  def snapshot(self) -> Optional[datetime.datetime]:
    if self.snapshot_time is None:
      return None
    return _parse_utc('window.snapshot_time', self.snapshot_time)

  def teacher_lag_seconds(self) -> int:
    """The teacher's lag in whole seconds (click_ts and snapshot_ts are seconds)."""
    return snapshot.hours_to_seconds(self.teacher_lag_hours)


@dataclasses.dataclass
class NetConfig:
  """An MLP tower over embeddings and normalised numerics, and its training."""
  hidden_units: List[int] = _field(default_factory=lambda: [64, 32])
  # Index of the hidden layer whose activations are the hint (FitNets).
  hint_layer: int = _field(0, min=0)
  dropout: float = _field(0.0, min=0.0, max=1.0)
  # L2 penalty on embedding tables and dense kernels, per unit of mean loss.
  l2: float = _field(1e-4, min=0.0)
  learning_rate: float = _field(0.001, min=0.0, min_exclusive=True)
  # cosine: decays to 10% over the training steps (steadier final calibration
  # than a constant rate); constant: no decay.
  lr_schedule: str = _field('cosine', choices=('cosine', 'constant'))
  batch_size: int = _field(512, min=1)
  # Training length from the data: `epochs` passes over the trainer's training
  # examples, steps = ceil(epochs x examples / batch_size), at most `max_steps`
  # (models/training.py steps_from_data). 14 epochs of the default world's ~74k
  # training clicks at 512 is ~2,000 steps, what a constant 2,000 trained
  # before; a larger window is trained on in proportion until the budget:
  # 20,000 steps (10.2M examples seen) binds from ~730k training examples,
  # i.e. 1 epoch at ~10M. Examples seen = steps x batch_size (the summaries').
  epochs: float = _field(14.0, min=0.0, min_exclusive=True)
  max_steps: int = _field(20_000, min=1)
  # An explicit step count overrides epochs and max_steps (tests, sweeps, a
  # fixed cost); unset (null), the steps come from the data as above.
  train_steps: Optional[int] = _field(None, min=1)

  def check(self, key: str) -> None:
    if not self.hidden_units or any(u <= 0 for u in self.hidden_units):
      raise ConfigError(f'{key}.hidden_units: must be positive, got '
                        f'{self.hidden_units}')
    if self.hint_layer >= len(self.hidden_units):
      raise ConfigError(f'{key}.hint_layer: {self.hint_layer} is not a layer '
                        f'of hidden_units {self.hidden_units}')


@dataclasses.dataclass
class ModelConfig:
  """Both architectures (§5)."""
  seed: int = 0  # training randomness (initialisation, shuffling)
  embedding_dim: int = _field(8, min=1)
  teacher: NetConfig = _field(default_factory=lambda: NetConfig(
      hidden_units=[128, 64, 32], hint_layer=1, l2=3e-4))
  student: NetConfig = _field(default_factory=NetConfig)
  # Serialized examples held for shuffling (both trainers' training reads;
  # ~1.2 KB each, ~1.6 KB with the teacher's columns, so 64k is ~80-100 MB
  # whatever the window holds). Bounded is sound
  # because the ExampleGen writes each split as shards by a hash of click_id,
  # each in hash order (components/example_gen/executor.py WriteShards): any
  # stretch of the interleaved stream is already a random sample of the whole
  # window, and the buffer only has to mix neighbours and vary the order by
  # epoch and seed. 64k is ~1 epoch of the default world's ~74k training
  # clicks and, at ads scale, ~128 batches of 512 from every day of the window
  # (before, with day-sorted files, a buffer had to hold the whole window:
  # a few days' buffer calibrated the model to wherever the stream stopped).
  shuffle_buffer: int = _field(65_536, min=1)
  # Training files read at once, interleaved record by record in a fixed order;
  # with the buffer and the batch it sets the training input's memory.
  read_parallelism: int = _field(4, min=1)
  # Nightly: start the student from the last blessed float student (the one the
  # Quantizer kept beside the INT8 model) instead of from scratch.
  student_warm_start: bool = False
  # The teacher learns the observation model with the rate (issue 14): a
  # per-window shift of the prior's observed share on the logit scale, fit off
  # the measurement panel only (panel clicks are fully observed), so the panel
  # anchors the rate (models/losses.py teacher_offsets). Off until the BulkInferrer
  # writes the teacher's observability for the student.
  teacher_observability_head: bool = False
  # The teacher's offsets calibrated on the measurement panel first (the
  # prior's observed exposure times panel-vs-other ratios by country and
  # advertiser, shrunk, the prior's level per browser x first-party x window
  # kept: models/panel_calibration.py); the head, if on, learns what they still
  # miss. Needs panel clicks: on in pipeline/configs/default.yaml, whose world
  # has a panel; off here, for the per-browser world, which has none.
  teacher_panel_calibration: bool = False

  def check(self, key: str) -> None:
    width = columns.HINT_WIDTH
    got = self.teacher.hidden_units[self.teacher.hint_layer]
    if got != width:
      raise ConfigError(
          f'{key}.teacher.hidden_units[{self.teacher.hint_layer}] '
          f'({key}.teacher.hint_layer): the hint layer has {got} units but the '
          f'examples\' teacher_hint has {width} values (schemas/columns.py)')


TEACHER_GATE_MODES = ('auto', 'truth', 'observed')


@dataclasses.dataclass
class TeacherGateConfig:
  """The teacher's bar (§7); a teacher below it stops the run.

  truth (synthetic data): close at least `min_gap_closed` of the gap between the
  best constant rate and the Bayes floor on eval, and keep each delay window's
  calibration sum(predicted rate_w) / sum(true rate_w) on eval within
  1 +- (`calibration_band` + 2 / sqrt(n_w)), n_w the reported conversions of
  window w the teacher was fit to (0: not checked): the gap bar alone passes a
  teacher that over-predicts a window by 13%, and a head fit to n_w counts is
  calibrated only up to their Poisson noise. observed
  (real logs): beat per-window constant rates on the thinned likelihood by
  `min_improvement`; without truth the band is not checked. auto: truth when the
  eval examples carry truth columns.
  """
  mode: str = _field('auto', choices=TEACHER_GATE_MODES)
  min_gap_closed: float = _field(0.5, min=0.0, max=1.0)
  min_improvement: float = _field(0.02, min=0.0, max=1.0)
  calibration_band: float = _field(0.10, min=0.0, max=1.0)

  def check(self, key: str) -> None:
    # _field bounds are inclusive; a band of 1 would accept a teacher predicting 0.
    if self.calibration_band >= 1.0:
      raise ConfigError(f'{key}.calibration_band: {self.calibration_band!r} is out '
                        'of range (must be < 1.0)')

  def to_json(self) -> str:
    """The TeacherGate's `bar` parameter."""
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'TeacherGateConfig':
    return cls(**json.loads(text))


@dataclasses.dataclass
class BeamConfig:
  """Beam options of the local run (Dataflow options live in the vertex section)."""
  direct_running_mode: str = _field(
      'multi_processing', choices=('in_memory', 'multi_threading', 'multi_processing'))
  direct_num_workers: int = _field(0, min=0, doc='0: one per CPU')

  def args(self) -> List[str]:
    return [f'--direct_running_mode={self.direct_running_mode}',
            f'--direct_num_workers={self.direct_num_workers}']


@dataclasses.dataclass
class ExampleGenConfig:
  """Rules the ExampleGen applies to the logs (docs/architecture.md §3).

  A click with more than `max_conversions_per_click` conversions keeps the
  earliest that many: one bulk purchase must not dominate a night's labels. The
  run fails only if more than `max_capped_fraction` of the window's clicks were
  capped (then the log, not one buyer, is suspect).
  """
  max_conversions_per_click: int = _field(20, min=1)
  max_capped_fraction: float = _field(0.001, min=0.0, max=1.0)


RECIPES = ('production', 'offset', 'kd', 'offset_panel_calibrated', 'panel_only',
           'offset_observability_head')


@dataclasses.dataclass
class DistillConfig:
  """The student's recipe and loss weights (§5; models/distill.py).

  recipe:
    production: the paper's baseline: observed counts with maturity (exposure)
      handled but no observability correction, no teacher;
    offset: the observability-corrected student without a teacher (offset
      log(f_b e_w)): the honest strong baseline;
    kd: distilled from the teacher with the weights below (they apply to kd only).
  Teacher-free students that use the measurement panel (in_panel: a training
  target, never an input), the baselines a careful analyst would build:
    offset_panel_calibrated: the offset student with the prior's observed
      exposure corrected per browser x first-party flag x country x window and
      per advertiser from panel vs other clicks, shrunk (models/panel_calibration.py);
    panel_only: trained on the panel's fully observed clicks alone;
    offset_observability_head: the offset student with its own panel-supervised
      observability head (the teacher's head, without a teacher).
  """
  recipe: str = _field('kd', choices=RECIPES)
  # kd: whether the hard loss uses the observability offset too.
  hard_observability: bool = True
  alpha: float = _field(0.5, min=0.0, max=1.0, doc='output distillation weight')
  # tau softens only the teacher's split of its rate over delay windows (softmax
  # of log t / tau), never the total rate; 1 is the exact Poisson KL. By tau = 4
  # a 10:1 split is 1.8:1, so a sweep should search 1-4.
  temperature: float = _field(1.0, min=1.0, max=8.0,
                              doc='soft term: tau on the split over windows')
  aux_weight: float = _field(0.5, min=0.0, doc='observed + modeled auxiliary head')
  hint_weight: float = _field(0.05, min=0.0, doc='FitNets hint (gamma)')
  tcpa_beta: float = _field(0.25, doc='distilled terms x (tCPA / reference)^beta')
  tcpa_reference: float = _field(60.0, min=0.0, min_exclusive=True)


SWEEP_ALGORITHMS = ('random', 'grid')
SWEEP_SCORES = ('auto', 'panel', 'prior')
# Searched dimension -> the config key it sets (models/hparams.py applies them).
SWEEP_KEYS = {
    'alpha': 'distill.alpha',
    'temperature': 'distill.temperature',
    'aux_weight': 'distill.aux_weight',
    'hint_weight': 'distill.hint_weight',
    'tcpa_beta': 'distill.tcpa_beta',
    'learning_rate': 'model.student.learning_rate',
    'train_steps': 'model.student.train_steps',
}


@dataclasses.dataclass
class SweepConfig:
  """Hyperparameter sweeps of the kd student (§13; models/student_tuner.py).

  `tune_fraction` of the train window's clicks (by a hash of click_id) go to the
  ExampleGen's `tune` split: neither trainer trains on it, nor is it the gated
  eval split; 0 writes no tune split (a sweep run needs one). Each dimension
  below lists the values to search (empty: the config's value, not searched).
  Trials are scored on the tune split by the observed-count likelihood per
  window with exposure offsets: `panel` on the measurement panel's clicks (fully
  observed, offset e_w), `prior` on every click (offset f_b e_w, biased where
  observability varies within a browser), `auto` the panel when the tune split
  has at least `min_panel_examples` panel clicks. Nightly runs use the newest
  sweep recorded for their fingerprint (config and architecture) when `reuse`.
  """
  tune_fraction: float = _field(0.0, min=0.0, max=0.5,
                                doc='share of train-window clicks in the tune split')
  trials: int = _field(8, min=1)
  algorithm: str = _field('random', choices=SWEEP_ALGORITHMS)
  seed: int = 0
  score: str = _field('auto', choices=SWEEP_SCORES)
  min_panel_examples: int = _field(100, min=1)
  reuse: bool = True
  # Vertex: trials run this many at a time (the Cloud Tuner's parallel workers).
  parallel_trials: int = _field(1, min=1)
  alpha: List[float] = _field(default_factory=lambda: [0.3, 0.5, 0.7, 0.9])
  temperature: List[float] = _field(default_factory=lambda: [1.0, 2.0, 4.0])
  aux_weight: List[float] = _field(default_factory=lambda: [0.0, 0.5, 1.0])
  hint_weight: List[float] = _field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2])
  tcpa_beta: List[float] = _field(default_factory=lambda: [0.0, 0.25, 0.5])
  learning_rate: List[float] = _field(default_factory=lambda: [0.0005, 0.001, 0.002])
  train_steps: List[int] = _field(default_factory=list)

  def space(self) -> Dict[str, list]:
    """The searched dimensions (non-empty lists) by name."""
    return {name: list(getattr(self, name)) for name in SWEEP_KEYS
            if getattr(self, name)}

  def check(self, key: str) -> None:
    for name, values in self.space().items():
      if len(set(values)) != len(values):
        raise ConfigError(f'{key}.{name}: repeated values {values}')
    for name in ('alpha',):
      bad = [v for v in self.alpha if not 0.0 <= v <= 1.0]
      if bad:
        raise ConfigError(f'{key}.{name}: values must be in [0, 1], got {bad}')
    bad = [v for v in self.temperature if not 1.0 <= v <= 8.0]
    if bad:
      raise ConfigError(f'{key}.temperature: values must be in [1, 8] '
                        f'(distill.temperature), got {bad}')
    for name in ('aux_weight', 'hint_weight'):
      bad = [v for v in getattr(self, name) if v < 0]
      if bad:
        raise ConfigError(f'{key}.{name}: values must be >= 0, got {bad}')
    for name in ('learning_rate', 'train_steps'):
      bad = [v for v in getattr(self, name) if v <= 0]
      if bad:
        raise ConfigError(f'{key}.{name}: values must be > 0, got {bad}')


@dataclasses.dataclass
class TrainingConfig:
  """How the student trains: distribution, XLA, precision (§5)."""
  # auto: TPU if one is attached, else MirroredStrategy if GPUs are visible, else
  # the default strategy.
  strategy: str = _field('auto', choices=('auto', 'tpu', 'mirrored', 'default'))
  tpu: str = 'local'  # TPUClusterResolver address; 'local' on Vertex TPU VMs
  jit_compile: bool = True
  steps_per_execution: int = _field(1, min=1)
  # mixed_bfloat16 computes the tower in bfloat16; heads and losses stay float32.
  precision: str = _field('float32', choices=('float32', 'mixed_bfloat16'))


PRUNING_SCHEDULES = ('polynomial', 'constant')
# The student's Dense layers by name (models/towers.py): the hidden layers
# dense_<i>, the window heads, and the training-only heads.
STUDENT_HEADS = ('window_heads', 'aux_heads', 'hint_projection', 'observability_head')


@dataclasses.dataclass
class PruningConfig:
  """Magnitude pruning of the student's Dense layers before quantization
  (§5; models/pruning.py, TF-MOT). Off by default.

  The layers' kernels are pruned to `target_sparsity` (the share of exact
  zeros) during training and the pruning wrappers are stripped before export,
  so the exported and warm-start weights have the Dense layers' own names.
  schedule polynomial: sparsity rises from `initial_sparsity` at
  `begin_fraction` of the student's train_steps to `target_sparsity` at
  `end_fraction` (TF-MOT's PolynomialDecay); constant: `target_sparsity` from
  `begin_fraction` on. Masks are updated every `frequency` steps. `layers` are
  fnmatch patterns over the student's Dense layer names (dense_<i>, the hidden
  layers; window_heads); each must match one.
  """
  enabled: bool = False
  target_sparsity: float = _field(0.5, min=0.0, max=1.0)
  schedule: str = _field('polynomial', choices=PRUNING_SCHEDULES)
  initial_sparsity: float = _field(0.0, min=0.0, max=1.0)
  begin_fraction: float = _field(0.0, min=0.0, max=1.0)
  end_fraction: float = _field(0.8, min=0.0, max=1.0)
  frequency: int = _field(100, min=1, doc='steps between mask updates')
  layers: List[str] = _field(default_factory=lambda: ['dense_*'])

  def check(self, key: str) -> None:
    if self.target_sparsity >= 1.0:
      raise ConfigError(f'{key}.target_sparsity: {self.target_sparsity!r} is out of '
                        'range (must be < 1.0: a layer of zeros)')
    if self.schedule == 'polynomial':
      if self.end_fraction <= self.begin_fraction:
        raise ConfigError(f'{key}.end_fraction: {self.end_fraction!r} must be above '
                          f'{key}.begin_fraction ({self.begin_fraction!r})')
      if self.initial_sparsity > self.target_sparsity:
        raise ConfigError(f'{key}.initial_sparsity: {self.initial_sparsity!r} is '
                          f'above {key}.target_sparsity ({self.target_sparsity!r})')
    if not self.layers:
      raise ConfigError(f'{key}.layers: name at least one Dense layer (default '
                        "['dense_*'], the hidden layers)")

  def check_layers(self, key: str, hidden_layers: int) -> None:
    """Every pattern names a Dense layer of a student with `hidden_layers`."""
    names = [f'dense_{i}' for i in range(hidden_layers)] + list(STUDENT_HEADS)
    for i, pattern in enumerate(self.layers):
      if not fnmatch.filter(names, pattern):
        raise ConfigError(f'{key}.layers[{i}]: {pattern!r} matches none of the '
                          f"student's Dense layers {names}")


@dataclasses.dataclass
class QuantizerConfig:
  """Post-training quantization of the student (§6)."""
  mode: str = _field('int8', choices=('int8', 'dynamic_range', 'float16'))
  calibration_examples: int = _field(1000, min=1)
  calibration_sampling: str = _field('tcpa_stratified',
                                     choices=('uniform', 'tcpa_stratified'))
  # The run stops when quantization raises the eval NLL by more than this
  # (relative to the float student).
  max_nll_increase: float = _field(0.005, min=0.0)
  latency_samples: int = _field(2000, min=10)


@dataclasses.dataclass
class EvalConfig:
  """What models are scored against (§7; observation/eval_labels.py).

  truth: the true totals (synthetic data); on real logs use panel (the
  measurement panel's fully observed clicks: unbiased whatever hides conversions
  elsewhere). observed_observable (fully observed browsers only) is unbiased only
  where observability is a per-browser constant, and observed_modeled (every
  browser, teacher-modeled) is circular for a distilled student: diagnostics.
  The Evaluator reports the other modes beside the gating one.
  """
  label_mode: str = _field('truth', choices=eval_labels.MODES)


@dataclasses.dataclass
class GateConfig:
  """The Evaluator's gate on PoissonLogLoss (§7)."""
  # Value threshold (overall): the candidate's NLL per click must be below it.
  max_nll: float = _field(1.0, min=0.0, min_exclusive=True)
  # Change threshold vs the baseline (LOWER_IS_BETTER, relative): the candidate
  # must beat it by at least this share (0: not worse).
  min_relative_improvement: float = _field(0.0, min=0.0, max=1.0)
  # tCPA > 250 (the paper's key slice): the candidate may be at most this much
  # worse than the baseline there (relative); unset: not gated on the slice.
  key_slice_max_relative_change: Optional[float] = _field(None, min=0.0)
  # TFMA's jackknife intervals (20 buckets); the promotion step judges loss,
  # bias and spend beyond them, so they are on by default.
  confidence_intervals: bool = True


PROMOTION_RULES = ('auto', '2_of_3', 'refresh', 'loss_only')


@dataclasses.dataclass
class PromotionConfig:
  """The promotion step after the Evaluator (§7; components/promotion/).

  Both models score every eval click; each area is judged on paired per-click
  comparisons with closed-form 95% intervals (components/promotion/paired.py).
  Areas: 1 loss and bias (the Poisson log loss better beyond its CI, |log
  calibration| not worse beyond its CI); 2 business (the spend log-error |log(sum
  tCPA pConvs / sum tCPA conversions)| better beyond its CI over every scored
  click, and no tCPA bucket worse by more than `slice_guard` beyond its CI;
  without tCPA every click weighs 1); 3 latency, only where the two TFLite graphs
  differ (else not applicable): p50 faster beyond its CI at batch 1 or the
  serving batch, and no p50 / p99 slower by more than `latency_tolerance`.

  rule:
    2_of_3: two of the three areas improve, and every guard holds; when
      latency does not apply (a nightly student of the served architecture),
      area 1 improves and the business area is not worse beyond its CI;
    refresh: area 1 improves and every guard holds;
    loss_only: the Evaluator's blessing (PoissonLogLoss thresholds), as before;
    auto: 2_of_3 when the candidate's recipe fingerprint differs from the
      served baseline's (or the baseline has none), else refresh.
  Every rule also needs gate.max_nll and the fallback band's failed fraction
  within its cap.
  """
  rule: str = _field('auto', choices=PROMOTION_RULES)
  # Largest worsening of a tCPA bucket's spend log-error (beyond its CI).
  slice_guard: float = _field(0.05, min=0.0)
  # A tCPA bucket guards only with at least this many eval conversions: below
  # it the normal interval of its spend log-error is no interval (a bucket of
  # 2 conversions trips a 95% guard on one night in five).
  min_guard_conversions: int = _field(30, min=1)
  # Timed invokes per model and batch size (interleaved); >= 10,000 by default.
  latency_samples: int = _field(10_000, min=100)
  serving_batch: int = _field(64, min=2)
  # How much slower (relative) a p50 / p99 may be, beyond its CI, without
  # blocking area 3 (two quantized builds of one architecture differ by ~0.5%).
  latency_tolerance: float = _field(0.02, min=0.0)
  bootstrap_replicates: int = _field(1000, min=100)

  def to_json(self) -> str:
    """The Promotion component's `rule` parameter."""
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'PromotionConfig':
    return cls(**json.loads(text))


FALLBACK_RULES = ('reference_quantile', 'none')
FALLBACK_TARGETS = ('auto', 'truth', 'candidate')


@dataclasses.dataclass
class FallbackConfig:
  """Failed predictions and the fallback (§7; models/fallback.py).

  rule reference_quantile: each prediction's band is the fallback's (the served
  version's) prediction times per-browser multipliers, the split-conformal
  quantiles at `level` of log(target / fallback) on half the eval split; a
  candidate prediction outside it fails and the fallback serves it. target
  truth: the true rate (synthetic data; the band then claims to cover it);
  candidate: the candidate's own prediction (real logs); auto: truth when the
  eval label mode is truth. The Promotion step scores the band on the other half
  of the eval split and does not promote a candidate whose failed fraction is
  above `max_failed_fraction`, whatever its loss. none: no band, no cap.
  """
  rule: str = _field('reference_quantile', choices=FALLBACK_RULES)
  level: float = _field(0.9, min=0.0, max=1.0, min_exclusive=True)
  target: str = _field('auto', choices=FALLBACK_TARGETS)
  # A perfect candidate fails (1 - level) of its clicks by construction when the
  # band covers the truth at `level`; the cap sits above that.
  max_failed_fraction: float = _field(0.2, min=0.0, max=1.0)
  # A browser with fewer calibration clicks takes the pooled multipliers.
  min_slice_clicks: int = _field(50, min=1)

  def check(self, key: str) -> None:
    if self.level >= 1.0:
      raise ConfigError(f'{key}.level: {self.level!r} must be below 1 (a band '
                        'that covers everything flags nothing)')

  def resolved_target(self, label_mode: str) -> str:
    if self.target != 'auto':
      return self.target
    return 'truth' if label_mode == 'truth' else 'candidate'


@dataclasses.dataclass
class PathsConfig:
  """Where things live. Local paths or gs:// URIs."""
  data_root: str = 'data/world'
  output_root: str = 'outputs'
  serving_dir: str = 'serving'
  # Sweep records (best hyperparameters by fingerprint) nightly runs read.
  sweeps_dir: str = 'sweeps'


@dataclasses.dataclass
class WorkerPoolConfig:
  """A Vertex Training worker pool (a CustomJob WorkerPoolSpec)."""
  machine_type: str = 'n1-standard-8'
  # GPUs (e.g. NVIDIA_TESLA_T4) or TPU v2/v3 (TPU_V2 on machine cloud-tpu).
  accelerator_type: str = ''
  accelerator_count: int = _field(0, min=0)
  # TPU VM slices: e.g. machine ct5lp-hightpu-4t with topology 2x2.
  tpu_topology: str = ''
  replica_count: int = _field(1, min=1)
  image: str = ''  # empty: vertex.image

  def check(self, key: str) -> None:
    if bool(self.accelerator_type) != bool(self.accelerator_count):
      raise ConfigError(f'{key}.accelerator_count: set together with '
                        f'{key}.accelerator_type')


@dataclasses.dataclass
class DataflowConfig:
  """Dataflow options for the Beam components on Vertex."""
  region: str = ''  # empty: vertex.region
  temp_location: str = ''  # gs:// staging and temp files
  machine_type: str = 'n1-standard-4'
  max_num_workers: int = _field(10, min=1)
  service_account: str = ''  # worker service account (empty: the default)
  subnetwork: str = ''  # set: private IPs on this subnetwork
  worker_image: str = ''  # sdk_container_image; empty: vertex.image


@dataclasses.dataclass
class ScheduleConfig:
  """The nightly PipelineJobSchedule."""
  cron: str = '0 3 * * *'
  time_zone: str = 'UTC'  # IANA name; Vertex reads it from the cron prefix
  max_concurrent_runs: int = _field(1, min=1)
  max_run_count: int = _field(0, min=0, doc='0: unlimited')
  display_name: str = ''

  def check(self, key: str) -> None:
    if len(self.cron.split()) != 5:
      raise ConfigError(f'{key}.cron: {self.cron!r} is not a 5-field cron '
                        'expression (the time zone goes in time_zone)')


def _world_priors(data_root: str, n_browsers: int):
  """(f_b per browser, segment priors) from a generated world's manifest.json."""
  path = os.path.join(data_root, 'manifest.json')
  try:
    with open(path) as f:
      block = json.load(f)['observability_priors']
    fractions = tuple(float(x) for x in block['browsers'])
    rows = sorted(block['priors'], key=lambda p: (p['browser'], p['first_party']))
    priors = tuple(tuple(float(x) for x in p['segment_shares']) for p in rows)
  except (OSError, KeyError, ValueError) as e:
    raise ConfigError(
        f'observability.priors_source: world_manifest needs the priors of a '
        f'generated world in {path} (generator version 3 or later; run make '
        f'data): {e}') from e
  if len(fractions) != n_browsers or len(priors) != 2 * n_browsers:
    raise ConfigError(f'observability.priors_source: {path} has priors for '
                      f'{len(fractions)} browsers; the config has {n_browsers}')
  return fractions, priors


def _student_tpu_pool():
  return WorkerPoolConfig(machine_type='ct5lp-hightpu-4t', tpu_topology='2x2')


@dataclasses.dataclass
class VertexConfig:
  """Vertex AI Pipelines (§8).

  Empty strings must be set before a Vertex command runs (the command names the
  missing key); nothing here has a cloud default.
  """
  project: str = ''
  region: str = ''
  pipeline_root: str = ''  # gs:// artifacts
  data_root: str = ''  # gs:// click and conversion logs
  serving_dir: str = ''  # gs:// push destination
  sweeps_dir: str = ''  # gs:// sweep records; empty: <pipeline_root>/sweeps
  image: str = ''  # the pipeline image (deploy/Dockerfile)
  # The dataset's TFDV schema as the pipeline's tasks see it; empty: the one
  # beside the dataset spec inside the image (/pipeline/<the spec's directory>/
  # schema.pbtxt, which `python -m pipeline.cli schema` generates).
  schema_path: str = ''
  service_account: str = ''  # runs the pipeline and the training jobs
  network: str = ''  # VPC peering for the pipeline job (optional)
  encryption_key: str = ''  # CMEK (optional)
  labels: Dict[str, str] = _field(default_factory=dict)
  teacher: WorkerPoolConfig = _field(default_factory=lambda: WorkerPoolConfig(
      machine_type='n1-standard-16'))
  student: WorkerPoolConfig = _field(default_factory=_student_tpu_pool)
  dataflow: DataflowConfig = _field(default_factory=DataflowConfig)
  schedule: ScheduleConfig = _field(default_factory=ScheduleConfig)


DEFAULT_DATASET_FILE = 'datasets/synthetic_world/dataset.yaml'


@dataclasses.dataclass
class Config:
  """The whole configuration."""
  pipeline_name: str = 'kd-conversion'
  # TFX caching. Off by default: a rerun with T resolved at run time must not
  # reuse yesterday's examples.
  enable_cache: bool = False
  # The dataset spec (YAML; relative paths from the working directory, then from
  # the repository): read into `dataset` when the config is loaded, under any
  # `dataset.*` keys the config or --set give. Empty: `dataset` is complete as
  # given (the Trainers' copy of the config).
  dataset_file: str = DEFAULT_DATASET_FILE
  dataset: DatasetSpec = _field(default_factory=DatasetSpec)
  paths: PathsConfig = _field(default_factory=PathsConfig)
  world: WorldConfig = _field(default_factory=WorldConfig)
  window: WindowConfig = _field(default_factory=WindowConfig)
  example_gen: ExampleGenConfig = _field(default_factory=ExampleGenConfig)
  observability: ObservabilityConfig = _field(default_factory=ObservabilityConfig)
  delay: DelayConfig = _field(default_factory=DelayConfig)
  model: ModelConfig = _field(default_factory=ModelConfig)
  distill: DistillConfig = _field(default_factory=DistillConfig)
  training: TrainingConfig = _field(default_factory=TrainingConfig)
  pruning: PruningConfig = _field(default_factory=PruningConfig)
  sweep: SweepConfig = _field(default_factory=SweepConfig)
  quantizer: QuantizerConfig = _field(default_factory=QuantizerConfig)
  eval: EvalConfig = _field(default_factory=EvalConfig)
  gate: GateConfig = _field(default_factory=GateConfig)
  promotion: PromotionConfig = _field(default_factory=PromotionConfig)
  fallback: FallbackConfig = _field(default_factory=FallbackConfig)
  teacher_gate: TeacherGateConfig = _field(default_factory=TeacherGateConfig)
  beam: BeamConfig = _field(default_factory=BeamConfig)
  vertex: VertexConfig = _field(default_factory=VertexConfig)

  def check(self, key: str) -> None:
    del key
    n = len(self.observability.browsers)
    for name in ('browser_shares_desktop', 'browser_shares_mobile'):
      # The world generates the synthetic dataset only (the one with truth).
      if self.dataset.truth and len(getattr(self.world, name)) != n:
        raise ConfigError(f'world.{name}: needs {n} values, one per browser in '
                          'observability.browsers')
    self.pruning.check_layers('pruning', len(self.model.student.hidden_units))
    self._check_dataset()
    if (self.model.teacher_panel_calibration and self.world.panel_share == 0 and
        self.observability.priors_source == 'world_manifest'):
      # Caught here rather than after the Transform: a synthetic world without a
      # panel gives the teacher nothing to calibrate on.
      raise ConfigError('model.teacher_panel_calibration: the synthetic world has '
                        'no measurement panel (world.panel_share is 0); set a '
                        'panel share or turn the calibration off')

  def _check_dataset(self) -> None:
    """What the configuration asks of the dataset, checked at load time: a mode
    or recipe the dataset cannot support is a config error naming the key."""
    d = self.dataset
    where = f' (dataset {d.name!r}: {self.dataset_file or "the dataset section"})'
    if d.segment:
      f = d.feature_or_none(d.segment)
      n = len(self.observability.browsers)
      if f is not None and n > f.bucket_count():
        raise ConfigError(f'observability.browsers: {n} browsers, but the segment '
                          f'{d.segment!r} has ids 0..{f.bucket_count() - 1}{where}')
    edges = self.observability.segment_edges_hours
    if edges[-1] < d.windows[-1].end_hours:
      raise ConfigError(f'observability.segment_edges_hours: the last edge '
                        f'{edges[-1]:g} h is before the last delay window\'s end '
                        f'{d.windows[-1].end_hours:g} h{where}')
    if self.observability.priors and not d.segment:
      raise ConfigError('observability.priors: the dataset has no '
                        f'observability_segment to key them by{where}')
    needs = []
    mode = self.eval.label_mode
    if mode == 'truth' and not d.truth:
      needs.append(('eval.label_mode', 'truth', 'truth columns (synthetic data); '
                    'use panel or observed_observable'))
    if mode == 'panel' and not d.panel:
      needs.append(('eval.label_mode', 'panel', 'a panel column'))
    if self.teacher_gate.mode == 'truth' and not d.truth:
      needs.append(('teacher_gate.mode', 'truth', 'truth columns'))
    if self.fallback.target == 'truth' and not d.truth:
      needs.append(('fallback.target', 'truth', 'truth columns'))
    if self.sweep.score == 'panel' and not d.panel:
      needs.append(('sweep.score', 'panel', 'a panel column'))
    panel_recipes = {'offset_panel_calibrated': 'a panel and '
                     'meanings.panel_calibration_groups',
                     'panel_only': 'a panel column',
                     'offset_observability_head': 'a panel column'}
    r = self.distill.recipe
    if r in panel_recipes and not (
        d.panel and (r != 'offset_panel_calibrated' or
                     d.meanings.panel_calibration_groups)):
      needs.append(('distill.recipe', r, panel_recipes[r]))
    if self.model.teacher_panel_calibration and not (
        d.panel and d.meanings.panel_calibration_groups):
      needs.append(('model.teacher_panel_calibration', 'true', 'a panel and '
                    'meanings.panel_calibration_groups'))
    if self.model.teacher_observability_head and not d.panel:
      needs.append(('model.teacher_observability_head', 'true', 'a panel column'))
    if needs:
      key, value, what = needs[0]
      raise ConfigError(f'{key}: {value} needs {what}, which the dataset does not '
                        f'declare{where}')
    for name in ('delay_window_shares', 'delay_window_scale_hours'):
      if d.truth and len(getattr(self.world, name)) != len(d.windows):
        raise ConfigError(f'world.{name}: needs {len(d.windows)} values, one per '
                          f'delay window of the dataset{where}')

  def to_json(self) -> str:
    """The whole config as JSON (the Trainers' custom_config; config.loader
    reads it back). The dataset spec goes in whole, so a reader needs no file."""
    return json.dumps({**dataclasses.asdict(self), 'dataset_file': ''},
                      sort_keys=True)

  def dataset_json(self) -> str:
    """The dataset spec as the ExampleGen's `dataset` parameter."""
    return json.dumps(dataclasses.asdict(self.dataset), sort_keys=True)

  def local_root(self) -> str:
    """<paths.output_root>/<pipeline_name>, absolute: where a local run keeps its
    outputs, ML Metadata, logs and reports."""
    return os.path.abspath(os.path.join(self.paths.output_root, self.pipeline_name))

  def fallback_parameter(self) -> str:
    """The Promotion component's `fallback` parameter: the section, the target
    resolved, and what the band's slices need (its key column and the segments,
    the slices, the teacher's lag)."""
    return json.dumps({
        **dataclasses.asdict(self.fallback),
        'target': self.fallback.resolved_target(self.eval.label_mode),
        'key_column': self.dataset.segment,
        'n_keys': len(self.observability.browsers) if self.dataset.segment else 1,
        'slices': list(self.dataset.slice_columns()),
        'teacher_lag_seconds': self.window.teacher_lag_seconds()}, sort_keys=True)

  def label_spec(self) -> labels.LabelSpec:
    """What the ExampleGen's join needs: the windows, the delay model's prior and
    how to fit it, the observability model, the columns with a meaning.

    With observability.priors_source world_manifest the priors are read here,
    at the edge (the pipeline's definition), from the world's manifest.
    """
    d = self.dataset
    fractions = tuple(self.observability.fractions()) if d.segment else ()
    priors = self.observability.segment_priors() if d.segment else ()
    if d.segment and self.observability.priors_source == 'world_manifest':
      fractions, priors = _world_priors(self.paths.data_root, len(fractions))
    segment_by = d.delay.segment_by
    return labels.LabelSpec(
        windows=d.window_tuple(),
        prior_shares=d.prior_shares(),
        prior_scales=d.prior_scales(),
        observed_fractions=fractions,
        full_threshold=self.observability.full_threshold,
        low_threshold=self.observability.low_threshold,
        priors=priors,
        segment_edges=tuple(self.observability.segment_edges_hours),
        segment=d.segment, first_party=d.first_party, tcpa=d.tcpa, panel=d.panel,
        delay_source=self.delay.source,
        delay_segment_by=segment_by,
        delay_segments=d.feature(segment_by).bucket_count() if segment_by else 1,
        prior_conversions=self.delay.prior_conversions,
        min_segment_conversions=self.delay.min_segment_conversions)

  def eval_label_spec(self, mode: Optional[str] = None) -> eval_labels.EvalLabelSpec:
    """What models are scored against: `mode` (default: eval.label_mode)."""
    return eval_labels.EvalLabelSpec(
        mode=mode or self.eval.label_mode,
        window_names=self.dataset.window_names(),
        panel=self.dataset.panel,
        full_threshold=self.observability.full_threshold)
