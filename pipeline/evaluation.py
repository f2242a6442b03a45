"""The Evaluator's TFMA EvalConfig, built from the typed config.

See docs/architecture.md §7.

Candidate: the quantized student; baseline: the served model (both TFLite).
Metrics: PoissonLogLoss (gating, in the configured label mode) plus the other
label modes the dataset supports beside it, each with its calibration, bias and
scored count; the SpendProxy (implied vs desired spend, in the gating label
mode: the promotion step's business area); the example count. Slices: overall
and the dataset's (tCPA bucket and browser observability when it has tCPA and an
observability segment, and its extra slice columns). TFMA's confidence intervals (gate.confidence_intervals, on by
default) give every figure and every candidate - baseline diff its CI.
"""

import tensorflow_model_analysis as tfma

from components.promotion import figures
import config as config_lib
from models import poisson_metric
from models import spend_metric
from observation import eval_labels
from schemas import columns

# The model spec names the promotion step reads the output by.
CANDIDATE, BASELINE = figures.CANDIDATE, figures.BASELINE
GATE_METRIC = poisson_metric.NAME
# The paper's key slice, tCPA > 250: gated here, reported by pipeline/report.py.
KEY_SLICE_NAME = columns.HIGH_TCPA_BUCKET
KEY_SLICE = tfma.SlicingSpec(feature_values={columns.TCPA_BUCKET: KEY_SLICE_NAME})


def metric_name(label_mode: str, gating_mode: str) -> str:
  return GATE_METRIC if label_mode == gating_mode else f'{GATE_METRIC}_{label_mode}'


def _metric(cfg: config_lib.Config, label_mode: str,
            thresholds=()) -> tfma.MetricConfig:
  return tfma.MetricConfig(
      class_name=poisson_metric.CLASS_NAME, module=poisson_metric.MODULE,
      config=poisson_metric.config_json(
          cfg.eval_label_spec(label_mode),
          metric_name(label_mode, cfg.eval.label_mode)),
      per_slice_thresholds=list(thresholds))


def gate_thresholds(cfg: config_lib.Config):
  """Value and change thresholds of the gating PoissonLogLoss.

  On the MetricConfig, not the MetricsSpec: TFMA keys MetricsSpec thresholds as
  in-graph metrics (example_weighted=None), which never match a metric computed
  post-export, and the gate would fail with 'Metric not found'.
  """
  g = cfg.gate
  out = [tfma.PerSliceMetricThreshold(
      slicing_specs=[tfma.SlicingSpec()],
      threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(upper_bound={'value': g.max_nll}),
          change_threshold=tfma.GenericChangeThreshold(
              direction=tfma.MetricDirection.LOWER_IS_BETTER,
              relative={'value': -g.min_relative_improvement})))]
  if g.key_slice_max_relative_change is not None and cfg.dataset.tcpa:
    out.append(tfma.PerSliceMetricThreshold(
        slicing_specs=[KEY_SLICE],
        threshold=tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER,
            relative={'value': g.key_slice_max_relative_change}))))
  return out


def reported_modes(cfg: config_lib.Config):
  """The label modes reported beside the gating one: every other mode the
  dataset supports (truth is synthetic only; panel needs a panel)."""
  return [m for m in eval_labels.MODES if m not in (cfg.eval.label_mode, 'truth')
          and (m != 'panel' or cfg.dataset.panel)]


def build_eval_config(cfg: config_lib.Config) -> tfma.EvalConfig:
  """The EvalConfig of the gate."""
  reported = reported_modes(cfg)
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(name=CANDIDATE, model_type=tfma.TF_LITE),
                   tfma.ModelSpec(name=BASELINE, model_type=tfma.TF_LITE,
                                  is_baseline=True)],
      slicing_specs=[tfma.SlicingSpec()] + [
          tfma.SlicingSpec(feature_keys=[c]) for c in cfg.dataset.slice_columns()],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name='ExampleCount'),
          _metric(cfg, cfg.eval.label_mode, gate_thresholds(cfg)),
          *(_metric(cfg, m) for m in reported),
          tfma.MetricConfig(class_name=spend_metric.CLASS_NAME,
                            module=spend_metric.MODULE,
                            config=spend_metric.config_json(cfg.eval_label_spec(),
                                                            cfg.dataset.tcpa))])],
      options=tfma.Options(compute_confidence_intervals={
          'value': cfg.gate.confidence_intervals}))
