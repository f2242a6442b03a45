"""Promotion executor: the three areas from paired per-click comparisons of the
candidate and the baseline on the eval split, the configured rule, and a
ModelBlessing the Pusher follows.

Both TFLite models score every eval click; the loss, the bias and the spend
log-error are compared click by click in the gating label mode
(components/promotion/paired.py: closed-form intervals, so the same night gives
the same decision), the fallback band is fitted and scored on the same
predictions, and the two models are timed interleaved only when their graphs
differ (latency is otherwise not applicable). The Evaluator's `evaluation`
(TFMA's per-slice metrics with jackknife intervals) is recorded for the report
and its `blessing` is the `loss_only` rule. The decision is a ModelBlessing
(`blessed`, the areas, one line of why, and the headline figures as custom
properties; everything in promotion.json beside the BLESSED / NOT_BLESSED
marker the Evaluator writes too).
"""

import json
import math
import os
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
from absl import logging
from tfx.components.evaluator import constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.promotion import figures as figures_lib
from components.promotion import latency as latency_lib
from components.promotion import paired
from components.promotion import rule as rule_lib
from components.quantizer import convert
from components.served_baseline import executor as served_baseline
from config import PromotionConfig
from models import export
from models import fallback as fallback_lib
from models import poisson_metric
from models import spend_metric
from observation import eval_labels
from schemas import columns
from schemas import records

EVALUATION_KEY = 'evaluation'
EVALUATOR_BLESSING_KEY = 'evaluator_blessing'
MODEL_KEY = 'model'
BASELINE_KEY = 'baseline_model'
EXAMPLES_KEY = 'examples'
BLESSING_KEY = 'blessing'
# PromotionConfig JSON.
CONFIG_KEY = 'config'
# EvalLabelSpec JSON (the gating label mode) and the dataset's tCPA column.
EVAL_LABEL_KEY = 'eval_label'
TCPA_KEY = 'tcpa'
# gate.max_nll: every rule needs the candidate's overall loss below it.
MAX_NLL_KEY = 'max_nll'
# config.Config.fallback_parameter() JSON: the fallback section, the resolved
# band target, the browsers and the teacher's lag ('' or absent: no band).
FALLBACK_KEY = 'fallback'
RESULT_FILE = 'promotion.json'
EVAL_SPLIT = 'eval'
# Distinct eval examples the latency comparison cycles through.
LATENCY_EXAMPLES = 4096

# The metric names pipeline/evaluation.py configures (the gating label mode's
# PoissonLogLoss carries the bare name).
LOSS = poisson_metric.NAME
BIAS = f'{LOSS}_abs_log_bias'
CALIBRATION = f'{LOSS}_calibration'
SPEND_ERROR = f'{spend_metric.NAME}_log_error'
SPEND_RATIO = f'{spend_metric.NAME}_ratio'
# The paper's key slice, tCPA > 250, as figures.slice_name names it.
KEY_SLICE = f'{columns.TCPA_BUCKET}={columns.HIGH_TCPA_BUCKET}'


def _tflite(model_uri: str) -> bytes:
  with tf.io.gfile.GFile(served_baseline.tflite_path(model_uri), 'rb') as f:
    return f.read()


def _prop(artifact, name: str, default=None):
  """A custom property of a TFX Artifact (any type), or `default`."""
  value = artifact.get_custom_property(name)
  return default if value is None else value


def _figure(figs: Dict, slice_name: str, metric: str, role: str
            ) -> Optional[rule_lib.Estimate]:
  return figs.get(slice_name, {}).get(metric, {}).get(role)


def eval_rows(examples) -> Dict[str, np.ndarray]:
  """Every example of the eval split (both models score each one)."""
  return records.read_examples(
      os.path.join(artifact_utils.get_split_uri([examples], EVAL_SPLIT), '*'))


def paired_figures(rows: Dict[str, np.ndarray], candidate: np.ndarray,
                   baseline: np.ndarray, label: eval_labels.EvalLabelSpec,
                   tcpa: str = '') -> Dict[str, Any]:
  """The paired comparisons the areas are judged on (components/promotion/
  paired.py): loss, bias and spend log-error, overall and per tCPA bucket."""
  y, scale, keep = label.label_and_scale(rows)
  weight = np.asarray(rows[tcpa], np.float64).reshape(-1) if tcpa else None
  buckets = (np.asarray(rows[columns.TCPA_BUCKET]).reshape(-1)
             if tcpa and columns.TCPA_BUCKET in rows else None)
  night = paired.Night.of(y, scale, keep, candidate, baseline, weight, buckets)
  out = paired.figures(night, columns.TCPA_BUCKETS)
  out['buckets'] = {f'{columns.TCPA_BUCKET}={name}': b
                    for name, b in out['buckets'].items()}
  out['label_mode'] = label.mode
  return out


