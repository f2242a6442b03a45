"""The typed configuration (DESIGN §9): one dataclass tree with defaults.

Loaded once at the edge (CLI / runner) from YAML plus `key.path=value` overrides,
validated with errors that name the key, then passed down. Components receive
plain parameters or the JSON of a section; nothing reads environment variables.

Example:
  cfg = load_config('pipeline/configs/default.yaml', ['window.eval_days=2'])
"""

import dataclasses
import datetime
import json
import math
import re
import typing
from typing import Any, Dict, List, Optional, Sequence

import yaml

from observation import snapshot


class ConfigError(ValueError):
  """A configuration problem; the message names the offending key."""


def _field(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING,
           min=None, max=None, min_exclusive=False, choices=None, doc=''):  # pylint: disable=redefined-builtin
  """A dataclass field with range / choice constraints checked on load."""
  meta = dict(min=min, max=max, min_exclusive=min_exclusive, choices=choices,
              doc=doc)
  if default_factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=default_factory, metadata=meta)
  return dataclasses.field(default=default, metadata=meta)


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
class ObservabilityConfig:
  """Observed fraction f_b per browser (production: from measurement studies)."""
  browsers: List[BrowserConfig] = _field(default_factory=_default_browsers)
  # browser_observability slice: 'full' if f >= full_threshold, 'low' if
  # f < low_threshold, else 'partial'.
  full_threshold: float = _field(0.95, min=0.0, max=1.0)
  low_threshold: float = _field(0.5, min=0.0, max=1.0)

  def check(self, key: str) -> None:
    ids = [b.id for b in self.browsers]
    if not ids:
      raise ConfigError(f'{key}.browsers: at least one browser is required')
    if sorted(ids) != list(range(len(ids))):
      raise ConfigError(f'{key}.browsers: ids must be 0..{len(ids) - 1} '
                        f'(dense int64 ids), got {ids}')
    if self.low_threshold > self.full_threshold:
      raise ConfigError(f'{key}.low_threshold: {self.low_threshold} is above '
                        f'{key}.full_threshold {self.full_threshold}')

  def fractions(self) -> List[float]:
    """Observed fraction indexed by browser id."""
    return [b.observed_fraction for b in sorted(self.browsers, key=lambda b: b.id)]


@dataclasses.dataclass
class DelayConfig:
  """Click-to-conversion delay: window shares and the shape inside each window.

  Within window w = [a, b) the delay is a - truncated at b - exponential with
  scale `window_scale_hours[w]`; the exposure of a window at age t is that
  distribution's CDF at t (0 before a, 1 from b on). Shares are the world's
  conversion-weighted average (the synthetic generator tilts them by price).
  """
  window_shares: List[float] = _field(default_factory=lambda: [0.55, 0.25, 0.20])
  window_scale_hours: List[float] = _field(
      default_factory=lambda: [8.0, 48.0, 480.0])

  def check(self, key: str) -> None:
    from schemas import columns  # pylint: disable=g-import-not-at-top
    n = len(columns.WINDOWS)
    for name in ('window_shares', 'window_scale_hours'):
      if len(getattr(self, name)) != n:
        raise ConfigError(f'{key}.{name}: needs {n} values, one per window '
                          f'{list(columns.WINDOW_NAMES)}')
    if any(s < 0 for s in self.window_shares) or not math.isclose(
        sum(self.window_shares), 1.0, abs_tol=1e-6):
      raise ConfigError(f'{key}.window_shares: must be non-negative and sum '
                        f'to 1, got {self.window_shares}')
    if any(s <= 0 for s in self.window_scale_hours):
      raise ConfigError(f'{key}.window_scale_hours: must be > 0, got '
                        f'{self.window_scale_hours}')


@dataclasses.dataclass
class WorldConfig:
  """The synthetic world (DESIGN §3). Its difficulty is measured, never tuned."""
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
  # Browser shares by device class, indexed by browser id.
  browser_shares_desktop: List[float] = _field(
      default_factory=lambda: [0.60, 0.0, 0.15, 0.15, 0.10])
  browser_shares_mobile: List[float] = _field(
      default_factory=lambda: [0.35, 0.15, 0.45, 0.0, 0.05])
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
    for name in ('browser_shares_desktop', 'browser_shares_mobile'):
      shares = getattr(self, name)
      if any(s < 0 for s in shares) or not math.isclose(sum(shares), 1.0,
                                                        abs_tol=1e-6):
        raise ConfigError(f'{key}.{name}: must be non-negative and sum to 1, '
                          f'got {shares}')

  def start(self) -> datetime.datetime:
    d = datetime.date.fromisoformat(self.start_date)
    return datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc)


