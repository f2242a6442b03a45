"""The observability world (docs/observability-world.md), shown on generated clicks.

Most checks draw clicks and conversions in memory from `generator.World`, the same
code the generator writes to disk with, so they are fast and large enough for
sampling error to be small.
"""

import hashlib
import json
import os

import numpy as np
import pytest

import config as config_lib
from observation import labels
from schemas import columns
from schemas import records
from tests import helpers
from tests.helpers import make_world
from world import generator
from world import observability as obs
from world import synthetic

SAFARI, CHROME, FIREFOX = 2, 0, 3
N_CLICKS = 300_000


def draw(heterogeneity, panel_share=0.03, n=N_CLICKS, seed=42):
  """(world, clicks, conversions) with the per-conversion latent state."""
  cfg = config_lib.load_config(None, [
      f'world.observability_heterogeneity={heterogeneity}',
      f'world.panel_share={panel_share}', f'world.seed={seed}'])
  world = generator.World(cfg)
  clicks = world.clicks(np.random.default_rng([seed, 1, 0, 0]), n, 0, 0,
                        np.random.default_rng([seed, 5, 0, 0]))
  convs = world.conversions(np.random.default_rng([seed, 1, 0, 0, 1]), clicks)
  pos = np.searchsorted(clicks[columns.CLICK_ID], convs[columns.CLICK_ID])
  convs['pos'] = pos
  convs['delay_h'] = (convs[columns.CONVERSION_TS] - clicks[columns.CLICK_TS][pos]
                     ) / 3600.0
  convs.update({k: v[pos] for k, v in clicks['_latents'].items()})
  for name in (synthetic.BROWSER, synthetic.ADVERTISER_FIRST_PARTY, 'advertiser_id',
               'country'):
    convs[name] = clicks[name][pos]
  return world, clicks, convs


@pytest.fixture(scope='module')
def full():
  return draw(1.0)


def _ratio_within(observed, p, tol_se=4.0):
  """sum(observed) agrees with sum(p) to `tol_se` binomial standard errors."""
  observed = np.asarray(observed, np.float64)
  p = np.asarray(p, np.float64)
  se = np.sqrt(max((p * (1 - p)).sum(), 1.0))
  assert abs(observed.sum() - p.sum()) < tol_se * se, (observed.sum(), p.sum(), se)


# Digests of a small world made by the generator before spec 1 (GENERATOR_VERSION
# 2, commit 518be6e): its click columns and its conversion log. Knob 0 with no
# panel must reproduce them bit for bit.
_OLD_CLICK_COLUMNS = (
    'advertiser_id', 'browser', 'click_id', 'click_ts', 'country',
    'cross_device_history', 'device', 'hour', 'landing_page_quality', 'price',
    'product_category', 'query_category', 'query_length', 'target_cpa',
    'true_conversions', 'true_rate_0_2d', 'true_rate_2_7d', 'true_rate_7_90d',
    'user_engagement', 'user_intent', 'user_past_conversions')
_OLD_CLICKS_SHA = 'e0f457c52523219e2b06a38518a595e1710415c67ec0c7dd9d26721a1ee24eee'
_OLD_CONVERSIONS_SHA = (
    'cd2fd35e287baba92d10bd1e5599341e98c66e95c0a78039d5e630887e99b9bc')


def _digest(cols, names):
  h = hashlib.sha256()
  for name in names:
    h.update(name.encode())
    h.update(np.ascontiguousarray(cols[name]).tobytes())
  return h.hexdigest()


