"""The band, its coverage of the true rate, the failed fraction and the serving
helper (models/fallback.py)."""

import datetime
import json
import math
import os

import numpy as np
import pytest

import config as config_lib
from components.pusher import push
from components.pusher import serving
from models import fallback
from observation import labels
from schemas import columns
from tests import test_promotion
from world import synthetic

F_B = np.array([1.0, 0.9, 0.3, 0.6, 0.2])  # the default browsers' f_b
SPEC = config_lib.load_config(None, []).label_spec()


def world(n=40_000, seed=0):
  """Clicks whose production prediction under-predicts by f_b (the recipe's known
  bias) with noise, and a KD candidate close to the truth."""
  rng = np.random.default_rng(seed)
  browser = rng.integers(0, len(F_B), n)
  truth = rng.lognormal(np.log(0.05), 0.8, n)
  production = truth * F_B[browser] * np.exp(rng.normal(0.0, 0.4, n))
  candidate = truth * np.exp(rng.normal(0.0, 0.1, n))
  rows = {columns.CLICK_ID: np.arange(n), synthetic.BROWSER: browser,
          columns.BROWSER_OBSERVABILITY: labels.observability_bucket(F_B[browser], SPEC),
          columns.TCPA_BUCKET: labels.tcpa_bucket(rng.lognormal(4.2, 1.2, n))}
  # The truth split over the windows as the examples carry it.
  for c, share in zip(synthetic.TRUE_RATES, (0.55, 0.25, 0.2)):
    rows[c] = truth * share
  return rows, truth, production, candidate


# The band keyed by browser, reported by the world's slices.
KEYED = dict(key=synthetic.BROWSER, slices=(columns.BROWSER_OBSERVABILITY,
                                            columns.TCPA_BUCKET))


def tolerance(level, n_scored, n_calibrated):
  """Three binomial SEs of the scored share, plus the conformal quantile's
  finite-sample slack (coverage is in [level, level + 2 / (n + 1)])."""
  return 3 * math.sqrt(level * (1 - level) / n_scored) + 2 / (n_calibrated + 1)


@pytest.mark.parametrize('level', [0.8, 0.9])
def test_the_band_covers_the_true_rate_at_its_level_in_every_slice(level):
  rows, _, production, candidate = world()
  band, report = fallback.evaluate(candidate, production, rows, level, len(F_B),
                                   **KEYED)
  assert band.target == 'truth' and band.rule == 'reference_quantile'
  # Keyed by the browser, what serving reads the multipliers by.
  assert band.key == synthetic.BROWSER and len(band.log_lower) == len(F_B)
  np.testing.assert_array_equal(band.keys_of(rows, len(candidate)),
                                rows[synthetic.BROWSER])
  cover = report['coverage']
  assert abs(cover['overall']['mean'] - level) <= tolerance(
      level, cover['overall']['clicks'], report['calibration_clicks'])
  for group in (columns.BROWSER_OBSERVABILITY, synthetic.BROWSER):
    for name, cell in cover[group].items():
      assert abs(cell['mean'] - level) <= tolerance(
          level, cell['clicks'], min(band.calibration_clicks)), (group, name, cell)


def test_the_observability_correction_is_not_flagged():
  rows, truth, production, candidate = world()
  _, report = fallback.evaluate(candidate, production, rows, 0.9, len(F_B), **KEYED)
  failed = report['failed'][columns.BROWSER_OBSERVABILITY]
  # A candidate at the truth fails about as often on low- as on full-observability
  # browsers, although it predicts 1/f_b = 3-5x production there.
  assert failed['low']['mean'] < 0.15 and failed['full']['mean'] < 0.15, failed
  assert abs(failed['low']['mean'] - failed['full']['mean']) < 0.05, failed
  # A naive band around production (its error where every conversion is
  # observed, applied to every browser) flags the correction.
  full = rows[columns.BROWSER_OBSERVABILITY] == 'full'
  naive = fallback.fit(production[full], truth[full], np.zeros(full.sum()), 0.9, 1)
  lower, upper = naive.bounds(production, np.zeros(len(truth)))
  bad = fallback.failed(candidate, lower, upper)
  low = rows[columns.BROWSER_OBSERVABILITY] == 'low'
  assert bad[low].mean() > 0.5 > 0.15 > bad[full].mean()


def test_a_candidate_that_drops_the_correction_fails():
  rows, _, production, _ = world()
  # Production itself as the candidate: inside the band where f_b = 1, below it
  # where the truth is 3-5x higher.
  _, report = fallback.evaluate(production, production, rows, 0.9, len(F_B), **KEYED)
  failed = report['failed'][columns.BROWSER_OBSERVABILITY]
  assert failed['full']['mean'] < 0.1 < 0.5 < failed['low']['mean'], failed