SNAPSHOT_POLICIES = snapshot.POLICIES


@dataclasses.dataclass
class WindowConfig:
  """The training window [T - days, T) and its time split (DESIGN §2, §4)."""
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
  # cosine: decays to 10% over train_steps (steadier final calibration than a
  # constant rate); constant: no decay.
  lr_schedule: str = _field('cosine', choices=('cosine', 'constant'))
  batch_size: int = _field(512, min=1)
  train_steps: int = _field(2000, min=1)

  def check(self, key: str) -> None:
    if not self.hidden_units or any(u <= 0 for u in self.hidden_units):
      raise ConfigError(f'{key}.hidden_units: must be positive, got '
                        f'{self.hidden_units}')
    if self.hint_layer >= len(self.hidden_units):
      raise ConfigError(f'{key}.hint_layer: {self.hint_layer} is not a layer '
                        f'of hidden_units {self.hidden_units}')


@dataclasses.dataclass
class ModelConfig:
  """Both architectures (DESIGN §5)."""
  seed: int = 0  # training randomness (initialisation, shuffling)
  embedding_dim: int = _field(8, min=1)
  teacher: NetConfig = _field(default_factory=lambda: NetConfig(
      hidden_units=[128, 64, 32], hint_layer=1, l2=3e-4, train_steps=2000))
  student: NetConfig = _field(default_factory=NetConfig)
  # Serialized examples held for shuffling (both trainers). ExampleGen writes a
  # split in day-sorted runs, so a buffer spanning a few days leaves every batch
  # from the same days and the final model calibrated to wherever the stream
  # stopped (measured: mean prediction 0.5x-1.45x the observed counts on its own
  # training data). Cover the window: ~0.5 KB per example.
  shuffle_buffer: int = _field(1_000_000, min=1)
  # Nightly: start the student from the last blessed float student (the one the
  # Quantizer kept beside the INT8 model) instead of from scratch.
  student_warm_start: bool = False

  def check(self, key: str) -> None:
    import schemas  # pylint: disable=g-import-not-at-top
    width = schemas.hint_width()
    got = self.teacher.hidden_units[self.teacher.hint_layer]
    if got != width:
      raise ConfigError(
          f'{key}.teacher.hidden_units[{self.teacher.hint_layer}] '
          f'({key}.teacher.hint_layer): the hint layer has {got} units but '
          f'schemas/schema.pbtxt declares teacher_hint with {width} values')


TEACHER_GATE_MODES = ('auto', 'truth', 'observed')


@dataclasses.dataclass
class TeacherGateConfig:
  """The teacher's bar (DESIGN §7); a teacher below it stops the run.

  truth (synthetic data): close at least `min_gap_closed` of the gap between the
  best constant rate and the Bayes floor on eval. observed (real logs): beat
  per-window constant rates on the thinned likelihood by `min_improvement`.
  auto: truth when the eval examples carry truth columns.
  """
  mode: str = _field('auto', choices=TEACHER_GATE_MODES)
  min_gap_closed: float = _field(0.5, min=0.0, max=1.0)
  min_improvement: float = _field(0.02, min=0.0, max=1.0)


@dataclasses.dataclass
class BeamConfig:
  """Beam options of the local run (Dataflow options live in the vertex section)."""
  direct_running_mode: str = _field(
      'multi_processing', choices=('in_memory', 'multi_threading', 'multi_processing'))
  direct_num_workers: int = _field(0, min=0, doc='0: one per CPU')

  def args(self) -> List[str]:
    return [f'--direct_running_mode={self.direct_running_mode}',
            f'--direct_num_workers={self.direct_num_workers}']


RECIPES = ('production', 'offset', 'kd')


