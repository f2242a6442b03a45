"""The synthetic world's mechanics, shown on generated data.

See docs/architecture.md §3-4.
"""

import json
import os

import numpy as np
import pytest
from scipy import stats

from models import nll as nll_lib
import config as config_lib
from observation import delay as delay_lib
from observation import labels
from schemas import columns
from schemas import layout
from schemas import records
from tests.helpers import make_world
from world import difficulty
from world import generator
from world import synthetic

HOUR = 3600.0


@pytest.fixture(scope='module')
def logs(mature_world):
  cfg, path = mature_world
  clicks = records.read_examples(os.path.join(path, 'clicks'))
  convs = records.read_examples(os.path.join(path, 'conversions'))
  order = np.argsort(clicks[columns.CLICK_ID])
  clicks = {k: v[order] for k, v in clicks.items()}
  pos = np.searchsorted(clicks[columns.CLICK_ID], convs[columns.CLICK_ID])
  assert (clicks[columns.CLICK_ID][pos] == convs[columns.CLICK_ID]).all()
  delay_h = (convs[columns.CONVERSION_TS] - clicks[columns.CLICK_TS][pos]) / HOUR
  return cfg, clicks, convs, pos, delay_h


def test_every_feature_is_a_dense_scalar_and_categoricals_are_int64(logs):
  _, clicks, _, _, _ = logs
  log_columns = [c.name for c in synthetic.spec().click_log_columns()]
  assert set(clicks) == set(log_columns)
  n = len(clicks[columns.CLICK_ID])
  for name in log_columns:
    assert clicks[name].shape == (n,), name
    col = synthetic.column(name)
    want = np.int64 if col.dtype == 'int' else np.float32
    assert clicks[name].dtype == want, name
  assert len(np.unique(clicks[columns.CLICK_ID])) == n


def test_reported_share_per_browser_matches_observed_fraction(logs):
  cfg, clicks, _, pos, _ = logs
  browser = clicks[synthetic.BROWSER]
  reported = np.bincount(browser[pos], minlength=5)
  true = np.bincount(browser, weights=clicks[columns.TRUE_CONVERSIONS], minlength=5)
  for b, f in enumerate(cfg.observability.fractions()):
    if true[b] == 0:
      continue
    ratio = reported[b] / true[b]
    se = np.sqrt(max(f * (1 - f), 1e-4) / true[b])
    assert abs(ratio - f) < 4 * se + 1e-9, (b, ratio, f, true[b])
  # Low-observability browsers are really there.
  assert true[2] > 200 and true[4] > 50


def test_delay_window_shares_match_the_truth(logs):
  cfg, clicks, _, pos, delay_h = logs
  model = delay_lib.DelayModel(cfg.world.delay_window_scale_hours, synthetic.WINDOWS)
  window = model.window_of(delay_h)
  assert (window >= 0).all()
  got = np.bincount(window, minlength=3) / len(window)
  f = np.asarray(cfg.observability.fractions())[clicks[synthetic.BROWSER]]
  rates = np.stack([clicks[n] for n in synthetic.TRUE_RATES], 1) * f[:, None]
  want = rates.sum(0) / rates.sum()
  se = np.sqrt(want * (1 - want) / len(window))
  assert (np.abs(got - want) < 4 * se).all(), (got, want)
  # And the world's average shares are the configured ones (the price tilt
  # moves individual clicks, not the average much).
  np.testing.assert_allclose(want, cfg.world.delay_window_shares, atol=0.05)


def test_exposures_match_the_delay_cdf(logs):
  cfg, _, _, _, delay_h = logs
  model = delay_lib.DelayModel(cfg.world.delay_window_scale_hours, synthetic.WINDOWS)
  window = model.window_of(delay_h)
  for i in range(3):
    d = delay_h[window == i]
    ks = stats.kstest(d, lambda x, i=i: model.exposures(x)[:, i])
    assert ks.pvalue > 1e-3, (i, ks)


