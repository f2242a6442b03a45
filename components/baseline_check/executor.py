"""BaselineCheck executor.

With no baseline, TFX's Evaluator drops change thresholds and blesses on value
thresholds alone: a distilled model would be pushed without ever being compared
with production. So a run that resolves no blessed model stops here, before
training, unless it is the explicit bootstrap run.
"""

from typing import Any, Dict, List

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

BASELINE_KEY = 'baseline'
RESULT_KEY = 'result'
# 1 for the explicit bootstrap run (no baseline needed).
BOOTSTRAP_KEY = 'bootstrap'


class BaselineMissingError(RuntimeError):
  pass


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    baselines = input_dict.get(BASELINE_KEY) or []
    bootstrap = bool(exec_properties.get(BOOTSTRAP_KEY))
    result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
    if not baselines and not bootstrap:
      raise BaselineMissingError(
          'no blessed baseline model in this pipeline yet: bootstrap first (make '
          'bootstrap, or python -m pipeline.cli run --bootstrap) to push the '
          'production recipe through the same quantize / evaluate / push path; '
          'without a baseline the Evaluator would bless any model')
    if baselines:
      logging.info('BaselineCheck: baseline %s', baselines[0].uri)
      result.set_string_custom_property('baseline_model', baselines[0].uri)
      result.set_int_custom_property('baseline_model_id', baselines[0].id)
    else:
      logging.info('BaselineCheck: bootstrap run, no baseline yet')
    result.set_int_custom_property('bootstrap', int(bootstrap))
    result.set_int_custom_property('passed', 1)
