"""Backtests: the versions pushed earlier, scored again once their labels matured.

A version's metadata.json names the Examples it was evaluated on (its night's
ExampleGen output): its eval split is the clicks of [T_v - E, T_v) with the
conversions reported by T_v. Tonight's ExampleGen joined the same clicks (when
they fall in tonight's window) with every conversion reported by tonight's T.
The served model is scored on its own eval clicks three ways:

  pushed_time  labels as of T_v (what the gate saw, up to TFMA's rounding)
  matured      labels as of tonight's T, aligned by click id
  truth        the true conversions (synthetic worlds only)

pushed_time and matured in the gating label mode (`eval.label_mode`), or, when
that is the truth (which does not mature), in `observed_observable`; each with
its calibration sum(scale * pConvs) / sum(label).
"""

import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from components.pusher import push
from components.quantizer import convert
from models import nll
from observation import eval_labels
from schemas import codec
from schemas import columns
from schemas import records

# The observed mode a truth-gated pipeline's backtests mature in.
OBSERVED_MODE = 'observed_observable'


def maturing(window_names) -> tuple:
  """What tonight's join changes about a click: its labels and exposures."""
  return (columns.labels(window_names) + columns.exposures(window_names) +
          columns.observed_exposures(window_names) + (columns.MATURITY,))


def split_rows(examples_uri: str, split: str) -> Dict[str, np.ndarray]:
  """Every example of an Examples artifact's split, as numpy columns."""
  return codec.decode(records.read_records(
      os.path.join(examples_uri, f'Split-{split}', '*')))


def _score(pconvs: np.ndarray, rows: Dict[str, np.ndarray],
           spec: eval_labels.EvalLabelSpec, mode: str) -> Optional[Dict]:
  try:
    mode = eval_labels.resolve(mode, list(rows), spec.window_names, spec.panel)
  except ValueError as e:
    return {'mode': mode, 'skipped': str(e)}
  y, scale, keep = eval_labels.label_and_scale(rows, mode, spec.window_names,
                                               spec.panel, spec.full_threshold)
  if not keep.any():
    return {'mode': mode, 'skipped': 'no scored example'}
  mu = scale[keep] * pconvs[keep]
  return {'mode': mode, 'nll': nll.poisson_nll(y[keep], mu),
          'calibration': float(mu.sum() / y[keep].sum()) if y[keep].sum() else None,
          'examples': int(keep.sum())}


def _aligned(rows: Dict[str, np.ndarray], tonight: Dict[str, np.ndarray],
             window_names):
  """(found, rows): which of `rows`' clicks tonight has, and those rows with
  tonight's maturing columns."""
  ids = np.asarray(rows[columns.CLICK_ID]).reshape(-1)
  tonight_ids = np.asarray(tonight.get(columns.CLICK_ID, [])).reshape(-1)
  if not len(tonight_ids):
    return np.zeros(len(ids), bool), None
  order = np.argsort(tonight_ids)
  at = np.minimum(np.searchsorted(tonight_ids, ids, sorter=order), len(order) - 1)
  found = tonight_ids[order[at]] == ids
  src = order[at[found]]
  out = {c: np.asarray(v)[found] for c, v in rows.items()}
  for c in maturing(window_names):
    if c in tonight:
      out[c] = np.asarray(tonight[c])[src]
  return found, out


@dataclasses.dataclass(frozen=True)
class Pushed:
  """A version pushed by an earlier night (the Pusher's record in MLMD)."""
  version: str
  snapshot_time: str


def run(serving_dir: str, pushed: Sequence[Pushed], tonight_examples_uri: str,
        tonight_t: str, spec: eval_labels.EvalLabelSpec) -> List[Dict]:
  """Scores each version pushed before tonight's T on its own eval clicks.

  Args:
    serving_dir: the push base (each version's model.tflite and metadata.json).
    pushed: the versions pushed so far (oldest first).
    tonight_examples_uri: tonight's ExampleGen output (every split is read).
    tonight_t: tonight's T (ISO 8601); versions of T >= it are left out.
    spec: the gating label spec (`cfg.eval_label_spec()`).

  Returns:
    One dict per version: version, its T, pushed_time / matured / truth scores
    (or why one was skipped) and the share of its clicks found tonight.
  """
  tonight = None
  out = []
  for p in pushed:
    if p.snapshot_time >= tonight_t:
      continue
    version_dir = os.path.join(serving_dir, p.version)
    entry = {'version': p.version, 'snapshot_time': p.snapshot_time,
             'as_of': tonight_t}
    try:
      meta = push.read_metadata(version_dir)
      model = push.read_file(version_dir)
      if model is None:
        raise OSError(f'no {push.MODEL_FILE}')
      rows = split_rows(meta['examples_uri'], 'eval')
    except (tf.errors.OpError, KeyError, OSError) as e:
      entry['skipped'] = f'version unreadable: {e}'
      out.append(entry)
      continue
    pconvs = convert.predict(model, rows)
    mode = OBSERVED_MODE if spec.mode == 'truth' else spec.mode
    entry['pushed_time'] = _score(pconvs, rows, spec, mode)
    entry['truth'] = (_score(pconvs, rows, spec, 'truth')
                      if columns.TRUE_CONVERSIONS in rows else None)
    if tonight is None:
      tonight = {}
      parts = [split_rows(tonight_examples_uri, s) for s in ('train', 'eval')]
      for c in parts[0]:
        tonight[c] = np.concatenate([np.asarray(p_[c]) for p_ in parts if c in p_])
    found, matured = _aligned(rows, tonight, spec.window_names)
    entry['clicks'] = int(len(found))
    entry['clicks_found_tonight'] = int(found.sum())
    entry['matured'] = (_score(pconvs[found], matured, spec, mode)
                        if found.any() else
                        {'skipped': "no eval click in tonight's window"})
    out.append(entry)
  return out