def areas_from(pair: Dict[str, Any], latency: Optional[Dict], same_graph: bool,
               cfg: PromotionConfig) -> Dict[str, rule_lib.Area]:
  """The three areas from the paired comparisons and the latency comparison."""
  if same_graph:
    speed = rule_lib.not_applicable(
        "the candidate's TFLite graph is the baseline's (architecture and "
        'quantization): latency differs only by noise')
  else:
    speed = rule_lib.latency_area(latency_lib.diffs(latency) if latency else {},
                                  cfg.latency_tolerance)
  return rule_lib.areas(pair, speed, cfg.slice_guard, cfg.min_guard_conversions)


def paired_json(pair: Dict[str, Any]) -> Dict[str, Any]:
  loss = pair['loss']
  return {
      'clicks': pair['clicks'], 'label_mode': pair['label_mode'],
      'loss': {'diff': loss.diff.to_dict(), 'relative': loss.relative.to_dict(),
               'candidate': loss.candidate, 'baseline': loss.baseline,
               'resolvable': loss.resolvable},
      **{k: {n: e.to_dict() for n, e in pair[k].items()} for k in ('bias', 'spend')},
      'buckets': {s: {n: e if isinstance(e, float) else e.to_dict()
                      for n, e in b.items()}
                  for s, b in pair['buckets'].items()},
  }


def headline(pair: Optional[Dict[str, Any]], latency: Optional[Dict]
             ) -> Dict[str, float]:
  """The figures recorded as custom properties (promotion.json has them all)."""
  out: Dict[str, float] = {}
  if pair:
    loss = pair['loss']
    out.update({'eval_clicks': pair['clicks'], 'loss_candidate': loss.candidate,
                'loss_baseline': loss.baseline, 'loss_resolvable': loss.resolvable})
    for name, est in (('loss_diff', loss.diff), ('loss_rel_diff', loss.relative),
                      ('bias_diff', pair['bias']['diff']),
                      ('spend_log_error_diff', pair['spend']['diff'])):
      out.update({name: est.value, f'{name}_lower': est.lower,
                  f'{name}_upper': est.upper})
    for role in ('candidate', 'baseline'):
      out[f'calibration_{role}'] = pair['bias'][f'{role}_ratio'].value
      out[f'spend_ratio_{role}'] = pair['spend'][f'{role}_ratio'].value
      if KEY_SLICE in pair['buckets']:
        out[f'key_spend_ratio_{role}'] = pair['buckets'][KEY_SLICE][
            f'{role}_ratio'].value
  for batch, comparison in (latency or {}).items():
    for model in ('candidate', 'baseline'):
      for p in ('p50', 'p99'):
        out[f'latency_{batch}_{model}_{p}_us'] = comparison[model][p + '_us'].value
    for p in ('p50', 'p99'):
      est = comparison['diff'][p]
      out[f'latency_{batch}_{p}_rel_diff'] = est.value
      out[f'latency_{batch}_{p}_rel_diff_lower'] = est.lower
      out[f'latency_{batch}_{p}_rel_diff_upper'] = est.upper
  return out


def fallback_figures(params: Dict, rows: Dict[str, np.ndarray],
                     candidate: np.ndarray, reference: np.ndarray, baseline
                     ) -> Dict[str, Any]:
  """The band around the baseline (the fallback) and the candidate's failed
  fraction on the eval split (models/fallback.py), and whether it is within
  the cap."""
  if params['target'] == 'truth' and columns.TRUE_CONVERSIONS not in rows:
    raise ValueError('fallback.target truth needs the true rates in the eval '
                     'split (synthetic data); use fallback.target candidate')
  band, report = fallback_lib.evaluate(
      candidate, reference, rows, params['level'], params['n_keys'],
      target=params['target'], min_clicks=params['min_slice_clicks'],
      rule=params['rule'], lag_seconds=params['teacher_lag_seconds'],
      key=params.get('key_column', ''), slices=params.get('slices', ()))
  failed = report['failed']['overall']['mean']
  cap = params['max_failed_fraction']
  return {'band': band.to_dict(), **report, 'max_failed_fraction': cap,
          'failed_fraction': failed, 'within_cap': bool(failed <= cap),
          'fallback_version': _prop(baseline, 'served_version', '') or '',
          'coverage_overall': (report['coverage']['overall']['mean']
                               if 'coverage' in report else None)}