def test_knob_zero_without_a_panel_reproduces_the_old_world(tmp_path):
  cfg, path = make_world(tmp_path, [
      'world.num_clicks=4000', 'world.days=6', 'world.seed=3',
      'world.conversion_horizon_days=90'])
  assert cfg.world.observability_heterogeneity == 0.0 and cfg.world.panel_share == 0.0
  clicks = records.read_examples(os.path.join(path, 'clicks'))
  convs = records.read_examples(os.path.join(path, 'conversions'))
  assert _digest(clicks, _OLD_CLICK_COLUMNS) == _OLD_CLICKS_SHA
  order = np.lexsort((convs[columns.CONVERSION_TS], convs[columns.CLICK_ID]))
  assert _digest({k: v[order] for k, v in convs.items()},
                 (columns.CLICK_ID, columns.CONVERSION_TS)) == _OLD_CONVERSIONS_SHA
  # At knob 0 the truth is the browser's fraction, and the priors are the table.
  f = np.asarray(cfg.observability.fractions())[clicks[synthetic.BROWSER]]
  for name in synthetic.TRUE_OBSERVABILITY:
    np.testing.assert_allclose(clicks[name], f, rtol=1e-6)
  with open(os.path.join(path, generator.MANIFEST)) as fh:
    manifest = json.load(fh)
  for prior in manifest['observability_priors']['priors']:
    want = cfg.observability.fractions()[prior['browser']]
    np.testing.assert_allclose(prior['observed_share'], want, atol=1e-6)
  assert manifest['counts']['panel_clicks'] == 0


def test_the_knob_and_the_panel_change_only_which_conversions_are_reported():
  _, c0, v0 = draw(0.0, panel_share=0.0, n=50_000)
  _, c1, v1 = draw(1.0, panel_share=0.03, n=50_000)
  for name in _OLD_CLICK_COLUMNS + (synthetic.ADVERTISER_FIRST_PARTY,):
    np.testing.assert_array_equal(c0[name], c1[name], err_msg=name)
  np.testing.assert_array_equal(v0[columns.CONVERSION_TS], v1[columns.CONVERSION_TS])
  np.testing.assert_array_equal(v0[columns.CLICK_ID], v1[columns.CLICK_ID])
  # The hidden state is drawn whatever the knob: consent and decoration agree.
  for name in ('consent', 'decorated'):
    np.testing.assert_array_equal(c0['_latents'][name], c1['_latents'][name])
  assert not np.array_equal(v0['observed'], v1['observed'])
  assert c0[synthetic.IN_PANEL].sum() == 0 < c1[synthetic.IN_PANEL].sum()


def test_the_panel_is_fully_observed_and_its_share_is_the_configured_one(full):
  _, clicks, convs = full
  share = clicks[synthetic.IN_PANEL].mean()
  assert abs(share - 0.03) < 4 * np.sqrt(0.03 * 0.97 / N_CLICKS)
  panel = convs[synthetic.IN_PANEL] == 1
  assert panel.sum() > 200 and convs['observed'][panel].all()
  # Half-way up the knob too.
  _, _, half = draw(0.5, n=60_000)
  assert half['observed'][half[synthetic.IN_PANEL] == 1].all()


def test_consent_loses_every_conversion_of_a_refusing_user_and_follows_the_region(full):
  world, clicks, convs = full
  out = convs[synthetic.IN_PANEL] == 0
  refused = out & (convs['consent'] == 0)
  assert refused.sum() > 1000 and not convs['observed'][refused].any()
  # Consent rates by region: the spec's medians, spread by advertiser.
  region = obs.region_of_country(clicks['country'])
  rate = world.obs_tables.consent_rate(clicks['advertiser_id'], clicks['country'])
  consent = clicks['_latents']['consent']
  for r in (obs.CONSENT_REQUIRED, obs.OPT_OUT, obs.NO_BANNER):
    sel = region == r
    _ratio_within(consent[sel], rate[sel])
  assert consent[region == obs.NO_BANNER].all()
  assert 0.4 < consent[region == obs.CONSENT_REQUIRED].mean() < 0.75
  assert 0.85 < consent[region == obs.OPT_OUT].mean() < 0.98
  # The region shares the spec states (country popularity is by id).
  pop = world.country_popularity
  ids = np.arange(len(pop))
  shares = [pop[obs.region_of_country(ids) == r].sum() for r in range(3)]
  np.testing.assert_allclose(shares, [0.416, 0.246, 0.337], atol=0.001)


def _cap_ratio(convs, sel, cap, after=(1.0, np.inf), before=(0.0, 1.0)):
  """Observed share of `sel` with delays in `after` x cap over that in `before` x
  cap, and the number of conversions in `after`."""
  d = convs['delay_h'] / cap
  in_after = sel & (d >= after[0]) & (d < after[1])
  in_before = sel & (d >= before[0]) & (d < before[1])
  return (convs['observed'][in_after].mean() / convs['observed'][in_before].mean(),
          in_after.sum())


