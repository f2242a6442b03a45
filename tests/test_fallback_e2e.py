"""End-to-end: the band and the failed fraction on the fixture's nights
(conftest.e2e), and the pushed package's serving helper."""

import json
import os

import numpy as np
import pytest

from components.pusher import push
from components.pusher import serving
from models import fallback
from pipeline import local
from schemas import columns
from schemas import records

pytestmark = pytest.mark.e2e


def test_the_kd_night_records_its_band_and_failed_fractions(e2e):
  promotion = e2e.artifact('Promotion', 'blessing', 'kd')
  with open(os.path.join(promotion.uri, 'promotion.json')) as f:
    fb = json.load(f)['fallback']
  band = fb['band']
  assert band['rule'] == 'reference_quantile' and band['target'] == 'truth'
  # A band per browser around the fallback (the fixture's bootstrap, a
  # production model trained 10 steps: the multipliers are its errors against
  # the truth, whatever they are; tests/test_fallback.py checks the fit).
  assert len(band['log_lower']) == len(e2e.cfg.observability.fractions())
  assert all(lo < hi for lo, hi in zip(band['log_lower'], band['log_upper'])), band
  failed, coverage = fb['failed'], fb['coverage']
  for group in (columns.BROWSER_OBSERVABILITY, columns.TCPA_BUCKET, fallback.AGE):
    assert failed[group], group
  # The eval split (E days) is newer than T - lag (E + 16 h): every click is
  # after the cutoff.
  assert set(failed[fallback.AGE]) == {fallback.AFTER_CUTOFF}
  # ~6,000 eval clicks, half scored: 3 binomial SEs at 0.9 plus the slack.
  n = coverage['overall']['clicks']
  assert abs(coverage['overall']['mean'] - 0.9) < 3 * np.sqrt(0.09 / n) + 0.01
  assert fb['within_cap'] and prop(promotion, 'fallback_within_cap') == 1
  assert 'fallback: failed ' in e2e.summaries['kd']
  print(json.dumps({'failed': failed, 'coverage': coverage['overall']}, indent=1))


def prop(artifact, name):
  return local.custom_property(artifact, name)


def test_the_pushed_kd_version_serves_with_its_band_and_fallback(e2e):
  pushed = e2e.artifact('Pusher', 'pushed_model', 'kd')
  version = local.custom_property(pushed, 'pushed_destination')
  with open(os.path.join(version, push.METADATA_FILE)) as f:
    meta = json.load(f)
  boot = local.custom_property(e2e.artifact('Pusher', 'pushed_model', 'bootstrap'),
                               'pushed_version')
  assert meta[fallback.METADATA_FALLBACK_VERSION] == boot
  assert meta[fallback.METADATA_BAND]['rule'] == 'reference_quantile'
  # The bootstrap replaced nothing: no band.
  with open(os.path.join(push.version_path(e2e.cfg.paths.serving_dir, boot),
                         push.METADATA_FILE)) as f:
    assert json.load(f)[fallback.METADATA_BAND] is None
  examples = e2e.artifact('BulkInferrer', 'output_examples', 'kd')
  rows = records.read_examples(os.path.join(examples.uri, 'Split-eval'))
  out = serving.predict_with_fallback(version, rows)
  assert np.array_equal(out['pconvs'], np.where(out['failed'], out['fallback'],
                                                out['candidate']))
  # The same band the Promotion step scored: the same failures on its clicks.
  test = ~fallback.calibration_mask(rows[columns.CLICK_ID])
  promotion = e2e.artifact('Promotion', 'blessing', 'kd')
  with open(os.path.join(promotion.uri, 'promotion.json')) as f:
    want = json.load(f)['fallback']['failed']['overall']['mean']
  assert out['failed'][test].mean() == pytest.approx(want, abs=1e-9)
