"""What a finished local run did: wall times, the gate's verdict, the promotion
decision with its three areas, the push."""

import os
from typing import Dict, Optional

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.utils import path_utils

from components import artifacts
from components.promotion import executor as promotion
from components.promotion import rule as promotion_rule
from components.pusher import push
from components.served_baseline import executor as served_baseline
from models import export
from pipeline import evaluation
from pipeline import local


def _spec_key(spec: tfma.SlicingSpec) -> tuple:
  """A feature-value SlicingSpec as the slice key TFMA writes for it."""
  return tuple((k, v.encode()) for k, v in sorted(spec.feature_values.items()))


# The slices the summary shows: overall and the gated key slice.
SLICES = {'overall': (), evaluation.KEY_SLICE_NAME: _spec_key(evaluation.KEY_SLICE)}


def _slice_key(proto) -> tuple:
  out = []
  for single in proto.slice_key.single_slice_keys:
    value = getattr(single, single.WhichOneof('kind'))
    out.append((single.column, value))
  return tuple(out)


def gate_metrics(evaluation_uri: str, metric: str = evaluation.GATE_METRIC) -> Dict:
  """{slice: {model: value}} for the gating metric, from the Evaluator's output."""
  out: Dict[str, Dict[str, float]] = {}
  for per_slice in tfma.load_metrics(evaluation_uri):
    key = _slice_key(per_slice)
    name = next((n for n, k in SLICES.items() if k == key), None)
    if name is None:
      continue
    for kv in per_slice.metric_keys_and_values:
      if kv.key.name == metric and not kv.key.is_diff:
        out.setdefault(name, {})[kv.key.model_name or evaluation.CANDIDATE] = (
            kv.value.double_value.value)
  return out


def promotion_summary(blessing) -> Dict:
  """The Promotion's decision, its areas, every rule's decision and figures."""
  out = {name: local.custom_property(blessing, name)
         for name in blessing.mlmd_artifact.custom_properties}
  out['blessed'] = bool(out.get('blessed'))
  return out


AREA_TITLES = {'loss_bias': 'area 1 loss and bias', 'business': 'area 2 business',
               'latency': 'area 3 latency'}


def promotion_text(p: Dict) -> list:
  """Lines of the promotion decision: one line of why, the three areas, every
  rule's decision."""
  if p.get('rule_applied') == 'bootstrap':
    recipe = 'bootstrap: no baseline, the Evaluator decides'
  else:
    recipe = ('same recipe' if p.get('same_recipe')
              else 'recipe or architecture changed') + f': auto is {p.get("auto_rule")}'
  # The executor's one line: the rule's verdict and why, and the smallest loss
  # difference this night's eval set resolves.
  lines = [f'promotion: {p.get("reason") or ("promoted" if p["blessed"] else "not promoted")}',
           f'  rule {p.get("rule")} -> {p.get("rule_applied")} ({recipe}); '
           'the push follows this']
  for name in promotion_rule.AREAS:
    flag = p.get(f'area_{name}', -1)
    verdict = {1: 'improved', 0: 'not improved'}.get(flag, 'not judged')
    reason = p.get(f'area_{name}_reason', '')
    if reason.startswith('not applicable'):
      verdict, reason = 'not applicable', reason[len('not applicable: '):]
    lines.append(f'  {AREA_TITLES[name]}: {verdict}: {reason}')
  if 'fallback_failed_fraction' in p:
    low = p.get('fallback_failed_browser_observability_low')
    cover = p.get('fallback_coverage_overall')
    lines.append(
        f'  fallback: failed {100 * p["fallback_failed_fraction"]:.1f}% of eval clicks'
        + (f' ({100 * low:.1f}% on low-observability browsers)' if low is not None
           else '')
        + f', cap {100 * p["fallback_max_failed_fraction"]:.0f}%'
        + (f'; the band covers {100 * cover:.1f}% of true rates' if cover is not None
           else '')
        + f'; falls back to {p.get("fallback_version") or "?"}')
  lines.append('  rules: ' + ', '.join(
      f'{r} {"promotes" if p.get(f"decision_{r}") else "does not promote"}'
      for r in promotion_rule.RULES))
  return lines