def test_safari_caps_decorated_clicks_at_a_day_and_others_at_a_week(full):
  _, _, convs = full
  base = ((convs[synthetic.IN_PANEL] == 0) & (convs['consent'] == 1) &
          (convs[synthetic.BROWSER] == SAFARI))
  no_fp = base & (convs[synthetic.ADVERTISER_FIRST_PARTY] == 0)
  # Beyond the cap only the revisit share survives (the other factors do not
  # depend on the delay, so the ratio isolates the cap).
  decorated = no_fp & (convs['decorated'] == 1)
  ratio, n = _cap_ratio(convs, decorated, obs.SPEC.decorated_cap_hours)
  assert n > 300
  assert abs(ratio - obs.SPEC.revisit_share) < 0.05, ratio
  # Where the cap falls: the day after it is cut, the half day before it is not.
  ratio, n = _cap_ratio(convs, decorated, obs.SPEC.decorated_cap_hours, (1, 2))
  assert n > 30 and ratio < 0.5, (ratio, n)
  ratio, n = _cap_ratio(convs, decorated, obs.SPEC.decorated_cap_hours, (0.5, 1),
                        (0, 0.5))
  assert n > 30 and ratio > 0.7, (ratio, n)
  # Undecorated clicks: a week.
  plain = no_fp & (convs['decorated'] == 0)
  ratio, n = _cap_ratio(convs, plain, obs.SPEC.cap_hours)
  assert n > 30 and ratio < 0.5, (ratio, n)  # 0.15 in expectation
  ratio, n = _cap_ratio(convs, plain, obs.SPEC.cap_hours, (1 / 7, 1), (0, 1 / 7))
  assert n > 30 and ratio > 0.7, (ratio, n)


def test_first_party_tagging_lifts_the_cap_and_other_browsers_have_none(full):
  _, _, convs = full
  base = (convs[synthetic.IN_PANEL] == 0) & (convs['consent'] == 1)
  for sel in (base & (convs[synthetic.BROWSER] == SAFARI) &
              (convs[synthetic.ADVERTISER_FIRST_PARTY] == 1),
              base & (convs[synthetic.BROWSER] == CHROME),
              base & (convs[synthetic.BROWSER] == FIREFOX)):
    ratio, n = _cap_ratio(convs, sel, obs.SPEC.decorated_cap_hours)
    assert n > 300
    assert ratio > 0.85, ratio  # 1 up to advertiser mix (tag coverage)


def test_each_report_follows_its_probability_by_mechanism(full):
  """Observed counts agree with the per-conversion probability the factors give,
  within each mechanism's groups."""
  world, _, convs = full
  browser = convs[synthetic.BROWSER]
  adv = convs['advertiser_id']
  cap = obs.cap_hours(browser, convs[synthetic.ADVERTISER_FIRST_PARTY],
                      convs['decorated'])
  p = obs.report_probability(
      world.observed_fraction[browser],
      obs.mechanism(world.residual[browser], convs['consent'],
                    world.obs_tables.tag_coverage[adv],
                    obs.cookie_survival(convs['delay_h'], cap)),
      convs[synthetic.IN_PANEL], 1.0)
  groups = {
      'browser': browser,
      'region': obs.region_of_country(convs['country']),
      'first_party': convs[synthetic.ADVERTISER_FIRST_PARTY],
      'tag_quartile': np.digitize(world.obs_tables.tag_coverage[adv],
                                  [0.85, 0.92, 0.96]),
      'window': convs['window'],
  }
  for name, g in groups.items():
    for k in np.unique(g):
      _ratio_within(convs['observed'][g == k], p[g == k])
  # Tag coverage really is the advertiser's: with no other loss (Chrome has r = 1,
  # no cap, consenting, outside the panel) the observed share is its mean.
  clean = ((browser == CHROME) & (convs['consent'] == 1) &
           (convs[synthetic.IN_PANEL] == 0))
  assert world.residual[CHROME] == 1.0
  _ratio_within(convs['observed'][clean], world.obs_tables.tag_coverage[adv[clean]])


