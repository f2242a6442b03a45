"""The student's tuned hyperparameters: applying them, fingerprints, tune scores.

One place for what a sweep searches (config.SWEEP_KEYS: dimension -> config
key), how a HyperParameters artifact's JSON becomes config values, which config
a sweep's result is valid for (its fingerprint), and the tune-split score that
selects trials (docs/architecture.md §13).
"""

import copy
import dataclasses
import hashlib
import json
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

import config as config_lib
from config import SWEEP_KEYS
from models import nll
from schemas import columns

# Keys of a HyperParameters JSON besides keras_tuner's ('space', 'values'):
# where the values came from (the pipeline's SweepLookup writes it).
PROVENANCE = 'provenance'
SOURCE_CONFIG, SOURCE_TUNER, SOURCE_SWEEP = 'config', 'tuner', 'sweep'

# Config keys that do not change what a sweep's best values mean: where things
# live, how a run is orchestrated, the sweep's own search, and the tuned values
# themselves. Everything else (data window, labels, recipe, architecture,
# teacher) is in the fingerprint.
_NOT_FINGERPRINTED = ('paths', 'vertex', 'beam', 'enable_cache', 'sweep',
                      # Where the spec was read from (its contents, `dataset`,
                      # count; the Trainers' copy names no file).
                      'dataset_file',
                      'window.snapshot_time', 'window.snapshot_policy',
                      'quantizer', 'promotion', 'gate', 'eval', 'teacher_gate',
                      'training.strategy', 'training.tpu', 'world')


def _get(cfg: config_lib.Config, key: str):
  value: Any = cfg
  for part in key.split('.'):
    value = getattr(value, part)
  return value


def _set(cfg: config_lib.Config, key: str, value) -> None:
  *parents, last = key.split('.')
  obj: Any = cfg
  for part in parents:
    obj = getattr(obj, part)
  current = getattr(obj, last)
  # An unset optional (train_steps: derived from the data) takes an int.
  kind = int if current is None else type(current)
  setattr(obj, last, kind(value))


def effective(cfg: config_lib.Config) -> Dict[str, float]:
  """The tuned dimensions' values `cfg` trains with."""
  return {name: _get(cfg, key) for name, key in SWEEP_KEYS.items()}


def apply(cfg: config_lib.Config, values: Dict[str, Any]) -> config_lib.Config:
  """A copy of `cfg` with `values` (dimension name -> value) set.

  Raises:
    config_lib.ConfigError: an unknown dimension, or a value out of its range.
  """
  unknown = sorted(set(values) - set(SWEEP_KEYS))
  if unknown:
    raise config_lib.ConfigError(
        f'hyperparameters: unknown {unknown} (known: {sorted(SWEEP_KEYS)})')
  out = copy.deepcopy(cfg)
  for name, value in values.items():
    _set(out, SWEEP_KEYS[name], value)
  # Ranges are checked as on load (e.g. alpha in [0, 1]).
  return config_lib.from_dict(json.loads(out.to_json()))


def values_of(hp_config: Optional[Dict]) -> Dict[str, Any]:
  """The tuned values in a HyperParameters JSON (keras_tuner's get_config(), or
  {} / None: none)."""
  if not hp_config:
    return {}
  return {k: v for k, v in hp_config.get('values', {}).items() if k in SWEEP_KEYS}


def provenance_of(hp_config: Optional[Dict]) -> Dict[str, Any]:
  """Where a HyperParameters JSON's values came from (the Tuner's own output has
  no provenance: the values are this run's sweep's)."""
  if hp_config is None:
    return {'source': SOURCE_CONFIG}
  return hp_config.get(PROVENANCE) or {'source': SOURCE_TUNER}


def as_hp_config(values: Dict[str, Any], provenance: Dict[str, Any]) -> Dict:
  """A HyperParameters JSON the Trainer reads (keras_tuner's layout plus
  provenance)."""
  return {'space': [], 'values': dict(values), PROVENANCE: provenance}


def _drop(tree: Dict, dotted: str) -> None:
  *parents, last = dotted.split('.')
  for part in parents:
    tree = tree.get(part, {})
  tree.pop(last, None)


def fingerprint(cfg: config_lib.Config) -> str:
  """What a sweep's best values were found for: the config minus locations,
  orchestration, gates and the tuned keys; the student's architecture included.
  A nightly run reuses a sweep only with the same fingerprint."""
  tree = dataclasses.asdict(cfg)
  for key in _NOT_FINGERPRINTED + tuple(SWEEP_KEYS.values()):
    _drop(tree, key)
  # Which clicks are held out for tuning changes what the student trains on.
  tree['tune_fraction'] = cfg.sweep.tune_fraction
  text = json.dumps(tree, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- The tune split's score ---------------------------------------------------

SCORE_PANEL, SCORE_PRIOR = 'panel', 'prior'
# The panel flag's key in the score's rows (the trainers map the dataset's panel
# column onto it).
PANEL = 'panel'


def score_columns(window_names: Sequence[str]) -> Tuple[str, ...]:
  """Raw columns the score reads beside the model's features (and the panel)."""
  return (columns.labels(window_names) + columns.exposures(window_names) +
          columns.observed_exposures(window_names))


def score_mode(setting: str, in_panel: Optional[np.ndarray], min_panel: int) -> str:
  """panel or prior: `setting`, or for auto the panel when it has enough clicks
  (`in_panel` None: the dataset has no panel)."""
  if setting != 'auto':
    return setting
  if in_panel is None:
    return SCORE_PRIOR
  return SCORE_PANEL if int(np.sum(in_panel == 1)) >= min_panel else SCORE_PRIOR


def tune_nll(rates: np.ndarray, rows: Dict[str, np.ndarray], mode: str,
             window_names: Sequence[str]) -> Dict:
  """The observed-count Poisson NLL per click, summed over delay windows.

  Window w's expected count is rate_w times its offset: on the panel (fully
  observed clicks) the exposure e_w, else the prior's observed exposure f_b e_w
  (biased where observability varies within a browser, hence panel first).

  Args:
    rates: [N, W] predicted rates per window.
    rows: the score_columns (and the panel flag, PANEL) of the same N examples,
      each [N] or [N, 1].
    mode: SCORE_PANEL or SCORE_PRIOR.
    window_names: the dataset's delay windows.

  Returns:
    {'nll': mean over the scored clicks, 'examples': how many, 'mode': mode}.
  """
  def stack(names):
    return np.stack([np.asarray(rows[c], np.float64).reshape(-1) for c in names], 1)
  counts = stack(columns.labels(window_names))
  if mode == SCORE_PANEL:
    offsets = stack(columns.exposures(window_names))
    keep = np.asarray(rows[PANEL]).reshape(-1) == 1
  elif mode == SCORE_PRIOR:
    offsets = stack(columns.observed_exposures(window_names))
    keep = np.ones(len(counts), bool)
  else:
    raise ValueError(f'unknown tune score mode {mode!r}')
  if not keep.any():
    raise ValueError(f'the tune split has no clicks to score in mode {mode!r}')
  mu = np.asarray(rates, np.float64)[keep] * offsets[keep]
  per = nll.poisson_nll_per_example(counts[keep].reshape(-1), mu.reshape(-1))
  per = per.reshape(-1, counts.shape[1]).sum(1)
  return {'nll': float(per.mean()), 'examples': int(keep.sum()), 'mode': mode}


def best_trial(trials: Sequence[Dict], key: str = 'tune_nll') -> Dict:
  """The trial with the lowest `key` (the selection rule; ties: the first)."""
  return min(trials, key=lambda t: t[key])
