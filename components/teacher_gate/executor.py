"""TeacherGate executor: scores the teacher on the eval split, passes or stops.

Its record is a GateResult, not a ModelBlessing: on Vertex a blessing-based
resolver queries every ModelBlessing by type, so a teacher's blessing could be
taken for a served student's (docs/architecture.md §7). The BulkInferrer runs
only after this gate passed (the gate is its upstream node).
"""

import json
from typing import Any, Dict, List, Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components.teacher_gate import gate
from config import TeacherGateConfig
from models import export
from schemas import codec
from schemas import columns
from schemas import records

MODEL_KEY = 'model'
EXAMPLES_KEY = 'examples'
RESULT_KEY = 'result'
# JSON of config.TeacherGateConfig.
BAR_KEY = 'bar'
# JSON list of the dataset's delay window names; its panel column ('' : none).
WINDOWS_KEY = 'window_names'
PANEL_KEY = 'panel'
EVAL_SPLIT = 'eval'


def score(model_dir: str, patterns: List[str], window_names: Sequence[str],
          batch_size: int = 4096):
  """The teacher's window rates and the eval columns, over every eval example."""
  model = tf.saved_model.load(model_dir)
  serve = model.signatures[export.SERVING_SIGNATURE]
  rates, cols = [], []
  names = export.rate_outputs(window_names)
  for batch in records.iter_batches(records.list_files(patterns), batch_size):
    out = serve(examples=tf.constant(batch))
    rates.append(np.stack([out[k].numpy() for k in names], 1))
    cols.append(codec.decode(list(batch)))
  merged = {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
  return np.concatenate(rates).astype(np.float64), merged


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    bar = TeacherGateConfig.from_json(exec_properties[BAR_KEY])
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    model_dir = path_utils.serving_model_path(model.uri)
    summary = export.read_summary(model_dir)
    w = json.loads(exec_properties[WINDOWS_KEY])
    panel = exec_properties.get(PANEL_KEY) or ''

    rates, cols = score(model_dir, [
        artifact_utils.get_split_uri([examples], EVAL_SPLIT) + '/*'], w)
    # The rate truth (true_observability_<w> is not needed here).
    has_truth = all(c in cols
                    for c in columns.true_rates(w) + (columns.TRUE_CONVERSIONS,))
    mode = bar.mode if bar.mode != 'auto' else ('truth' if has_truth else 'observed')
    if mode == 'truth':
      if not has_truth:
        raise ValueError('teacher gate mode "truth" needs the truth columns, which '
                         'the eval examples lack (real logs: use "observed")')
      true_rates = np.stack([cols[c] for c in columns.true_rates(w)],
                            1).astype(np.float64)
      metrics = gate.truth_metrics(cols[columns.TRUE_CONVERSIONS], rates.sum(1),
                                   true_rates.sum(1))
      # calibration_<window> and calibration_total become properties below.
      metrics.update(gate.truth_calibration(rates, true_rates, w))
    else:
      counts = np.stack([cols[c] for c in columns.labels(w)], 1)
      offsets = np.stack([cols[c] for c in columns.observed_exposures(w)], 1)
      metrics = gate.observed_metrics(counts, offsets, rates)
      if panel and panel in cols:
        exposures = np.stack([cols[c] for c in columns.exposures(w)], 1)
        metrics.update(gate.panel_calibration(counts, exposures, rates, cols[panel],
                                              w))
    # The label noise the calibration tolerance admits (teacher's summary).
    trained = summary.get('reported_conversions_trained_on', {})
    metrics.update({gate.conversions_key(w): float(n) for w, n in trained.items()})
    verdict = gate.decide(mode, metrics, bar, w)  # raises on failure
    logging.info('TeacherGate: %s', verdict)

    result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
    result.set_int_custom_property('passed', 1)
    result.set_string_custom_property('mode', mode)
    result.set_string_custom_property('verdict', verdict)
    # Observed mode without a panel has nothing to calibrate against: say so
    # rather than omit it.
    result.set_int_custom_property('calibration_checked',
                                   int(gate.calibration_checked(mode, bar, metrics,
                                                                w)))
    result.set_float_custom_property('calibration_band', bar.calibration_band)
    result.set_int_custom_property('eval_examples', len(rates))
    for key, value in metrics.items():
      if not np.isnan(value):  # nan: not measured (e.g. no panel conversion)
        result.set_float_custom_property(key, float(value))
    # The teacher's lag cutoff and training set size, visible in ML Metadata.
    result.set_string_custom_property('cutoff_time', summary['cutoff_time'])
    result.set_int_custom_property('examples_trained_on',
                                   summary['examples_trained_on'])
    result.set_string_custom_property('teacher_model', model.uri)
