"""Serving a pushed version with its band and fallback (issue 17): what a
server runs per batch. It reads the package the Pusher wrote (push.py's layout)
and predicts with TFLite, so it lives beside the Pusher; the band itself is
models/fallback.py."""

from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from components.pusher import push
from components.quantizer import convert
from models import fallback


def read_package(version_dir: str) -> Tuple[bytes, Optional[bytes], Dict]:
  """(model, fallback model or None, metadata) of a pushed version."""
  model = push.read_file(version_dir)
  if model is None:
    raise FileNotFoundError(f'{version_dir} has no {push.MODEL_FILE}')
  return (model, push.read_file(version_dir, fallback.FALLBACK_MODEL_FILE),
          push.read_metadata(version_dir))


def predict_with_fallback(version_dir: str, rows: Mapping[str, np.ndarray]
                          ) -> Dict[str, np.ndarray]:
  """Serves a batch from a pushed version with its band and fallback.

  Runs the version's model and the fallback model it ships
  (fallback/model.tflite), computes each click's band from metadata.json's
  `band`, and serves the fallback's prediction where the candidate's fails.
  A version without a band (the bootstrap: it replaced nothing) serves its own
  predictions and fails none.

  Args:
    version_dir: a complete pushed version (<serving_dir>/<T>-<fingerprint>).
    rows: the serving features of a batch, column name -> [n] array.

  Returns:
    {'pconvs': served, 'candidate': the version's, 'fallback': the fallback's,
    'failed': bool, 'lower', 'upper'} per click.
  """
  model, fallback_model, meta = read_package(version_dir)
  cand = convert.predict(model, rows)
  if not meta.get(fallback.METADATA_BAND) or fallback_model is None:
    n = cand.size
    return {'pconvs': cand, 'candidate': cand, 'fallback': cand,
            'failed': np.zeros(n, bool), 'lower': np.zeros(n),
            'upper': np.full(n, np.inf)}
  band = fallback.Band.from_dict(meta[fallback.METADATA_BAND])
  ref = convert.predict(fallback_model, rows)
  lower, upper = band.bounds(ref, band.keys_of(rows, cand.size))
  bad = fallback.failed(cand, lower, upper)
  return {'pconvs': np.where(bad, ref, cand), 'candidate': cand, 'fallback': ref,
          'failed': bad, 'lower': lower, 'upper': upper}