def test_true_observability_is_each_windows_report_probability(full):
  _, clicks, convs = full
  truth = np.stack([clicks[n] for n in synthetic.TRUE_OBSERVABILITY], 1)
  p = truth[convs['pos'], convs['window']]
  for b in range(5):
    for fp in (0, 1):
      for w in range(3):
        sel = ((convs[synthetic.BROWSER] == b) & (convs['window'] == w) &
               (convs[synthetic.ADVERTISER_FIRST_PARTY] == fp))
        if sel.sum() > 50:
          _ratio_within(convs['observed'][sel], p[sel])
  assert (truth[clicks[synthetic.IN_PANEL] == 1] == 1.0).all()
  assert truth.min() >= 0.0 and truth.max() <= 1.0


def test_browser_means_keep_the_table_where_the_mechanisms_allow(full):
  """r_b = min(1, f_b / m_b): Safari, Firefox and other keep f_b outside the panel;
  Chrome and WebView lose what consent and tags lose."""
  world, _, convs = full
  out = convs[synthetic.IN_PANEL] == 0
  f = world.observed_fraction
  for b in range(5):
    share = convs['observed'][out & (convs[synthetic.BROWSER] == b)].mean()
    if world.residual[b] < 1.0:
      # The calibration sample and this one differ in their advertisers.
      assert abs(share - f[b]) < 0.05, (b, share, f[b])
    else:
      assert share < f[b] - 0.05, (b, share, f[b])


def test_priors_are_per_browser_first_party_and_window():
  world, _, _ = draw(1.0, n=10)
  priors = {(p['browser'], p['first_party']): p['observed_share']
            for p in world.observability_priors()['priors']}
  no_fp, fp = priors[(SAFARI, 0)], priors[(SAFARI, 1)]
  # The cap makes Safari's observability fall with the delay unless first-party.
  assert no_fp[0] > 2 * no_fp[1] > 0 and no_fp[2] < no_fp[1]
  assert max(fp) - min(fp) < 0.05 and fp[2] > 3 * no_fp[2]
  assert all(0 < x <= 1 for v in priors.values() for x in v)


def test_the_spec_hash_covers_the_knob_and_the_spec():
  base = config_lib.load_config(None, [])
  knob = config_lib.load_config(None, ['world.observability_heterogeneity=0.5'])
  panel = config_lib.load_config(None, ['world.panel_share=0.03'])
  hashes = {generator.spec_hash(c) for c in (base, knob, panel)}
  assert len(hashes) == 3


@pytest.mark.parametrize('key,value', [
    ('world.observability_heterogeneity', '1.5'),
    ('world.observability_heterogeneity', '-0.1'),
    ('world.panel_share', '0.9'),
])
def test_out_of_range_knobs_are_config_errors_naming_the_key(key, value):
  with pytest.raises(config_lib.ConfigError, match=key.replace('.', r'\.')):
    config_lib.load_config(None, [f'{key}={value}'])


def test_offsets_from_the_world_priors_are_unbiased_and_flat_ones_are_not(tmp_path):
  """The as-of-T join with the manifest's priors gives observed exposures whose
  expectation meets the reported counts per browser x first-party x window, on
  a world it did not calibrate on; the per-browser table alone misses Safari's
  cap by far."""
  overrides = ['world.num_clicks=150000', 'world.days=30', 'world.seed=5',
               'world.base_rate=0.25',
               'world.observability_heterogeneity=1.0', 'world.panel_share=0.03']
  _, path = make_world(tmp_path, overrides)
  cfg = config_lib.load_config(None, overrides + [
      f'paths.data_root={path}', 'observability.priors_source=world_manifest'])
  clicks = records.read_examples(os.path.join(path, 'clicks'))
  convs = records.read_examples(os.path.join(path, 'conversions'))
  t = int(cfg.world.start().timestamp()) + cfg.world.days * 86400
  flat = config_lib.load_config(None, overrides).label_spec()
  ratios = {}
  for name, spec in (('world', cfg.label_spec()), ('flat', flat)):
    out = labels.labels_as_of(clicks, convs[columns.CLICK_ID],
                              convs[columns.CONVERSION_TS], t, spec,
                              labels.prior_delay(spec))
    for b in range(5):
      for fp in (0, 1):
        sel = ((clicks[synthetic.BROWSER] == b) &
               (clicks[synthetic.ADVERTISER_FIRST_PARTY] == fp))
        for w in range(3):
          expected = (clicks[synthetic.TRUE_RATES[w]][sel].astype(np.float64) *
                      out[synthetic.OBSERVED_EXPOSURES[w]][sel]).sum()
          got = out[synthetic.LABELS[w]][sel].sum()
          if got >= 150:
            ratios[name, b, fp, w] = (got / expected, got)
  world = {k[1:]: v for k, v in ratios.items() if k[0] == 'world'}
  assert len(world) >= 12
  for key, (ratio, n) in world.items():
    # Poisson noise plus the advertiser mix, which differs from the calibration
    # sample's (the priors are a population average).
    assert abs(ratio - 1) < 4 / np.sqrt(n) + 0.12, (key, ratio, n)
  # The table alone: Safari without first-party tagging reports far fewer late
  # conversions than f_b * e_w says.
  ratio, _ = ratios['flat', SAFARI, 0, 0]
  late = [ratios[k][0] for k in ratios if k[:3] == ('flat', SAFARI, 0) and k[3] > 0]
  assert late and max(late) < 0.6, late
  assert ratio > 1.1, ratio


