"""The run report: a static HTML page of PNG plots for one local run, from ML
Metadata (docs/architecture.md §8; docs/usage.md, "The run report").

  <output_root>/<pipeline>/reports/<run id>/index.html
                                            <plot>.png, <plot>.json (its data)

Plots (each only when its node ran in that run; the history always):
  loss_by_slice        PoissonLogLoss by slice, candidate vs baseline, TFMA CIs
  calibration_deciles  mean scaled prediction vs mean label by prediction decile
  spend_by_tcpa        implied / desired spend by tCPA bucket (SpendProxy, CIs)
  int8_vs_float        the Quantizer's size, error, NLL and latency
  wall_time            seconds per component
  history              every night so far: loss, calibration, decisions, pushes,
                       and the pushed versions' backtests (pipeline/backtest.py)

`python -m pipeline.cli report` rebuilds it for any past local run; the CLI
builds it after every local run.
"""

import html
import json
import os
import time
from typing import Dict, List, Optional

import matplotlib
matplotlib.use('Agg')  # headless: files only, before pyplot is imported
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import pyplot as plt
import numpy as np
from tfx.utils import path_utils

from components import artifacts
from components.promotion import figures as figures_lib
from components.quantizer import convert
from components.quantizer import executor as quantizer
from components.served_baseline import executor as served_baseline
import config as config_lib
from models import spend_metric
from observation import eval_labels
from pipeline import backtest
from pipeline import evaluation
from pipeline import local
from schemas import columns

# The plots, in page order (one source of truth for names: the tests read it).
PLOTS = ('loss_by_slice', 'calibration_deciles', 'spend_by_tcpa', 'int8_vs_float',
         'wall_time', 'history')
INDEX = 'index.html'
CALIBRATION = f'{evaluation.GATE_METRIC}_calibration'
SPEND_RATIO = f'{spend_metric.NAME}_ratio'
CANDIDATE, BASELINE = evaluation.CANDIDATE, evaluation.BASELINE


def report_dir(cfg: config_lib.Config, run_id: str) -> str:
  return os.path.join(local.LocalPaths.from_config(cfg).root, 'reports', run_id)


class _Run:
  """One pipeline run's node outputs in ML Metadata."""

  def __init__(self, cfg: config_lib.Config, run: Dict):
    self.cfg = cfg
    self.run = run
    self.paths = local.LocalPaths.from_config(cfg)
    self.by_node = {e['node']: e for e in run['executions']
                    if e['state'] in ('COMPLETE', 'CACHED')}

  def outputs(self, node: str) -> Dict:
    if node not in self.by_node:
      return {}
    return local.node_outputs(self.paths.metadata, self.cfg.pipeline_name, node,
                              self.by_node[node]['execution_id'])

  def artifact(self, node: str, key: str):
    found = self.outputs(node).get(key) or []
    return found[0] if found else None

  def prop(self, node: str, key: str, name: str, default=None):
    a = self.artifact(node, key)
    return default if a is None else local.custom_property(a, name, default)


def _estimate(e) -> Dict:
  return {'value': e.value, 'lower': e.lower, 'upper': e.upper}


def _by_role(figs: Dict, slice_name: str, metric: str) -> Dict:
  roles = figs.get(slice_name, {}).get(metric, {})
  return {r: _estimate(roles[r]) for r in (CANDIDATE, BASELINE) if r in roles}


# --- data ------------------------------------------------------------------

def loss_by_slice(figs: Dict) -> Dict:
  """{slice: {candidate|baseline: {value, lower, upper}}} of the gating loss."""
  return {'metric': evaluation.GATE_METRIC, 'slices': {
      s: _by_role(figs, s, evaluation.GATE_METRIC) for s in sorted(figs)
      if evaluation.GATE_METRIC in figs[s]}}