def test_labels_grow_with_t_and_equal_full_window_counts_once_mature(logs):
  cfg, clicks, convs, pos, delay_h = logs
  spec = cfg.label_spec()
  first_day = clicks[columns.CLICK_TS] < clicks[columns.CLICK_TS].min() + 86400
  sub = {k: v[first_day] for k, v in clicks.items()}
  t0 = int(sub[columns.CLICK_TS].max()) + 1
  previous = None
  for days in [0, 1, 3, 7, 20, 60, 90]:
    out = labels.labels_as_of(sub, convs[columns.CLICK_ID],
                              convs[columns.CONVERSION_TS], t0 + days * 86400, spec,
                              labels.prior_delay(spec))
    counts = np.stack([out[n] for n in synthetic.LABELS], 1)
    if previous is not None:
      assert (counts >= previous).all()
      assert counts.sum() >= previous.sum()
    previous = counts
  assert (np.stack([out[n] for n in synthetic.EXPOSURES]) == 1.0).all()
  # Mature labels are the full-window counts of the conversion log.
  model = spec.prior_model()
  mine = np.isin(convs[columns.CLICK_ID], sub[columns.CLICK_ID])
  full = np.bincount(model.window_of(delay_h[mine]), minlength=3)
  np.testing.assert_array_equal(previous.sum(0), full)
  assert previous.sum() > 100


def test_mean_rate_is_the_configured_base_rate(logs):
  cfg, clicks, _, _, _ = logs
  rate = sum(clicks[n].astype(np.float64) for n in synthetic.TRUE_RATES)
  assert rate.mean() == pytest.approx(cfg.world.base_rate, rel=0.05)
  # Truth counts are Poisson draws from the truth rates.
  y = clicks[columns.TRUE_CONVERSIONS]
  assert y.mean() == pytest.approx(rate.mean(), rel=0.05)
  # tCPA is heavy-tailed: a real tCPA > 250 slice.
  high = (clicks[synthetic.TARGET_CPA] > 250).mean()
  assert 0.01 < high < 0.2


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
  def hashes(root, seed):
    _, path = make_world(root, ['world.num_clicks=3000', 'world.days=3',
                                f'world.seed={seed}', 'world.chunk_size=1000'])
    with open(os.path.join(path, generator.MANIFEST)) as f:
      return {e['path']: e['sha256'] for e in json.load(f)['files']}
  a = hashes(tmp_path / 'a', 1)
  assert a == hashes(tmp_path / 'b', 1)
  assert any(p.startswith('conversions/') for p in a)
  b = hashes(tmp_path / 'c', 2)
  # Data files differ; the (empty) completeness markers are the same bytes.
  shared = {p for p in set(a) & set(b) if not p.endswith(layout.COMPLETE_MARKER)}
  assert shared and all(a[p] != b[p] for p in shared)


# The difficulty claim (docs/usage.md, "The synthetic world"): on the default world the best Poisson GLM on
# serving features stays at least MIN_GLM_GAP above the Bayes floor, and adding
# the teacher-only features closes at least MIN_PRIVILEGED_SHARE of that gap.
MIN_GLM_GAP = 0.05
MIN_PRIVILEGED_SHARE = 0.4


def test_world_is_hard_and_the_privileged_signal_is_real(tmp_path):
  _, path = make_world(tmp_path, ['world.num_clicks=150000'])
  result = difficulty.measure(records.read_examples(os.path.join(path, 'clicks')),
                              synthetic.spec())
  assert result['glm_gap'] >= MIN_GLM_GAP, result
  assert result['privileged_share'] >= MIN_PRIVILEGED_SHARE, result
  assert result['floor'] < result['glm_with_teacher_only'] < result[
      'glm_serving'] < result['constant']


