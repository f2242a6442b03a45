"""Candidate vs baseline TFLite latency, timed interleaved, with bootstrap CIs.

No library compares two models' latency percentiles with intervals (the TFLite
benchmark tool times one model per process, so machine load between two runs
would pass for a difference). Here both interpreters live in one process and
are invoked alternately on the same examples (AB then BA, so neither always
runs second), at batch 1 and at a serving batch. Where an interpreter lands in
memory matters too: of two copies of one model, the one set up first ran ~0.3-0.6%
slower at p50 here, steadily, which a bootstrap over invokes alone calls
significant. So the samples are taken in rounds with fresh interpreters, the
setup order swapped every round, and the intervals are a two-level paired
bootstrap: rounds with replacement, then invokes within each (the same indices
for both models, so a load spike widens neither difference).
"""

import time
from typing import Dict, Mapping, Sequence

import numpy as np

from components.promotion import rule as rule_lib
from components.quantizer import convert

PERCENTILES = {'p50': 50.0, 'p99': 99.0, 'p99.9': 99.9}
CANDIDATE, BASELINE = 'candidate', 'baseline'


def _interpreter(model: bytes, rows: Mapping[str, np.ndarray], batch: int,
                 feeds: int):
  """An interpreter resized to `batch` and `feeds` batches of its inputs."""
  # The default XNNPACK delegate, one thread: as a CPU server runs it.
  it = convert.interpreter(model, delegates=True)
  inputs = it.get_input_details()
  for d in inputs:
    it.resize_tensor_input(d['index'], [batch, 1])
  it.allocate_tensors()
  n = len(next(iter(rows.values())))
  out = []
  for k in range(feeds):
    idx = (np.arange(batch) + k * batch) % n
    out.append([(d['index'], np.asarray(
        rows[d['name'][len(convert.INPUT_PREFIX):].split(':')[0]])[idx]
                 .reshape(batch, 1).astype(d['dtype'])) for d in inputs])
  return it, out


def time_interleaved(models: Sequence[bytes], rows: Mapping[str, np.ndarray],
                     batch: int, samples: int, warmup: int = 200,
                     distinct: int = 256, reverse_setup: bool = False) -> np.ndarray:
  """Seconds per invoke (set inputs + invoke), shape [len(models), samples]."""
  order = list(range(len(models)))
  setups = {m: _interpreter(models[m], rows, batch, distinct)
            for m in (order[::-1] if reverse_setup else order)}
  times = np.zeros((len(models), samples))
  for i in range(warmup + samples):
    feed_index = i % distinct
    for m in (order if i % 2 == 0 else order[::-1]):
      it, feeds = setups[m]
      start = time.perf_counter()
      for index, value in feeds[feed_index]:
        it.set_tensor(index, value)
      it.invoke()
      elapsed = time.perf_counter() - start
      if i >= warmup:
        times[m, i - warmup] = elapsed
  return times


def _estimate(point: float, replicates: np.ndarray) -> rule_lib.Estimate:
  lower, upper = np.percentile(replicates, [2.5, 97.5])
  return rule_lib.Estimate(float(point), float(lower), float(upper))


def time_rounds(candidate: bytes, baseline: bytes, rows: Mapping[str, np.ndarray],
                batch: int, samples: int, rounds: int = 10) -> np.ndarray:
  """Seconds per invoke, shape [2 (candidate, baseline), rounds, per round]:
  fresh interpreters each round, set up in swapped order every other round."""
  per = -(-samples // rounds)
  out = [time_interleaved([candidate, baseline], rows, batch, per,
                          reverse_setup=r % 2 == 1) for r in range(rounds)]
  return np.stack(out, 1)


def summarize(candidate: np.ndarray, baseline: np.ndarray, replicates: int = 1000,
              seed: int = 0, chunk: int = 50) -> Dict[str, Dict]:
  """Percentiles (microseconds) of both and their relative difference, each
  with a paired two-level bootstrap 95% interval.

  Args:
    candidate, baseline: seconds, shape [rounds, per round] (paired by index).
  """
  candidate = np.atleast_2d(candidate)
  baseline = np.atleast_2d(baseline)
  rounds, per = candidate.shape
  flat_c, flat_b = candidate.reshape(-1), baseline.reshape(-1)
  qs = list(PERCENTILES.values())
  rng = np.random.default_rng(seed)
  boot = {CANDIDATE: [], BASELINE: []}
  for lo in range(0, replicates, chunk):
    size = min(chunk, replicates - lo)
    chosen = rng.integers(0, rounds, size=(size, rounds, 1))
    idx = (chosen * per + rng.integers(0, per, size=(size, rounds, per))).reshape(
        size, -1)
    boot[CANDIDATE].append(np.percentile(flat_c[idx], qs, axis=1).T)
    boot[BASELINE].append(np.percentile(flat_b[idx], qs, axis=1).T)
  boot = {k: np.concatenate(v) * 1e6 for k, v in boot.items()}
  point = {CANDIDATE: np.percentile(flat_c, qs) * 1e6,
           BASELINE: np.percentile(flat_b, qs) * 1e6}
  out: Dict[str, Dict] = {CANDIDATE: {}, BASELINE: {}, 'diff': {}}
  for j, name in enumerate(PERCENTILES):
    for model in (CANDIDATE, BASELINE):
      out[model][name + '_us'] = _estimate(point[model][j], boot[model][:, j])
    rel = (boot[CANDIDATE][:, j] - boot[BASELINE][:, j]) / boot[BASELINE][:, j]
    out['diff'][name] = _estimate(
        (point[CANDIDATE][j] - point[BASELINE][j]) / point[BASELINE][j], rel)
  return out


def compare(candidate: bytes, baseline: bytes, rows: Mapping[str, np.ndarray],
            samples: int, batches: Sequence[int] = (1, 64),
            replicates: int = 1000, seed: int = 0,
            rounds: int = 10) -> Dict[str, Dict]:
  """{'batch_<b>': summarize(...)} for each batch size: at least `samples`
  timed invokes per model and batch size."""
  out: Dict[str, Dict] = {}
  for batch in batches:
    times = time_rounds(candidate, baseline, rows, batch, samples, rounds)
    out[f'batch_{batch}'] = summarize(times[0], times[1], replicates, seed)
  return out


def diffs(comparison: Mapping[str, Dict]) -> Dict[str, Dict[str, rule_lib.Estimate]]:
  """What rule.latency_area takes: {batch: {percentile: relative diff}}."""
  return {b: dict(c['diff']) for b, c in comparison.items()}


def to_json(comparison: Mapping[str, Dict]) -> Dict:
  return {b: {part: {k: v.to_dict() for k, v in figures.items()}
              for part, figures in c.items()} for b, c in comparison.items()}
