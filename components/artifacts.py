"""Custom artifact types (namespaced, as Vertex requires)."""

from tfx import types


class GateResult(types.Artifact):
  """The record that a gate passed (custom properties say what was checked)."""
  TYPE_NAME = 'kdconv.GateResult'


class QuantizationReport(types.Artifact):
  """Sizes, errors, NLL and latency of a quantization (report.json)."""
  TYPE_NAME = 'kdconv.QuantizationReport'