@dataclasses.dataclass
class DistillConfig:
  """The student's recipe and loss weights (DESIGN §5, models/distill.py).

  recipe:
    production: the paper's baseline: observed counts with maturity (exposure)
      handled but no observability correction, no teacher;
    offset: the observability-corrected student without a teacher (offset
      log(f_b e_w)): the honest strong baseline;
    kd: distilled from the teacher with the weights below (they apply to kd only).
  """
  recipe: str = _field('kd', choices=RECIPES)
  # kd: whether the hard loss uses the observability offset too.
  hard_observability: bool = True
  alpha: float = _field(0.5, min=0.0, max=1.0, doc='output distillation weight')
  temperature: float = _field(1.0, min=0.0, min_exclusive=True)
  aux_weight: float = _field(0.5, min=0.0, doc='observed + modeled auxiliary head')
  hint_weight: float = _field(0.05, min=0.0, doc='FitNets hint (gamma)')
  tcpa_beta: float = _field(0.25, doc='distilled terms x (tCPA / reference)^beta')
  tcpa_reference: float = _field(60.0, min=0.0, min_exclusive=True)

  def weights(self):
    """The DistillWeights of the recipe (teacher terms only for kd)."""
    from models import distill  # pylint: disable=g-import-not-at-top
    if self.recipe == 'production':
      return distill.DistillWeights(hard_observability=False)
    if self.recipe == 'offset':
      return distill.DistillWeights(hard_observability=True)
    return distill.DistillWeights(
        hard_observability=self.hard_observability, alpha=self.alpha,
        temperature=self.temperature, aux_weight=self.aux_weight,
        hint_weight=self.hint_weight, tcpa_beta=self.tcpa_beta,
        tcpa_reference=self.tcpa_reference)


@dataclasses.dataclass
class TrainingConfig:
  """How the student trains: distribution, XLA, precision (DESIGN §5)."""
  # auto: TPU if one is attached, else MirroredStrategy if GPUs are visible, else
  # the default strategy.
  strategy: str = _field('auto', choices=('auto', 'tpu', 'mirrored', 'default'))
  tpu: str = 'local'  # TPUClusterResolver address; 'local' on Vertex TPU VMs
  jit_compile: bool = True
  steps_per_execution: int = _field(1, min=1)
  # mixed_bfloat16 computes the tower in bfloat16; heads and losses stay float32.
  precision: str = _field('float32', choices=('float32', 'mixed_bfloat16'))


@dataclasses.dataclass
class QuantizerConfig:
  """Post-training quantization of the student (DESIGN §6)."""
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
  """What models are scored against (models/eval_labels.py, DESIGN §7).

  truth: the true totals (synthetic data); on real logs use observed_observable
  (unbiased, fully observed browsers only) or observed_modeled (every browser,
  teacher-modeled). The Evaluator reports the other modes beside the gating one.
  """
  label_mode: str = _field('truth', choices=(
      'truth', 'observed_observable', 'observed_modeled'))

  def label_spec(self, cfg) -> str:
    """The JSON the Quantizer and the PoissonLogLoss metric read."""
    return json.dumps({'mode': self.label_mode,
                       'window_shares': list(cfg.delay.window_shares),
                       'full_threshold': cfg.observability.full_threshold},
                      sort_keys=True)


@dataclasses.dataclass
class GateConfig:
  """The Evaluator's gate on PoissonLogLoss (DESIGN §7)."""
  # Value threshold (overall): the candidate's NLL per click must be below it.
  max_nll: float = _field(1.0, min=0.0, min_exclusive=True)
  # Change threshold vs the baseline (LOWER_IS_BETTER, relative): the candidate
  # must beat it by at least this share (0: not worse).
  min_relative_improvement: float = _field(0.0, min=0.0, max=1.0)
  # tCPA > 250 (the paper's key slice): the candidate may be at most this much
  # worse than the baseline there (relative); unset: not gated on the slice.
  key_slice_max_relative_change: Optional[float] = _field(None, min=0.0)
  confidence_intervals: bool = False


@dataclasses.dataclass
class PathsConfig:
  """Where things live. Local paths or gs:// URIs."""
  data_root: str = 'data/world'
  output_root: str = 'outputs'
  serving_dir: str = 'serving'


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


def _student_tpu_pool():
  return WorkerPoolConfig(machine_type='ct5lp-hightpu-4t', tpu_topology='2x2')


@dataclasses.dataclass
class VertexConfig:
  """Vertex AI Pipelines (DESIGN §8). Empty strings must be set before a Vertex
  command runs (the command names the missing key); nothing here has a cloud
  default."""
  project: str = ''
  region: str = ''
  pipeline_root: str = ''  # gs:// artifacts
  data_root: str = ''  # gs:// click and conversion logs
  serving_dir: str = ''  # gs:// push destination
  image: str = ''  # the pipeline image (deploy/Dockerfile)
  # Where deploy/Dockerfile puts the curated schema inside the image.
  schema_path: str = '/pipeline/schemas/schema.pbtxt'
  service_account: str = ''  # runs the pipeline and the training jobs
  network: str = ''  # VPC peering for the pipeline job (optional)
  encryption_key: str = ''  # CMEK (optional)
  labels: Dict[str, str] = _field(default_factory=dict)
  teacher: WorkerPoolConfig = _field(default_factory=lambda: WorkerPoolConfig(
      machine_type='n1-standard-16'))
  student: WorkerPoolConfig = _field(default_factory=_student_tpu_pool)
  dataflow: DataflowConfig = _field(default_factory=DataflowConfig)
  schedule: ScheduleConfig = _field(default_factory=ScheduleConfig)