def spend_by_tcpa(figs: Dict) -> Dict:
  """{bucket: {candidate|baseline: spend / desired spend with its CI}}."""
  prefix = f'{columns.TCPA_BUCKET}='
  return {'metric': SPEND_RATIO, 'buckets': {
      s[len(prefix):]: _by_role(figs, s, SPEND_RATIO) for s in sorted(figs)
      if s.startswith(prefix) and SPEND_RATIO in figs[s]}}


def calibration_deciles(run: _Run, cfg: config_lib.Config) -> Optional[Dict]:
  """Both models on the Evaluator's eval examples, by candidate prediction decile."""
  examples = run.artifact('BulkInferrer', 'output_examples')
  model = run.artifact('Quantizer', 'quantized_model')
  if examples is None or model is None:
    return None
  rows = backtest.split_rows(examples.uri, 'eval')
  spec = cfg.eval_label_spec()
  mode = eval_labels.resolve(spec.mode, list(rows), spec.window_names, spec.panel)
  y, scale, keep = eval_labels.label_and_scale(rows, mode, spec.window_names,
                                               spec.panel, spec.full_threshold)
  models = {CANDIDATE: path_utils.serving_model_path(model.uri) + '/tflite'}
  baseline = run.artifact('ServedBaseline', served_baseline.BASELINE_KEY)
  if baseline is not None and os.path.exists(served_baseline.tflite_path(baseline.uri)):
    models[BASELINE] = served_baseline.tflite_path(baseline.uri)
  mu = {}
  for name, path in models.items():
    with open(path, 'rb') as f:
      mu[name] = (scale * convert.predict(f.read(), rows))[keep]
  y = y[keep]
  # Deciles of the candidate's prediction (ties broken by order: equal counts).
  order = np.argsort(mu[CANDIDATE], kind='stable')
  out = {'label_mode': mode, 'examples': int(keep.sum()), 'deciles': []}
  for i, idx in enumerate(np.array_split(order, 10)):
    out['deciles'].append({'decile': i + 1, 'examples': int(len(idx)),
                           'label_mean': float(y[idx].mean()),
                           **{f'{n}_mean': float(m[idx].mean())
                              for n, m in mu.items()}})
  out['overall'] = {n: float(m.sum() / y.sum()) if y.sum() else None
                    for n, m in mu.items()}
  return out


def int8_vs_float(run: _Run) -> Optional[Dict]:
  a = run.artifact('Quantizer', 'report')
  if a is None:
    return None
  with open(os.path.join(a.uri, quantizer.REPORT_FILE)) as f:
    r = json.load(f)
  lat = r['latency']
  return {'mode': r['mode'],
          'bytes': {'float32': r['float32_tflite_bytes'], r['mode']: r['quantized_bytes']},
          'size_ratio': r['size_ratio'],
          'nll': {'float32': r['nll_float'], r['mode']: r['nll_quantized']},
          'nll_relative_change': r['nll_relative_change'],
          'mean_rel_error': r['errors']['mean_rel_error'],
          'max_rel_error': r['errors']['max_rel_error'],
          'latency_us': {k: {'p50': v['p50_us'], 'p99': v['p99_us']}
                         for k, v in lat.items()}}


def wall_time(run: _Run) -> Dict:
  return {'run_id': run.run['run_id'], 'nodes': [
      {k: e[k] for k in ('node', 'state', 'seconds', 'execution_id')}
      for e in run.run['executions']]}


def _night(run: _Run) -> Dict:
  """A history point: T, the gate's figures, the decisions, the push."""
  night = {'run_id': run.run['run_id'],
           'snapshot_time': run.prop('ConversionLogExampleGen', 'examples',
                                     artifacts.SNAPSHOT_TIME)}
  ev = run.artifact('Evaluator', 'evaluation')
  if ev is not None:
    figs = figures_lib.load(ev.uri)
    for role in (CANDIDATE, BASELINE):
      for metric, key in ((evaluation.GATE_METRIC, 'loss'),
                          (CALIBRATION, 'calibration')):
        e = figs.get(figures_lib.OVERALL, {}).get(metric, {}).get(role)
        if e is not None:
          night[f'{key}_{role}'] = e.value
    night['evaluator_blessed'] = bool(run.prop('Evaluator', 'blessing', 'blessed'))
  if run.artifact('Promotion', 'blessing') is not None:
    night['promoted'] = bool(run.prop('Promotion', 'blessing', 'blessed'))
  if run.artifact('Pusher', 'pushed_model') is not None:
    pushed = bool(run.prop('Pusher', 'pushed_model', 'pushed'))
    night['pushed_version'] = (run.prop('Pusher', 'pushed_model', 'pushed_version')
                               if pushed else None)
  return night