def test_serving_only_rate_lies_between_the_floor_and_the_glm(logs):
  """E[rate | serving features] is the serving-only Bayes floor: above the true
  rate's NLL (it lacks the privileged signal), well calibrated."""
  cfg, clicks, _, _, _ = logs
  world = generator.World(cfg)
  y = clicks[columns.TRUE_CONVERSIONS].astype(np.float64)
  rate = sum(clicks[n].astype(np.float64) for n in synthetic.TRUE_RATES)
  serving = world.serving_rate(clicks, samples=128)
  assert serving.mean() == pytest.approx(rate.mean(), rel=0.02)
  floor, best = nll_lib.poisson_nll(y, rate), nll_lib.poisson_nll(y, serving)
  assert floor < best < nll_lib.poisson_nll(y, np.full(len(y), y.mean()))
  # Same serving features, same expected rate: the Monte Carlo is over z only.
  again = world.serving_rate(clicks, samples=128, seed=1)
  assert np.corrcoef(serving, again)[0, 1] > 0.95


def test_scoring_clicks_are_the_same_world_with_clicks_never_logged(logs):
  """The quality bench scores on new clicks of the logged world (issue 13)."""
  cfg, clicks, _, _, _ = logs
  world = generator.World(cfg)
  day = int(cfg.world.start().timestamp()) + (cfg.world.days - 1) * 86400
  scoring = world.scoring_clicks(20_000, day)
  assert {c.name for c in synthetic.spec().click_log_columns()} <= set(scoring)
  # The same advertiser table: every advertiser's tCPA is the logged one.
  logged_tcpa = dict(zip(clicks['advertiser_id'], clicks[synthetic.TARGET_CPA]))
  shared = [a for a in np.unique(scoring['advertiser_id']) if a in logged_tcpa]
  assert len(shared) > 10
  first = {a: t for a, t in zip(scoring['advertiser_id'][::-1],
                                scoring[synthetic.TARGET_CPA][::-1])}
  for a in shared:
    assert first[a] == logged_tcpa[a]
  # The same rate mechanics: the truth is the world's log-rate of the features.
  np.testing.assert_allclose(
      sum(scoring[c].astype(np.float64) for c in synthetic.TRUE_RATES),
      np.exp(world.log_rate(scoring)), rtol=1e-5)
  # No click in common: ids cannot collide and no feature row repeats a logged one.
  assert (scoring[columns.CLICK_ID] < 0).all()
  key = lambda d: set(zip(d[columns.CLICK_TS].tolist(), d['user_engagement'].tolist()))
  assert not key(scoring) & key(clicks)
  # A separate stream: deterministic, and another stream gives other clicks.
  again = world.scoring_clicks(20_000, day)
  np.testing.assert_array_equal(again['user_engagement'], scoring['user_engagement'])
  other = world.scoring_clicks(20_000, day, stream=1)
  assert not np.array_equal(other['user_engagement'], scoring['user_engagement'])


def test_the_worlds_names_are_its_dataset_specs():
  """world/synthetic.py names what datasets/synthetic_world/dataset.yaml declares."""
  spec = synthetic.spec()
  assert spec.window_tuple() == synthetic.WINDOWS
  assert spec.serving_names() == synthetic.SERVING_FEATURES
  assert tuple(c.name for c in spec.features('teacher_only')) == (
      synthetic.TEACHER_ONLY_FEATURES)
  assert (spec.segment, spec.first_party, spec.tcpa, spec.panel) == (
      synthetic.BROWSER, synthetic.ADVERTISER_FIRST_PARTY, synthetic.TARGET_CPA,
      synthetic.IN_PANEL)
  assert spec.meanings.panel_calibration_groups == [synthetic.COUNTRY,
                                                    synthetic.ADVERTISER]
  assert (spec.feature('query_category').buckets, spec.feature('country').buckets,
          spec.feature('product_category').buckets) == (
              generator.N_QUERY_CATEGORIES, generator.N_COUNTRIES,
              generator.N_PRODUCT_CATEGORIES)
  # The world's delay truth is the spec's declared prior.
  cfg = config_lib.load_config(None, [])
  assert list(spec.prior_shares()) == cfg.world.delay_window_shares
  assert list(spec.prior_scales()) == cfg.world.delay_window_scale_hours