@dataclasses.dataclass
class Config:
  """The whole configuration."""
  pipeline_name: str = 'kd-conversion'
  # TFX caching. Off by default: a rerun with T resolved at run time must not
  # reuse yesterday's examples.
  enable_cache: bool = False
  paths: PathsConfig = _field(default_factory=PathsConfig)
  world: WorldConfig = _field(default_factory=WorldConfig)
  window: WindowConfig = _field(default_factory=WindowConfig)
  observability: ObservabilityConfig = _field(default_factory=ObservabilityConfig)
  delay: DelayConfig = _field(default_factory=DelayConfig)
  model: ModelConfig = _field(default_factory=ModelConfig)
  distill: DistillConfig = _field(default_factory=DistillConfig)
  training: TrainingConfig = _field(default_factory=TrainingConfig)
  quantizer: QuantizerConfig = _field(default_factory=QuantizerConfig)
  eval: EvalConfig = _field(default_factory=EvalConfig)
  gate: GateConfig = _field(default_factory=GateConfig)
  teacher_gate: TeacherGateConfig = _field(default_factory=TeacherGateConfig)
  beam: BeamConfig = _field(default_factory=BeamConfig)
  vertex: VertexConfig = _field(default_factory=VertexConfig)

  def check(self, key: str) -> None:
    del key
    n = len(self.observability.browsers)
    for name in ('browser_shares_desktop', 'browser_shares_mobile'):
      if len(getattr(self.world, name)) != n:
        raise ConfigError(f'world.{name}: needs {n} values, one per browser in '
                          'observability.browsers')
    from schemas import columns  # pylint: disable=g-import-not-at-top
    buckets = columns.BY_NAME[columns.BROWSER].buckets
    if n > buckets:
      raise ConfigError(f'observability.browsers: {n} browsers, but the schema '
                        f'knows browser ids 0..{buckets - 1}')

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)


# --- Loading -----------------------------------------------------------------


class _Loader(yaml.SafeLoader):
  """SafeLoader that leaves dates and times as strings (the config parses them)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag != 'tag:yaml.org,2002:timestamp']
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# YAML 1.1 reads 3e-4 (no decimal point) as a string; people write it.
_Loader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$'),
    list('-+0123456789.'))


def _yaml(text):
  return yaml.load(text, Loader=_Loader)  # nosec: a SafeLoader subclass


def _type_name(tp) -> str:
  return getattr(tp, '__name__', None) or str(tp).replace('typing.', '')


def _coerce(key: str, value: Any, tp) -> Any:
  """Converts a YAML value to `tp`, or raises ConfigError naming `key`."""
  origin = typing.get_origin(tp)
  if origin is typing.Union:  # Optional[X]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None:
      return None
    return _coerce(key, value, args[0])
  if dataclasses.is_dataclass(tp):
    if not isinstance(value, dict):
      raise ConfigError(f'{key}: expected a mapping, got {value!r}')
    return _build(key, tp, value)
  if origin in (dict, Dict):
    if not isinstance(value, dict):
      raise ConfigError(f'{key}: expected a mapping, got {value!r}')
    k_tp, v_tp = typing.get_args(tp)
    return {_coerce(f'{key}', k, k_tp): _coerce(f'{key}.{k}', v, v_tp)
            for k, v in value.items()}
  if origin in (list, List):
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f'{key}: expected a list, got {value!r}')
    (item,) = typing.get_args(tp)
    return [_coerce(f'{key}[{i}]', v, item) for i, v in enumerate(value)]
  if tp is bool:
    if not isinstance(value, bool):
      raise ConfigError(f'{key}: expected true or false, got {value!r}')
    return value
  if tp is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f'{key}: expected an integer, got {value!r}')
    return value
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f'{key}: expected a number, got {value!r}')
    if not math.isfinite(value):
      raise ConfigError(f'{key}: expected a finite number, got {value!r}')
    return float(value)
  if tp is str:
    if not isinstance(value, str):
      raise ConfigError(f'{key}: expected a string, got {value!r}')
    return value
  raise ConfigError(f'{key}: unsupported type {_type_name(tp)}')


def _check_range(key: str, value: Any, meta: Dict[str, Any]) -> None:
  lo, hi, choices = meta.get('min'), meta.get('max'), meta.get('choices')
  if choices is not None and value not in choices:
    raise ConfigError(f'{key}: {value!r} is not one of {list(choices)}')
  if value is None or not isinstance(value, (int, float)):
    return
  if lo is not None and (value < lo or (meta.get('min_exclusive') and
                                        value == lo)):
    op = '>' if meta.get('min_exclusive') else '>='
    raise ConfigError(f'{key}: {value!r} is out of range (must be {op} {lo})')
  if hi is not None and value > hi:
    raise ConfigError(f'{key}: {value!r} is out of range (must be <= {hi})')


def _build(prefix: str, cls, data: Dict[str, Any]):
  """Builds dataclass `cls` from `data` on top of its defaults."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    where = f'{prefix}.' if prefix else ''
    raise ConfigError(f'unknown config key {where}{unknown[0]} (known keys under '
                      f'{prefix or "the top level"}: {", ".join(sorted(fields))})')
  hints = typing.get_type_hints(cls)
  defaults = cls()
  kwargs = {}
  for name, value in data.items():
    key = f'{prefix}.{name}' if prefix else name
    default = getattr(defaults, name)
    if dataclasses.is_dataclass(default) and isinstance(value, dict):
      # A partial section overrides this field's default, not the section
      # class's defaults (model.teacher keeps its own layer sizes).
      value = _merge(dataclasses.asdict(default), value)
    value = _coerce(key, value, hints[name])
    _check_range(key, value, fields[name].metadata)
    kwargs[name] = value
  obj = cls(**kwargs)
  # Defaults are validated too: a field left out is still range-checked.
  for name, f in fields.items():
    if name not in kwargs:
      _check_range(f'{prefix}.{name}' if prefix else name, getattr(obj, name),
                   f.metadata)
  return obj


