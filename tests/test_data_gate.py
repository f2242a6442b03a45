"""DataGate decisions on real TFDV anomalies."""

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.data_gate import gate


def anomaly(feature, short, long):
  a = anomalies_pb2.Anomalies()
  info = a.anomaly_info[feature]
  r = info.reason.add()
  r.short_description, r.description = short, long
  return a


def test_no_anomalies_passes():
  assert gate.check({'train': anomalies_pb2.Anomalies(),
                     'eval': anomalies_pb2.Anomalies()}) == {'eval': 0, 'train': 0}


def test_anomalies_are_named_with_their_split():
  with pytest.raises(gate.DataAnomaliesError) as e:
    gate.check({'train': anomaly('price', 'Out-of-range values',
                                 'Unexpectedly low value: -3 < 0'),
                'eval': anomalies_pb2.Anomalies()})
  msg = str(e.value)
  assert "split 'train'" in msg and 'price: Out-of-range values' in msg
  assert '-3 < 0' in msg and "'eval'" not in msg