def test_conformal_bounds_and_small_slices():
  lo, hi = fallback.conformal_bounds(np.arange(1, 100), 0.9)
  assert (lo, hi) == (5.0, 95.0)
  # Too few clicks for the order statistic: the calibration range.
  assert fallback.conformal_bounds([1.0, 2.0, 3.0], 0.9) == (1.0, 3.0)
  # A browser below min_clicks takes the pooled multipliers; unknown ids the widest.
  keys = np.array([0] * 200 + [1] * 3)
  scores = np.concatenate([np.linspace(-1, 1, 200), [5.0, 5.0, 5.0]])
  band = fallback.fit(np.ones(203), np.exp(scores), keys, 0.9, 2, min_clicks=50)
  pooled = fallback.conformal_bounds(scores, 0.9)
  assert (band.log_lower[1], band.log_upper[1]) == pooled
  lower, upper = band.bounds([1.0, 1.0], [7, -1])
  assert np.allclose(np.log(lower), min(band.log_lower))
  assert np.allclose(np.log(upper), max(band.log_upper))
  assert fallback.Band.from_dict(json.loads(json.dumps(band.to_dict()))) == \
      fallback.Band.from_dict(band.to_dict())


def test_age_relative_to_the_teacher_cutoff():
  t = 100 * 3600
  age = fallback.age_bucket([t - 41 * 3600, t - 40 * 3600, t - 3600], [t] * 3,
                            40 * 3600)
  assert list(age) == [fallback.BEFORE_CUTOFF, fallback.BEFORE_CUTOFF,
                       fallback.AFTER_CUTOFF]


def test_the_fallback_config_is_checked():
  cfg = config_lib.load_config(None, [])
  params = json.loads(cfg.fallback_parameter())
  assert params['target'] == 'truth' and params['n_keys'] == len(F_B)
  assert params['teacher_lag_seconds'] == 40 * 3600
  assert json.loads(config_lib.load_config(None, ['eval.label_mode=panel'])
                    .fallback_parameter())['target'] == 'candidate'
  for override, key in (('fallback.level=1.0', 'fallback.level'),
                        ('fallback.level=0', 'fallback.level'),
                        ('fallback.rule=naive', 'fallback.rule'),
                        ('fallback.max_failed_fraction=1.5',
                         'fallback.max_failed_fraction'),
                        ('fallback.target=observed', 'fallback.target')):
    with pytest.raises(config_lib.ConfigError, match=key):
      config_lib.load_config(None, [override])


# --- Serving ----------------------------------------------------------------------


@pytest.fixture(scope='module')
def package(tmp_path_factory):
  """A pushed version with its band and the fallback (half the candidate's rate)
  in the package, and one pushed without a band (a bootstrap)."""
  root = tmp_path_factory.mktemp('fallback')
  cand = test_promotion.rate_tflite(str(root / 'cand'), 1.0)
  ref = test_promotion.rate_tflite(str(root / 'ref'), 0.5)
  # Browser 0: the truth is about twice the fallback (the candidate passes);
  # browser 1: about the fallback (the candidate, at twice it, fails).
  band = fallback.Band('reference_quantile', 0.9, 'truth', synthetic.BROWSER,
                       [math.log(1.8), math.log(0.9)], [math.log(2.2), math.log(1.1)],
                       [100, 100])
  t = datetime.datetime(2026, 2, 1, tzinfo=datetime.timezone.utc)
  base = str(root / 'serving')
  boot = push.push(base, t, ref, {fallback.METADATA_BAND: None})
  pushed = push.push(base, t + datetime.timedelta(days=1), cand,
                     {fallback.METADATA_BAND: band.to_dict(),
                      fallback.METADATA_FALLBACK_VERSION: boot['version']},
                     extra_files={fallback.FALLBACK_MODEL_FILE: ref})
  return pushed['path'], boot['path']


def test_predict_with_fallback_serves_the_fallback_where_the_band_fails(package):
  version, _ = package
  rng = np.random.default_rng(1)
  n = 64
  rows = {'price': rng.lognormal(3, 1, n), 'target_cpa': rng.lognormal(4, 1, n),
          synthetic.BROWSER: np.arange(n) % 2}
  out = serving.predict_with_fallback(version, rows)
  assert np.allclose(out['candidate'], 2 * out['fallback'], rtol=1e-4)
  assert list(out['failed']) == list(rows[synthetic.BROWSER] == 1)
  assert np.allclose(out['pconvs'], np.where(out['failed'], out['fallback'],
                                             out['candidate']))
  assert np.all(out['lower'] <= out['upper'])
  with open(os.path.join(version, push.METADATA_FILE)) as f:
    meta = json.load(f)
  assert meta[fallback.METADATA_FALLBACK_VERSION] == os.path.basename(package[1])


