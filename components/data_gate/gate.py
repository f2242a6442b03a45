"""Turns TFDV anomalies into a pass / fail decision with a readable reason."""

from typing import Dict, List

from tensorflow_metadata.proto.v0 import anomalies_pb2


class DataAnomaliesError(RuntimeError):
  """The data has anomalies; the message names each one."""


def describe(anomalies: anomalies_pb2.Anomalies) -> List[str]:
  """One line per anomaly: feature (or dataset), short and long description."""
  lines = []
  for feature, info in sorted(anomalies.anomaly_info.items()):
    reasons = '; '.join(f'{r.short_description}: {r.description}'
                        for r in info.reason) or info.description
    lines.append(f'{feature}: {reasons}')
  if anomalies.HasField('dataset_anomaly_info'):
    info = anomalies.dataset_anomaly_info
    reasons = '; '.join(r.description for r in info.reason) or info.description
    lines.append(f'(dataset): {reasons}')
  for skew in anomalies.drift_skew_info:
    for result in list(skew.drift_measurements) + list(skew.skew_measurements):
      if result.value > result.threshold:
        lines.append(f'{skew.path}: drift/skew {result.value:.4g} above '
                     f'{result.threshold:.4g}')
  return lines


def check(by_split: Dict[str, anomalies_pb2.Anomalies]) -> Dict[str, int]:
  """Anomaly counts per split.

  Raises:
    DataAnomaliesError: any split has an anomaly; names them all.
  """
  found = {split: describe(a) for split, a in sorted(by_split.items())}
  if any(found.values()):
    parts = [f'split {split!r}: ' + ' | '.join(lines)
             for split, lines in found.items() if lines]
    raise DataAnomaliesError('DataGate: the examples violate the schema, stopping '
                             'before Transform. ' + ' || '.join(parts))
  return {split: 0 for split in found}