def _merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
  """Deep-merges mapping `top` onto `base`; lists and scalars replace."""
  out = dict(base)
  for k, v in top.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(
        out.get(k), dict) else v
  return out


def _check_tree(prefix: str, obj) -> None:
  """Runs every section's cross-field `check`, children first."""
  for f in dataclasses.fields(obj):
    value = getattr(obj, f.name)
    key = f'{prefix}.{f.name}' if prefix else f.name
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
      if dataclasses.is_dataclass(item):
        _check_tree(f'{key}[{i}]' if isinstance(value, list) else key, item)
  if hasattr(obj, 'check'):
    obj.check(prefix)


def _set_path(data: Dict[str, Any], dotted: str, value: Any) -> None:
  parts = dotted.split('.')
  node = data
  for part in parts[:-1]:
    child = node.setdefault(part, {})
    if not isinstance(child, dict):
      raise ConfigError(f'override {dotted}: {part} is not a section')
    node = child
  node[parts[-1]] = value


def parse_override(text: str):
  """Parses `key.path=value`; the value is read as YAML (so 3, 0.5, [1, 2])."""
  if '=' not in text:
    raise ConfigError(f'override {text!r}: expected key.path=value')
  key, raw = text.split('=', 1)
  key = key.strip()
  if not key:
    raise ConfigError(f'override {text!r}: empty key')
  try:
    return key, _yaml(raw) if raw.strip() else ''
  except yaml.YAMLError as e:
    raise ConfigError(f'override {key}: cannot parse value {raw!r}') from e


def from_dict(data: Optional[Dict[str, Any]]) -> Config:
  """Builds and validates a Config from a (possibly partial) mapping."""
  if data is None:
    data = {}
  if not isinstance(data, dict):
    raise ConfigError(f'the config must be a mapping, got {type(data).__name__}')
  cfg = _build('', Config, data)
  _check_tree('', cfg)
  return cfg


def load_config(path: Optional[str] = None,
                overrides: Sequence[str] = ()) -> Config:
  """Loads YAML at `path` (optional), applies overrides, validates.

  Raises:
    ConfigError: naming the key, on unknown keys, wrong types or bad values.
  """
  data: Dict[str, Any] = {}
  if path:
    try:
      with open(path) as f:
        data = _yaml(f) or {}
    except OSError as e:
      raise ConfigError(f'cannot read config {path}: {e.strerror}') from e
    except yaml.YAMLError as e:
      raise ConfigError(f'config {path} is not valid YAML: {e}') from e
    if not isinstance(data, dict):
      raise ConfigError(f'config {path} must be a mapping at the top level')
  for text in overrides:
    key, value = parse_override(text)
    _set_path(data, key, value)
  return from_dict(data)


def from_json(text: str) -> Config:
  """Inverse of Config.to_json (components rebuild the config from it)."""
  return from_dict(json.loads(text))