def test_a_version_without_a_band_serves_its_own_predictions(package):
  _, boot = package
  rows = {'price': np.array([1.0, 10.0]), 'target_cpa': np.array([50.0, 300.0]),
          synthetic.BROWSER: np.array([0, 1])}
  out = serving.predict_with_fallback(boot, rows)
  assert not out['failed'].any()
  assert np.array_equal(out['pconvs'], out['candidate'])


def test_the_pusher_writes_the_band_and_the_fallback_into_the_package(tmp_path):
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components import artifacts  # pylint: disable=g-import-not-at-top
  from components.promotion import executor as promotion  # pylint: disable=g-import-not-at-top
  from components.pusher import executor as pusher  # pylint: disable=g-import-not-at-top
  from components.served_baseline import executor as served_baseline  # pylint: disable=g-import-not-at-top
  models = {}
  for name, scale in (('candidate', 1.0), ('baseline', 0.5)):
    models[name] = str(tmp_path / name)
    os.makedirs(os.path.join(models[name], 'Format-Serving'))
    with open(served_baseline.tflite_path(models[name]), 'wb') as f:
      f.write(test_promotion.rate_tflite(str(tmp_path / f'{name}_src'), scale))
  band = fallback.Band('reference_quantile', 0.9, 'truth', synthetic.BROWSER,
                       [0.5] * 5, [0.9] * 5, [100] * 5)
  blessing = test_promotion._artifact(  # pylint: disable=protected-access
      standard_artifacts.ModelBlessing, tmp_path / 'blessing', blessed=1,
      baseline_model=models['baseline'])
  os.makedirs(blessing.uri)
  with open(os.path.join(blessing.uri, promotion.RESULT_FILE), 'w') as f:
    json.dump({'fallback': {'band': band.to_dict(),
                            'fallback_version': '20260101T000000Z-00'}}, f)
  examples = test_promotion._artifact(  # pylint: disable=protected-access
      standard_artifacts.Examples, tmp_path / 'examples',
      **{artifacts.SNAPSHOT_TIME: '2026-02-01T00:00:00+00:00'})
  pushed = test_promotion._artifact(  # pylint: disable=protected-access
      standard_artifacts.PushedModel, tmp_path / 'pushed')
  os.makedirs(pushed.uri)
  base = str(tmp_path / 'serving')
  pusher.Executor().Do(
      {pusher.MODEL_KEY: [test_promotion._artifact(  # pylint: disable=protected-access
          standard_artifacts.Model, models['candidate'])],
       pusher.BLESSING_KEY: [blessing], pusher.EXAMPLES_KEY: [examples]},
      {pusher.PUSHED_KEY: [pushed]}, {pusher.PUSH_BASE_KEY: base})
  version = push.latest(base)
  with open(os.path.join(version, push.METADATA_FILE)) as f:
    meta = json.load(f)
  assert meta[fallback.METADATA_FALLBACK_VERSION] == '20260101T000000Z-00'
  assert fallback.Band.from_dict(meta[fallback.METADATA_BAND]) == band
  assert meta[fallback.METADATA_BAND]['serving_helper'] == (
      'components.pusher.serving.predict_with_fallback')
  rows = {'price': np.array([1.0, 10.0]), 'target_cpa': np.array([50.0, 300.0]),
          synthetic.BROWSER: np.array([0, 1])}
  out = serving.predict_with_fallback(version, rows)
  # The candidate is 2x the fallback, inside [e^0.5, e^0.9] = [1.65, 2.46]x.
  assert not out['failed'].any()
  assert np.allclose(out['candidate'], 2 * out['fallback'], rtol=1e-4)


def test_without_a_segment_the_band_is_pooled():
  """A dataset without an observability segment: one multiplier pair for every
  click, and serving keys every click to it."""
  rows, _, production, candidate = world()
  band, report = fallback.evaluate(candidate, production, rows, 0.9, len(F_B),
                                   slices=(columns.TCPA_BUCKET,))
  assert band.key == '' and len(band.log_lower) == 1
  assert not band.keys_of({}, 3).any()
  assert synthetic.BROWSER not in report['failed']