def summarize(cfg, run_label: str = '') -> Dict:
  """The latest run: per-node wall time and state, gate metrics, blessing, push."""
  paths = local.LocalPaths.from_config(cfg)
  executions = local.node_executions(paths.metadata, cfg.pipeline_name)
  by_node = {e['node']: e for e in executions}

  def outputs(node: str) -> Dict:
    if node not in by_node:
      return {}
    return local.node_outputs(paths.metadata, cfg.pipeline_name, node,
                              by_node[node]['execution_id'])

  summary: Dict = {'run': run_label, 'executions': executions}
  evaluation = outputs('Evaluator')
  if evaluation:
    blessing = evaluation['blessing'][0]
    summary['blessed'] = bool(local.custom_property(blessing, 'blessed'))
    summary['baseline_model'] = local.custom_property(blessing, 'baseline_model')
    summary['gate'] = gate_metrics(evaluation['evaluation'][0].uri)
  promoted = outputs('Promotion')
  if promoted:
    summary['promotion'] = promotion_summary(promoted[promotion.BLESSING_KEY][0])
  pushed = outputs('Pusher')
  if pushed:
    p = pushed['pushed_model'][0]
    summary['pushed'] = bool(local.custom_property(p, 'pushed'))
    summary['push_reason'] = local.custom_property(p, 'reason')
    if p.has_custom_property('pushed_destination'):
      summary['pushed_to'] = local.custom_property(p, 'pushed_destination')
  d = cfg.dataset
  summary['dataset'] = {'name': d.name, 'format': d.source.format,
                        'windows': list(d.window_names()), 'off': d.summary()}
  examples = outputs('ConversionLogExampleGen')
  if examples:
    summary['snapshot_time'] = local.custom_property(examples['examples'][0],
                                                     artifacts.SNAPSHOT_TIME)
    if examples.get('delay_model'):
      delay = examples['delay_model'][0]
      summary['delay'] = {k: local.custom_property(delay, k)
                          for k in delay.mlmd_artifact.custom_properties}
  student = outputs('student')
  if student.get('model'):
    model_dir = path_utils.serving_model_path(student['model'][0].uri)
    # A student that failed (e.g. a warm start that matched nothing) wrote none.
    if tf.io.gfile.exists(os.path.join(model_dir, 'assets.extra', export.SUMMARY_FILE)):
      trained = export.read_summary(model_dir)
      if trained.get('hyperparameters'):
        summary['hyperparameters'] = trained['hyperparameters']
      if trained.get('warm_start_layers'):
        summary['warm_start'] = trained['warm_start_layers']
  served = outputs('ServedBaseline')
  if served:
    result = served[served_baseline.RESULT_KEY][0]
    keys = (served_baseline.BASELINE_VERSION, served_baseline.BACKFILL,
            served_baseline.ALREADY_SERVED, served_baseline.NEWEST_VERSION, 'reason')
    summary['served'] = {k: local.custom_property(result, k) for k in keys
                         if result.has_custom_property(k)}
  return summary


def text(summary: Dict) -> str:
  lines = [f'{"component":<28}{"state":<10}{"seconds":>8}']
  for e in summary['executions']:
    lines.append(f'{e["node"]:<28}{e["state"]:<10}{e["seconds"]:>8.1f}')
  total = sum(e['seconds'] for e in summary['executions'])
  lines.append(f'{"(sum)":<38}{total:>8.1f}')
  data = summary.get('dataset')
  if data:
    lines.append(f'dataset: {data["name"]} ({data["format"]}; delay windows '
                 f'{", ".join(data["windows"])})' +
                 ''.join(f'\n  {line}' for line in data['off']))
  if 'snapshot_time' in summary:
    lines.append(f'T: {summary["snapshot_time"]}')
  delay = summary.get('delay')
  if delay and data:
    scales = ', '.join(f'{w} {delay.get(f"scale_hours_{w}", float("nan")):.3g} h'
                       for w in data['windows'])
    lines.append(f'delay model: {delay.get("source")} on {delay.get("conversions", 0)} '
                 f'reported conversions (window scales {scales})')
  served = summary.get('served', {})
  if served.get('reason'):
    lines.append(f'baseline: {served["reason"]}')
  if served.get(served_baseline.ALREADY_SERVED):
    lines.append('skipped: this T is already served; nothing after ServedBaseline '
                 'ran (--force reruns it)')
  elif served.get(served_baseline.BACKFILL):
    lines.append('backfill: serving keeps the newer '
                 f'{served.get(served_baseline.NEWEST_VERSION)}; a push lands beside it')
  gate: Optional[Dict] = summary.get('gate')
  if gate:
    for name, values in gate.items():
      cand = values.get(evaluation.CANDIDATE)
      base = values.get(evaluation.BASELINE)
      line = f'PoissonLogLoss {name}: candidate {cand:.5f}'
      if base is not None:
        line += f', baseline {base:.5f} ({(cand - base) / base:+.2%})'
      lines.append(line)
  warm = summary.get('warm_start')
  if warm:
    lines.append(
        f'warm start: {warm["layers_matched"]} of {warm["layers_with_weights"]} layers '
        f'with weights matched' + (f' ({warm["path"]})' if warm['path'] else
                                   f': {warm.get("reason", "")}, trained from scratch')
        + (f'; kept their initialisation: {", ".join(warm["skipped"])}'
           if warm['skipped'] else ''))
  used = summary.get('hyperparameters')
  if used:
    values = ', '.join(f'{k}={v:g}' for k, v in sorted(used['values'].items()))
    where = {'sweep': f' from {used.get("record", "")}',
             'config': f' ({used["reason"]})' if used.get('reason') else ''}.get(
                 used['source'], '')
    lines.append(f'hyperparameters ({used["source"]}): {values}{where}')
  if 'blessed' in summary:
    lines.append(f'Evaluator blessed: {summary["blessed"]} (baseline: '
                 f'{summary.get("baseline_model") or "none, bootstrap"}; recorded, '
                 'loss_only)')
  if 'promotion' in summary:
    lines.extend(promotion_text(summary['promotion']))
  if 'pushed' in summary:
    where = summary.get('pushed_to', '')
    lines.append(f'pushed: {summary["pushed"]} ({summary["push_reason"]}) {where}')
  return '\n'.join(lines)


def has_baseline(cfg) -> bool:
  """Whether serving serves a model yet (a complete version to gate against)."""
  return push.newest(cfg.paths.serving_dir) is not None