def finite(values: Dict[str, float]) -> Dict[str, float]:
  """The finite ones: ML Metadata's SQLite store rejects NaN (a slice without
  conversions has no spend ratio); promotion.json keeps them all."""
  return {k: float(v) for k, v in values.items() if math.isfinite(v)}


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    cfg = PromotionConfig.from_json(exec_properties[CONFIG_KEY])
    max_nll = float(exec_properties[MAX_NLL_KEY])
    fallback_params = json.loads(exec_properties.get(FALLBACK_KEY) or 'null')
    if fallback_params and fallback_params.get('rule') == 'none':
      fallback_params = None
    evaluation = artifact_utils.get_single_instance(input_dict[EVALUATION_KEY])
    evaluator_blessing = artifact_utils.get_single_instance(
        input_dict[EVALUATOR_BLESSING_KEY])
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    baselines = input_dict.get(BASELINE_KEY) or []
    baseline = baselines[0] if baselines else None
    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])

    evaluator_blessed = bool(_prop(evaluator_blessing,
                                   constants.ARTIFACT_PROPERTY_BLESSED_KEY, 0))
    label_json = exec_properties.get(EVAL_LABEL_KEY) or ''
    tcpa = exec_properties.get(TCPA_KEY) or ''
    # The Evaluator's TFMA figures (jackknife intervals) are recorded for the
    # report; the decision is judged on the paired per-click comparisons.
    figs = figures_lib.load(evaluation.uri)
    loss = _figure(figs, figures_lib.OVERALL, LOSS, 'candidate')
    value_ok = loss is not None and math.isfinite(loss.value) and loss.value < max_nll

    candidate_fp = export.student_recipe_fingerprint(model.uri)
    result: Dict[str, Any] = {'rule': cfg.rule, 'evaluator_blessed': evaluator_blessed,
                              'value_ok': value_ok, 'max_nll': max_nll,
                              'candidate_recipe': candidate_fp}
    latency = pair = None
    within_cap = True
    if baseline is None:
      # The bootstrap: nothing to compare with; the Evaluator's value threshold
      # decides, as before (ServedBaseline fails any other run without one).
      areas = {n: rule_lib.Area(None, 'no baseline (bootstrap)') for n in rule_lib.AREAS}
      applied = 'bootstrap'
      decisions = {r: evaluator_blessed for r in rule_lib.RULES}
      blessed = evaluator_blessed
      reason = ('bootstrap: no baseline; the Evaluator\'s value threshold decides '
                f'({"blessed" if blessed else "not blessed"})')
      same_recipe = False
    else:
      baseline_fp = _prop(baseline, served_baseline.RECIPE_FINGERPRINT, '') or ''
      # A baseline without a fingerprint (pushed before it was recorded) counts as
      # another recipe: the stricter rule.
      same_recipe = bool(candidate_fp) and candidate_fp == baseline_fp
      result['baseline_recipe'] = baseline_fp
      rows = eval_rows(examples)
      candidate_model, baseline_model = _tflite(model.uri), _tflite(baseline.uri)
      candidate = convert.predict(candidate_model, rows)
      reference = convert.predict(baseline_model, rows)
      label = eval_labels.EvalLabelSpec.from_json(label_json)
      pair = paired_figures(rows, candidate, reference, label, tcpa)
      same_graph = (convert.graph_signature(candidate_model) ==
                    convert.graph_signature(baseline_model))
      if not same_graph:
        # The first LATENCY_EXAMPLES eval examples: enough distinct inputs.
        latency = latency_lib.compare(
            candidate_model, baseline_model,
            {k: v[:LATENCY_EXAMPLES] for k, v in rows.items()}, cfg.latency_samples,
            batches=(1, cfg.serving_batch), replicates=cfg.bootstrap_replicates)
      areas = areas_from(pair, latency, same_graph, cfg)
      applied = rule_lib.applied_rule(cfg.rule, same_recipe)
      if fallback_params:
        fallback = fallback_figures(fallback_params, rows, candidate, reference,
                                    baseline)
        result['fallback'] = fallback
        # Over the cap the fallback would serve too many clicks: no rule
        # promotes, whatever the loss.
        within_cap = fallback['within_cap']
      decisions = rule_lib.decide_all(areas, evaluator_blessed, value_ok, within_cap)
      blessed = decisions[applied]
      reason = (rule_lib.explain(applied, blessed, areas, value_ok, within_cap) +
                f' ({cfg.rule}; '
                f'{"same recipe" if same_recipe else "recipe or architecture changed"})'
                f'; {pair["clicks"]:,} eval clicks resolve loss differences of '
                f'{pair["loss"].resolvable:.1%}')
      if 'fallback' in result:
        reason += (f'; failed fraction {result["fallback"]["failed_fraction"]:.3f} '
                   f'{"within" if within_cap else "above"} '
                   f'{result["fallback"]["max_failed_fraction"]}')
      result['same_graph'] = same_graph
      result['paired'] = paired_json(pair)
    logging.info('Promotion: %s', reason)
    for name, area in areas.items():
      logging.info('Promotion: area %s: %s (%s)', name, area.improved, area.reason)

    result.update({
        # What `auto` stands for on this night (recorded whatever the rule).
        'auto_rule': (rule_lib.applied_rule('auto', same_recipe)
                      if baseline is not None else 'bootstrap'),
        'rule_applied': applied, 'same_recipe': same_recipe, 'blessed': blessed,
        'reason': reason, 'decisions': decisions,
        'areas': {n: a.to_dict() for n, a in areas.items()},
        'figures': figures_lib.to_json(figs),
        'latency': latency_lib.to_json(latency) if latency else None,
        'latency_samples': cfg.latency_samples if latency else 0,
        'baseline_model': baseline.uri if baseline else None,
    })
    io_utils.write_string_file(os.path.join(blessing.uri, RESULT_FILE),
                               json.dumps(result, indent=1, sort_keys=True))
    marker = constants.BLESSED_FILE_NAME if blessed else constants.NOT_BLESSED_FILE_NAME
    io_utils.write_string_file(os.path.join(blessing.uri, marker), '')

    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                     int(blessed))
    blessing.set_string_custom_property(
        constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
    blessing.set_int_custom_property(
        constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
    if baseline is not None:
      blessing.set_string_custom_property(
          constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline.uri)
      blessing.set_int_custom_property(
          constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline.id)
    blessing.set_string_custom_property('rule', cfg.rule)
    blessing.set_string_custom_property('rule_applied', applied)
    blessing.set_int_custom_property('same_recipe', int(same_recipe))
    blessing.set_string_custom_property('auto_rule', result['auto_rule'])
    blessing.set_int_custom_property('evaluator_blessed', int(evaluator_blessed))
    blessing.set_string_custom_property('reason', reason)
    for name, area in areas.items():
      # 1 improved, 0 not, -1 not judged (no baseline).
      blessing.set_int_custom_property(
          f'area_{name}', -1 if area.improved is None else int(area.improved))
      blessing.set_string_custom_property(f'area_{name}_reason', area.reason)
    for name, decided in decisions.items():
      blessing.set_int_custom_property(f'decision_{name}', int(decided))
    for name, value in finite(headline(pair, latency)).items():
      blessing.set_float_custom_property(name, value)
    fallback = result.get('fallback')
    if fallback:
      blessing.set_int_custom_property('fallback_within_cap', int(fallback['within_cap']))
      blessing.set_string_custom_property('fallback_version',
                                          fallback['fallback_version'])
      blessing.set_string_custom_property('fallback_band', json.dumps(fallback['band']))
      figures = {'fallback_failed_fraction': fallback['failed_fraction'],
                 'fallback_max_failed_fraction': fallback['max_failed_fraction']}
      for name, groups in (('failed', fallback['failed']),
                           ('coverage', fallback.get('coverage') or {})):
        for value, cell in groups.get(columns.BROWSER_OBSERVABILITY, {}).items():
          figures[f'fallback_{name}_{columns.BROWSER_OBSERVABILITY}_{value}'] = (
              cell['mean'])
        if 'overall' in groups:
          figures[f'fallback_{name}_overall'] = groups['overall']['mean']
      for name, value in finite(figures).items():
        blessing.set_float_custom_property(name, value)