def history(cfg: config_lib.Config, runs: List[Dict]) -> Dict:
  """Every night up to the last of `runs`, and that night's backtests."""
  nights = [_night(_Run(cfg, r)) for r in runs]
  last = _Run(cfg, runs[-1])
  examples = last.artifact('ConversionLogExampleGen', 'examples')
  pushed = [backtest.Pushed(n['pushed_version'], n['snapshot_time'])
            for n in nights if n.get('pushed_version')]
  tests = []
  if examples is not None:
    tests = backtest.run(last.paths.serving_dir, pushed, examples.uri,
                         local.custom_property(examples, artifacts.SNAPSHOT_TIME),
                         cfg.eval_label_spec())
  return {'nights': nights, 'backtests': tests}


# --- plots -----------------------------------------------------------------

def _errorbars(ax, names: List[str], by_role: Dict[str, Dict], ylabel: str):
  x = np.arange(len(names))
  for i, role in enumerate((CANDIDATE, BASELINE)):
    pts = [(j, by_role[n][role]) for j, n in enumerate(names) if role in by_role[n]]
    if not pts:
      continue
    v = np.array([p[1]['value'] for p in pts])
    err = np.array([[max(0.0, p[1]['value'] - p[1]['lower']) for p in pts],
                    [max(0.0, p[1]['upper'] - p[1]['value']) for p in pts]])
    ax.errorbar(x[[p[0] for p in pts]] + (i - 0.5) * 0.25, v, yerr=err, fmt='o',
                capsize=3, label=role)
  ax.set_xticks(x)
  ax.set_xticklabels(names, rotation=30, ha='right', fontsize=8)
  ax.set_ylabel(ylabel)
  ax.legend()
  ax.grid(alpha=0.3)


