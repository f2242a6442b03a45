"""Custom artifact types (namespaced, as Vertex requires)."""

from tfx import types


class GateResult(types.Artifact):
  """The record that a gate passed (custom properties say what was checked)."""
  TYPE_NAME = 'kdconv.GateResult'


class QuantizationReport(types.Artifact):
  """Sizes, errors, NLL and latency of a quantization (report.json)."""
  TYPE_NAME = 'kdconv.QuantizationReport'


class DelayModel(types.Artifact):
  """The delay distribution every exposure of a night used (delay_fit.json: per
  delay segment the window shares and scales, fitted on the logs or the prior)."""
  TYPE_NAME = 'kdconv.DelayModel'


# Custom properties the ConversionLogExampleGen writes on its Examples and other
# nodes (the Pusher, the run summary) read back.
SNAPSHOT_TIME = 'snapshot_time'  # T, ISO 8601
SNAPSHOT_TS = 'snapshot_ts'  # T, epoch seconds
WINDOW_START = 'window_start'  # T - W
EVAL_START = 'eval_start'  # T - E


class SweepResult(types.Artifact):
  """A sweep's recorded best hyperparameters (custom properties: fingerprint,
  values, the record's path in the sweeps directory)."""
  TYPE_NAME = 'kdconv.SweepResult'