def test_expected_observability_is_what_the_clicks_features_imply(full):
  """Outside the panel, the reported share of true conversions in each quintile
  of World.expected_observability is its conversion-weighted mean."""
  world, clicks, convs = full
  expected = world.expected_observability(clicks)
  assert 0.0 <= expected.min() and expected.max() <= 1.0
  out = convs[synthetic.IN_PANEL] == 0
  e = expected[convs['pos']][out]
  reported = convs['observed'][out]
  edges = np.quantile(e, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
  q = np.clip(np.searchsorted(edges, e, side='right') - 1, 0, 4)
  for i in range(5):
    _ratio_within(reported[q == i], e[q == i], tol_se=5.0)
  assert np.ptp([reported[q == i].mean() for i in range(5)]) > 0.4


def test_the_fitted_delay_model_matches_the_worlds():
  """The delay distribution the ExampleGen fits (observation/labels.fit_delay)
  on 35 days of a heterogeneity-1 world, with a generic prior (not the world's)
  and the manifest's observability priors, matches the world's true delay model:
  the exposures within 0.02 for the 0-2 d and 2-7 d windows and 0.08 for 7-90 d
  (never mature in 35 days), the window shares within 0.03 (measured: 0.005,
  0.003, 0.015 and 0.006). What the priors' delay segments correct is small
  here (Safari's capped conversions are a small share: 0.005 without them);
  tests/test_delay_fit.py shows the correction where it is large."""
  world, clicks, convs = draw(1.0, n=400_000, seed=9)
  rng = np.random.default_rng(3)
  day = rng.integers(0, 35, len(clicks[columns.CLICK_ID])) * 86400
  click_ts = clicks[columns.CLICK_TS] + day
  t = 35 * 86400
  reported = convs['observed'] & (click_ts[convs['pos']] + convs['delay_h'] * 3600 <= t)
  clicks = {**clicks, columns.CLICK_TS: click_ts}
  conv_ts = click_ts[convs['pos']] + (convs['delay_h'] * 3600).astype(np.int64)
  priors = world.observability_priors()
  generic = dict(prior_shares=(1 / 3, 1 / 3, 1 / 3), prior_scales=(20.0, 20.0, 200.0))
  true_model = world.delay
  ages = np.linspace(0, 35 * 24, 200)
  rows = [tuple(p['segment_shares']) for p in sorted(
      priors['priors'], key=lambda p: (p['browser'], p['first_party']))]
  spec = helpers.label_spec(**generic, priors=tuple(rows),
                            observed_fractions=tuple(priors['browsers']))
  group, row = labels.conversion_keys(clicks, spec)
  pos = convs['pos'][reported]
  data = np.stack([conv_ts[reported] - click_ts[pos], t - click_ts[pos],
                   group[pos], row[pos]], 1).astype(np.float64)
  fit = labels.fit_delay(spec, data)
  assert fit.source == 'fitted' and fit.conversions.sum() > 5_000
  error = np.abs(fit.exposures(ages) - true_model.exposures(ages)).max(0)
  assert (error <= [0.02, 0.02, 0.08]).all(), error
  np.testing.assert_allclose(fit.shares[0], world.cfg.world.delay_window_shares,
                             atol=0.03)