def _plot(name: str, data: Dict, fig_dir: str) -> None:
  fig, ax = plt.subplots(figsize=(8, 4.2))
  if name == 'loss_by_slice':
    names = list(data['slices'])
    _errorbars(ax, names, data['slices'], 'Poisson log loss (95% CI)')
    ax.set_title('Poisson log loss by slice: candidate vs baseline')
  elif name == 'spend_by_tcpa':
    names = list(data['buckets'])
    _errorbars(ax, names, data['buckets'], 'implied / desired spend (95% CI)')
    ax.axhline(1.0, color='grey', lw=1, ls='--')
    ax.set_title('Spend vs desired spend by tCPA bucket')
  elif name == 'calibration_deciles':
    d = data['deciles']
    label = [r['label_mean'] for r in d]
    top = max(label + [r[f'{m}_mean'] for r in d for m in (CANDIDATE, BASELINE)
                       if f'{m}_mean' in r]) * 1.05
    for m in (CANDIDATE, BASELINE):
      if f'{m}_mean' in d[0]:
        ax.plot([r[f'{m}_mean'] for r in d], label, 'o-', label=m)
    ax.plot([0, top], [0, top], color='grey', lw=1, ls='--')
    ax.set_xlabel('mean prediction (scaled) per decile of the candidate')
    ax.set_ylabel(f'mean label ({data["label_mode"]})')
    ax.set_title('Calibration by prediction decile')
    ax.legend()
    ax.grid(alpha=0.3)
  elif name == 'int8_vs_float':
    plt.close(fig)
    fig, axes = plt.subplots(1, 4, figsize=(11, 3.4))
    modes = list(data['bytes'])
    axes[0].bar(modes, [data['bytes'][m] / 1024 for m in modes], color=['C0', 'C1'])
    axes[0].set_title(f'size KiB ({data["size_ratio"]:.2f}x)')
    axes[1].bar(modes, [data['nll'][m] for m in modes], color=['C0', 'C1'])
    lo = min(data['nll'].values())
    axes[1].set_ylim(lo * 0.99, max(data['nll'].values()) * 1.005)
    axes[1].set_title(f'NLL ({data["nll_relative_change"]:+.3%})')
    axes[2].bar(['mean', 'max'], [data['mean_rel_error'] * 100,
                                  data['max_rel_error'] * 100], color='C1')
    axes[2].set_title('pConvs rel. error %')
    kinds = list(data['latency_us'])
    x = np.arange(len(kinds))
    axes[3].bar(x - 0.2, [data['latency_us'][k]['p50'] for k in kinds], 0.4, label='p50')
    axes[3].bar(x + 0.2, [data['latency_us'][k]['p99'] for k in kinds], 0.4, label='p99')
    axes[3].set_xticks(x)
    axes[3].set_xticklabels([k.replace('_', '\n') for k in kinds], fontsize=7)
    axes[3].set_yscale('log')
    axes[3].set_title('latency us (batch 1)')
    axes[3].legend(fontsize=7)
    fig.suptitle(f'{data["mode"]} vs float32')
  elif name == 'wall_time':
    nodes = data['nodes']
    ax.barh([n['node'] for n in nodes][::-1], [n['seconds'] for n in nodes][::-1],
            color=['C3' if n['state'] not in ('COMPLETE', 'CACHED') else 'C0'
                   for n in nodes][::-1])
    ax.set_xlabel('seconds')
    ax.set_title(f'Wall time per component (total {sum(n["seconds"] for n in nodes):.0f}s)')
    ax.tick_params(axis='y', labelsize=8)
  elif name == 'history':
    plt.close(fig)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    nights = [n for n in data['nights'] if 'loss_candidate' in n]
    x = np.arange(len(nights))
    labels = [f'{(n["snapshot_time"] or "?")[:10]}\n{n["run_id"][-6:]}' for n in nights]
    ax.plot(x, [n['loss_candidate'] for n in nights], 'o-', label='candidate')
    ax.plot(x, [n.get('loss_baseline', np.nan) for n in nights], 's--',
            label='baseline (served)')
    for i, n in enumerate(nights):
      mark = ('pushed' if n.get('pushed_version') else
              'promoted' if n.get('promoted') else 'not promoted')
      ax.annotate(mark, (i, n['loss_candidate']), textcoords='offset points',
                  xytext=(0, 8), ha='center', fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel('Poisson log loss (overall)')
    axc = ax.twinx()
    axc.plot(x, [n.get('calibration_candidate', np.nan) for n in nights], 'x:',
             color='C2', label='calibration (cand.)')
    axc.set_ylabel('calibration', color='C2')
    ax.legend(fontsize=7, loc='upper left')
    ax.set_title('Nightly: loss, calibration, decision')
    tests = [t for t in data['backtests'] if 'pushed_time' in t]
    xb = np.arange(len(tests))
    for i, (key, label) in enumerate((('pushed_time', 'at push'),
                                      ('matured', 'labels matured'),
                                      ('truth', 'truth'))):
      vals = [(t.get(key) or {}).get('nll', np.nan) for t in tests]
      ax2.bar(xb + (i - 1) * 0.27, vals, 0.27, label=label)
    ax2.set_xticks(xb)
    ax2.set_xticklabels([t['version'][:16] for t in tests], fontsize=7)
    ax2.set_ylabel('Poisson log loss')
    if tests:
      lo = min((t.get(k) or {}).get('nll', np.inf) for t in tests
               for k in ('pushed_time', 'matured', 'truth'))
      ax2.set_ylim(lo * 0.9)
    modes = sorted({t['pushed_time'].get('mode', '?') for t in tests})
    ax2.set_title('Backtests of pushed versions: at push vs matured'
                  + (f' ({", ".join(modes)})' if modes else ''))
    ax2.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(fig_dir, f'{name}.png'), dpi=90)
  plt.close(fig)


def _html(run_id: str, data: Dict[str, Dict], summary_lines: List[str],
          absent: Optional[Dict[str, str]] = None) -> str:
  titles = {'loss_by_slice': 'Poisson log loss by slice',
            'calibration_deciles': 'Calibration by prediction decile',
            'spend_by_tcpa': 'Spend vs desired spend by tCPA bucket',
            'int8_vs_float': 'INT8 vs float: size, error, NLL, latency',
            'wall_time': 'Wall time per component',
            'history': 'Nightly history and backtests'}
  parts = [f'<!doctype html><html><head><meta charset="utf-8"><title>Run {html.escape(run_id)}'
           '</title><style>body{font-family:sans-serif;max-width:1200px;margin:1em auto}'
           'img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;padding:.5em}'
           '</style></head><body>',
           f'<h1>Run {html.escape(run_id)}</h1>']
  if summary_lines:
    parts.append('<pre>' + html.escape('\n'.join(summary_lines)) + '</pre>')
  for name in PLOTS:
    if name not in data:
      why = html.escape((absent or {}).get(name, 'not in this run'))
      parts.append(f'<h2>{titles[name]}</h2><p class="absent">{why}</p>')
      continue
    parts.append(f'<h2>{titles[name]}</h2><figure><img class="plot" '
                 f'data-plot="{name}" src="{name}.png" alt="{titles[name]}">'
                 f'<figcaption><a href="{name}.json">data ({name}.json)</a>'
                 '</figcaption></figure>')
  parts.append('</body></html>')
  return '\n'.join(parts)


def build(cfg: config_lib.Config, run_id: Optional[str] = None,
          summary_lines: Optional[List[str]] = None) -> str:
  """Writes the report of `run_id` (default: the latest run); returns its path.

  Raises:
    ValueError: the pipeline has no such run in its ML Metadata.
  """
  start = time.time()
  paths = local.LocalPaths.from_config(cfg)
  runs = (local.pipeline_runs(paths.metadata, cfg.pipeline_name)
          if os.path.exists(paths.metadata) else [])
  if not runs:
    raise ValueError(f'no run of {cfg.pipeline_name} in {paths.metadata}')
  ids = [r['run_id'] for r in runs]
  run_id = run_id or ids[-1]
  if run_id not in ids:
    raise ValueError(f'no run {run_id!r} in {paths.metadata}; runs: {", ".join(ids)}')
  runs = runs[:ids.index(run_id) + 1]
  run = _Run(cfg, runs[-1])
  data: Dict[str, Dict] = {}
  ev = run.artifact('Evaluator', 'evaluation')
  if ev is not None:
    figs = figures_lib.load(ev.uri)
    data['loss_by_slice'] = loss_by_slice(figs)
    if cfg.dataset.tcpa:
      data['spend_by_tcpa'] = spend_by_tcpa(figs)
    deciles = calibration_deciles(run, cfg)
    if deciles:
      data['calibration_deciles'] = deciles
  int8 = int8_vs_float(run)
  if int8:
    data['int8_vs_float'] = int8
  data['wall_time'] = wall_time(run)
  data['history'] = history(cfg, runs)
  out = report_dir(cfg, run_id)
  os.makedirs(out, exist_ok=True)
  for name in PLOTS:
    if name in data:
      with open(os.path.join(out, f'{name}.json'), 'w') as f:
        json.dump(data[name], f, indent=1, sort_keys=True, default=str)
      _plot(name, data[name], out)
  path = os.path.join(out, INDEX)
  with open(path, 'w') as f:
    absent = {} if cfg.dataset.tcpa else {
        'spend_by_tcpa': f'not applicable: dataset {cfg.dataset.name} has no tCPA'}
    f.write(_html(run_id, data, list(summary_lines or [])
                  + [f'report built in {time.time() - start:.1f}s'], absent))
  return path
