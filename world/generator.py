"""The synthetic world: day-partitioned click and conversion logs with known truth.

Writes, under the output directory:
  clicks/date=YYYY-MM-DD/part-NNNNN.tfrecord.gz       one tf.Example per click
  conversions/date=YYYY-MM-DD/part-00000.tfrecord.gz  one per *reported* conversion
  <log>/date=YYYY-MM-DD/_SUCCESS                      the partition is complete
  manifest.json                                       parameters, counts, files

Mechanics (docs/architecture.md §3), all seeded and streamed day by day in chunks:
  - advertisers with Zipf popularity and log-normal tCPA (a real tCPA > 250 slice);
  - a non-linear true rate: a query x product-category relevance table, tanh of
    engagement, a price bump around the advertiser's usual price, hour x device
    cycles, and teacher-only signals (intent, landing-page quality, cross-device
    history) that the serving features only partly reveal;
  - per-window rates: the total split over 0-2d / 2-7d / 7-90d by the configured
    shares, tilted towards later windows for expensive products;
  - delays inside each window from the shared DelayModel;
  - observability (world/observability.py, docs/observability-world.md): each
    conversion is reported with probability f_b of its browser at
    `world.observability_heterogeneity` 0, and by click-level consent, cookie caps
    and tag coverage as the knob rises; every conversion of a click in the
    measurement panel (`world.panel_share`) is reported. Unreported conversions are
    absent from the conversion log; the truth columns (true_rate_<w>,
    true_conversions, true_observability_<w>) count them.
Every categorical is an int64 id and every feature a dense scalar.

Usage: python -m world.generator --config pipeline/configs/default.yaml [--help]
"""

import os

# An entry point: Keras 2 (tf-keras) for TFX 1.16 must be chosen before anything
# imports TensorFlow, whoever starts this process (the Makefile sets it too).
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import dataclasses
import datetime
import hashlib
import json
import shutil
import sys
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

import config as config_lib
from observation import delay as delay_lib
from observation import labels
from observation import snapshot
from schemas import codec
from schemas import columns
from schemas import layout
from world import observability as obs
from world import synthetic

# 2: teacher-only features drawn after the serving ones; 3: the observability
# world (advertiser_first_party, in_panel, true_observability_<w>), a
# conversion_id and a completeness marker in every partition.
GENERATOR_VERSION = 3
MANIFEST = 'manifest.json'
SECONDS_PER_DAY = 86400
HOUR = snapshot.SECONDS_PER_HOUR

# The world's own columns (world/synthetic.py; its dataset spec declares them).
BROWSER = synthetic.BROWSER
TARGET_CPA = synthetic.TARGET_CPA
FIRST_PARTY = synthetic.ADVERTISER_FIRST_PARTY
IN_PANEL = synthetic.IN_PANEL
N_QUERY_CATEGORIES = 64
N_PRODUCT_CATEGORIES = 128
N_COUNTRIES = 32
DESKTOP, MOBILE, TABLET = 0, 1, 2
# Local hour of the conversion-rate peak by device.
_PEAK_HOUR = np.array([14.0, 21.0, 19.0])
# Tilt of the window shares per unit of standardised log price: expensive products
# convert later.
_WINDOW_PRICE_TILT = np.array([-0.35, 0.0, 0.35])


class World:
  """World-level parameters (advertisers, tables) and per-click mechanics."""

  def __init__(self, cfg: config_lib.Config):
    self.cfg = cfg
    w = cfg.world
    rng = np.random.default_rng([w.seed, 0])
    a = w.num_advertisers
    pop = np.arange(1, a + 1, dtype=np.float64)**-w.advertiser_zipf_exponent
    self.adv_popularity = pop / pop.sum()
    self.adv_tcpa = w.tcpa_median * np.exp(w.tcpa_sigma * rng.standard_normal(a))
    self.adv_category = rng.integers(0, N_PRODUCT_CATEGORIES, a)
    self.adv_price = 0.8 * self.adv_tcpa * np.exp(0.5 * rng.standard_normal(a))
    # Advertisers with expensive goals convert less per click.
    self.adv_effect = 0.5 * rng.standard_normal(a) - 0.35 * np.log(
        self.adv_tcpa / w.tcpa_median)
    self.adv_quality = rng.standard_normal(a)
    self.relevance = 0.5 * rng.standard_normal(
        (N_QUERY_CATEGORIES, N_PRODUCT_CATEGORIES))
    cpop = 1.0 / np.arange(1, N_COUNTRIES + 1)
    self.country_popularity = cpop / cpop.sum()
    self.country_effect = 0.2 * rng.standard_normal(N_COUNTRIES)
    self.country_tz = rng.integers(-8, 9, N_COUNTRIES)
    self.price_scale = float(np.median(self.adv_price))
    self.observed_fraction = np.asarray(cfg.observability.fractions())
    self.browser_shares = np.array(
        [w.browser_shares_desktop, w.browser_shares_mobile, w.browser_shares_mobile])
    m = w.mobile_share
    self.device_shares = np.array([0.9 * (1 - m), m, 0.1 * (1 - m)])
    hours = np.arange(24)
    diurnal = 1.0 + 0.6 * np.sin(2 * np.pi * (hours - 9) / 24)
    self.hour_shares = diurnal / diurnal.sum()
    d = cfg.dataset
    if not d.truth or d.segment != BROWSER:
      raise config_lib.ConfigError(
          f'dataset_file: the synthetic world writes the synthetic_world dataset '
          f'(truth columns, browser segment), not {d.name!r}')
    names = d.window_names()
    self.true_rate_columns = columns.true_rates(names)
    self.true_observability_columns = columns.true_observability(names)
    self.window_names = names
    self.delay = delay_lib.DelayModel(w.delay_window_scale_hours, d.window_tuple())
    # The observability world (docs/observability-world.md). Its draws come from
    # streams of their own, so the knob never moves a click or a true conversion.
    self.obs_tables = obs.advertiser_tables(np.random.default_rng([w.seed, 6]),
                                            w.num_advertisers)
    self.heterogeneity = w.observability_heterogeneity
    self.panel_share = w.panel_share
    # Calibrated on a fixed sample so that the configured values are the world's
    # averages: the intercept gives mean true rate = world.base_rate, and the
    # window logits give conversion-weighted shares = world.delay_window_shares
    # (the price tilt and its correlation with the rate would move them).
    calib = self.features(np.random.default_rng([w.seed, 2]), 200_000, 0)
    self.intercept = 0.0
    self.intercept = np.log(w.base_rate) - np.log(
        np.mean(np.exp(self.log_rate(calib))))
    target = np.asarray(w.delay_window_shares, dtype=np.float64)
    self.log_shares = np.log(np.maximum(target, 1e-12))
    rate = np.exp(self.log_rate(calib))[:, None]
    for _ in range(50):
      shares = (rate * self.window_shares(calib)).sum(0) / rate.sum()
      self.log_shares += np.log(np.maximum(target, 1e-12) / np.maximum(shares, 1e-12))
    self._calib = calib
    self.residual = self._calibrate_residual()

  def _calibrate_residual(self) -> np.ndarray:
    """r_b = min(1, f_b / m_b): m_b is the conversion-weighted mean of the named
    mechanisms over browser b's clicks of the calibration sample."""
    f = self._calib
    lat = self.latents(np.random.default_rng([self.cfg.world.seed, 7]), f,
                       panel_share=0.0)
    survival = obs.window_survival(self.delay, self._cap(f, lat))
    mech = (obs.mechanism(1.0, lat['consent'][:, None],
                          self.obs_tables.tag_coverage[f['advertiser_id']][:, None],
                          survival) * self.window_shares(f)).sum(1)
    rate = np.exp(self.log_rate(f))
    b = f[BROWSER]
    n_b = len(self.observed_fraction)
    mean = np.bincount(b, rate * mech, n_b) / np.maximum(np.bincount(b, rate, n_b),
                                                         1e-300)
    return np.minimum(1.0, self.observed_fraction / np.maximum(mean, 1e-12))

  def latents(self, rng: np.random.Generator, f: Dict[str, np.ndarray],
              panel_share: Optional[float] = None) -> Dict[str, np.ndarray]:
    """The clicks' hidden observability state: consent, link decoration, panel."""
    rate = self.obs_tables.consent_rate(f['advertiser_id'], f['country'])
    share = self.panel_share if panel_share is None else panel_share
    return obs.click_latents(rng, len(rate), rate, share)

  def _cap(self, f, lat) -> np.ndarray:
    return obs.cap_hours(f[BROWSER], f[FIRST_PARTY],
                         lat['decorated'])

  def report_probability(self, browser, advertiser, consent, in_panel,
                         survival) -> np.ndarray:
    """The report probability given the click's browser, advertiser, consent
    and panel membership and its cookie's survival (broadcast together)."""
    mech = obs.mechanism(self.residual[browser], consent,
                         self.obs_tables.tag_coverage[advertiser], survival)
    return obs.report_probability(self.observed_fraction[browser], mech, in_panel,
                                  self.heterogeneity)

  def observability_by_window(self, f, lat) -> np.ndarray:
    """[n, W] the report probability of a conversion in each window given the
    click's hidden state (the truth columns true_observability_<w>)."""
    return self.report_probability(
        f[BROWSER][:, None], f['advertiser_id'][:, None],
        lat['consent'][:, None], lat['in_panel'][:, None],
        obs.window_survival(self.delay, self._cap(f, lat)))

  def expected_observability_by_window(self, f: Dict[str, np.ndarray]) -> np.ndarray:
    """[n, W] the report probability of a conversion in each window outside the
    panel, in expectation over the click's hidden per-click state (consent, link
    decoration): what its advertiser, country, browser and first-party flag imply,
    the most a model could learn of its observability. The report probability is
    linear in consent and in the cookie's survival, so the expectation plugs in
    the consent rate and the decoration-weighted survival."""
    n = len(f[BROWSER])
    adv = f['advertiser_id']
    consent = self.obs_tables.consent_rate(adv, f['country'])
    survival = sum(
        share * obs.window_survival(self.delay, obs.cap_hours(
            f[BROWSER], f[FIRST_PARTY],
            np.full(n, decorated)))
        for decorated, share in ((1, obs.SPEC.decorated_share),
                                 (0, 1.0 - obs.SPEC.decorated_share)))
    return self.report_probability(f[BROWSER][:, None], adv[:, None],
                                   consent[:, None], 0, survival)

  def expected_observability(self, f: Dict[str, np.ndarray]) -> np.ndarray:
    """[n] the share of a click's true conversions reported outside the panel,
    in expectation over its hidden per-click state (consent, link decoration):
    expected_observability_by_window weighted by the click's window rates."""
    p = self.expected_observability_by_window(f)
    rates = np.exp(self.log_rate(f))[:, None] * self.window_shares(f)
    return (rates * p).sum(1) / rates.sum(1)

  def observability_priors(self) -> Dict:
    """The population priors a measurement study would report, on the calibration
    sample outside the panel (the pipeline knows only these; the spec, "What the
    pipeline may know"): the observed share of true conversions per browser x
    first-party flag, per delay segment of observation/labels.py (the caps sit on
    segment edges, so a click's report probability is constant inside one) and
    per window, and per browser overall. The shape of the config's
    `observability` section (`priors_source: world_manifest` reads it)."""
    f = self._calib
    lat = self.latents(np.random.default_rng([self.cfg.world.seed, 7]), f,
                       panel_share=0.0)
    edges = np.asarray(labels.SEGMENT_EDGES_HOURS)
    mid = 0.5 * (edges[:-1] + edges[1:])
    adv, b = f['advertiser_id'], f[BROWSER]
    cap = self._cap(f, lat)
    rate = np.exp(self.log_rate(f))[:, None] * self.window_shares(f)  # [n, W]
    # Conversions per click and segment, and their report probability.
    mass = labels.segment_masses(self.delay.exposures, np.full(len(b), np.inf),
                                 labels.SEGMENT_EDGES_HOURS)  # [n, W, S]
    weight = np.einsum('nw,nws->ns', rate, mass)
    p = np.stack([self.report_probability(
        b, adv, lat['consent'], lat['in_panel'], obs.cookie_survival(m, cap))
                  for m in mid], 1)  # [n, S]
    p_w = self.observability_by_window(f, lat)
    fp = f[FIRST_PARTY]

    def share(num, den):
      return [round(float(x), 6) for x in num / np.maximum(den, 1e-300)]

    priors = []
    for browser in range(len(self.observed_fraction)):
      for flag in (0, 1):
        sel = (b == browser) & (fp == flag)
        priors.append({
            'browser': browser, 'first_party': flag,
            'segment_shares': share((weight * p)[sel].sum(0), weight[sel].sum(0)),
            'observed_share': share((rate * p_w)[sel].sum(0), rate[sel].sum(0))})
    by_browser = [share(np.array([(rate * p_w)[b == k].sum()]),
                        np.array([rate[b == k].sum()]))[0]
                  for k in range(len(self.observed_fraction))]
    return {'segment_edges_hours': list(labels.SEGMENT_EDGES_HOURS),
            'windows': list(self.window_names), 'browsers': by_browser,
            'priors': priors}

  def features(self, rng: np.random.Generator, n: int,
               day_start: int) -> Dict[str, np.ndarray]:
    """Samples n clicks' features on the day starting at `day_start` (epoch s)."""
    adv = rng.choice(len(self.adv_popularity), n, p=self.adv_popularity)
    device = rng.choice(3, n, p=self.device_shares)
    u = rng.random(n)
    cum = np.cumsum(self.browser_shares[device], axis=1)
    browser = np.minimum((u[:, None] > cum).sum(axis=1), cum.shape[1] - 1)
    country = rng.choice(N_COUNTRIES, n, p=self.country_popularity)
    utc_hour = rng.choice(24, n, p=self.hour_shares)
    click_ts = day_start + utc_hour * HOUR + rng.integers(0, HOUR, n)
    hour = (utc_hour + self.country_tz[country]) % 24
    on_topic = rng.random(n) < 0.6
    query_category = np.where(
        on_topic, (self.adv_category[adv] // 2) % N_QUERY_CATEGORIES,
        rng.integers(0, N_QUERY_CATEGORIES, n))
    product_category = np.where(
        rng.random(n) < 0.8, self.adv_category[adv],
        rng.integers(0, N_PRODUCT_CATEGORIES, n))
    engagement = rng.standard_normal(n)
    return {
        columns.CLICK_TS: click_ts.astype(np.int64),
        'query_category': query_category.astype(np.int64),
        'query_length': (1 + rng.poisson(3.0, n)).astype(np.int64),
        'device': device.astype(np.int64),
        'hour': hour.astype(np.int64),
        BROWSER: browser.astype(np.int64),
        'country': country.astype(np.int64),
        'user_engagement': engagement.astype(np.float32),
        'user_past_conversions': rng.poisson(np.exp(0.5 * engagement - 0.5)).astype(
            np.int64),
        'advertiser_id': adv.astype(np.int64),
        'product_category': product_category.astype(np.int64),
        'price': (self.adv_price[adv] * np.exp(0.3 * rng.standard_normal(n))).astype(
            np.float32),
        TARGET_CPA: self.adv_tcpa[adv].astype(np.float32),
        FIRST_PARTY: self.obs_tables.first_party[adv],
        **self.teacher_only(rng, engagement, adv),
    }

  def teacher_only(self, rng: np.random.Generator, engagement: np.ndarray,
                   adv: np.ndarray) -> Dict[str, np.ndarray]:
    """The offline signals given the serving features they depend on: intent
    correlates with engagement, landing-page quality with the advertiser."""
    n = len(adv)
    intent = 0.3 * np.asarray(engagement, np.float64) + np.sqrt(1 - 0.3**2) * (
        rng.standard_normal(n))
    return {
        'user_intent': intent.astype(np.float32),
        'landing_page_quality': (0.6 * self.adv_quality[adv] +
                                 0.8 * rng.standard_normal(n)).astype(np.float32),
        'cross_device_history': rng.poisson(np.exp(0.4 * intent - 0.3)).astype(
            np.int64),
    }

  def serving_rate(self, f: Dict[str, np.ndarray], samples: int = 256,
                   seed: int = 0) -> np.ndarray:
    """E[true total rate | serving features]: the best any serving-only model can
    predict (Monte Carlo over the teacher-only features' conditionals)."""
    rng = np.random.default_rng([self.cfg.world.seed, 3, seed])
    total = np.zeros(len(f['advertiser_id']))
    for _ in range(samples):
      g = {**f, **self.teacher_only(rng, f['user_engagement'], f['advertiser_id'])}
      total += np.exp(self.log_rate(g))
    return total / samples

  def log_rate(self, f: Dict[str, np.ndarray]) -> np.ndarray:
    """log of the true total rate (all windows, observed or not)."""
    adv = f['advertiser_id']
    eng = f['user_engagement'].astype(np.float64)
    rel_price = np.log(f['price'] / self.adv_price[adv])
    intent = f['user_intent'].astype(np.float64)
    privileged = (0.5 * intent + 0.35 * f['landing_page_quality'] +
                  0.25 * np.log1p(f['cross_device_history']) +
                  0.3 * intent * (eng > 0))
    return (self.intercept + self.adv_effect[adv] +
            self.relevance[f['query_category'], f['product_category']] +
            0.6 * np.tanh(1.2 * eng) +
            0.25 * np.log1p(f['user_past_conversions']) +
            0.3 * np.sin(2 * np.pi * (f['hour'] - _PEAK_HOUR[f['device']]) / 24) +
            self.country_effect[f['country']] -
            0.4 * rel_price - 0.3 * rel_price**2 -
            0.08 * np.abs(f['query_length'] - 3) +
            self.cfg.world.privileged_scale * privileged)

  def window_shares(self, f: Dict[str, np.ndarray]) -> np.ndarray:
    """[n, 3] share of each delay window in the click's conversions."""
    z = np.clip(np.log(f['price'] / self.price_scale) / 0.8, -3, 3)
    logits = self.log_shares[None, :] + _WINDOW_PRICE_TILT[None, :] * z[:, None]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

  def clicks(self, rng: np.random.Generator, n: int, day_start: int,
             first_id: int, latent_rng: np.random.Generator
             ) -> Dict[str, np.ndarray]:
    """n clicks with features and truth, sorted by time; their hidden
    observability state from `latent_rng`."""
    f = self.features(rng, n, day_start)
    order = np.argsort(f[columns.CLICK_TS], kind='stable')
    f = {k: v[order] for k, v in f.items()}
    rates = np.exp(self.log_rate(f))[:, None] * self.window_shares(f)
    f[columns.CLICK_ID] = np.arange(first_id, first_id + n, dtype=np.int64)
    for i, name in enumerate(self.true_rate_columns):
      f[name] = rates[:, i].astype(np.float32)
    # Counts are drawn from the float32 rates written to the log, so the truth
    # columns are exactly the rates the counts came from.
    counts = rng.poisson(np.stack([f[n] for n in self.true_rate_columns], axis=1))
    f[columns.TRUE_CONVERSIONS] = counts.sum(axis=1).astype(np.int64)
    f['_counts'] = counts
    lat = self.latents(latent_rng, f)
    f[IN_PANEL] = lat['in_panel']
    for name, p in zip(self.true_observability_columns,
                       self.observability_by_window(f, lat).T):
      f[name] = p.astype(np.float32)
    f['_latents'] = lat
    return f

  def scoring_clicks(self, n: int, day_start: int, stream: int = 0,
                     first_id: int = -1) -> Dict[str, np.ndarray]:
    """n new clicks of the same world on the day starting at `day_start`.

    The world's structure (advertisers, tables) comes from the stream
    [seed, 0] and the logs' clicks from [seed, 1, day, part]; these come from
    [seed, 4, stream], so they share the world but never a click with the logs.
    Their ids count down from `first_id` (negative), so they cannot collide with
    a logged click's id either.
    """
    rng = np.random.default_rng([self.cfg.world.seed, 4, stream])
    f = self.clicks(rng, n, day_start, 0,
                    np.random.default_rng([self.cfg.world.seed, 8, stream]))
    f[columns.CLICK_ID] = first_id - np.arange(n, dtype=np.int64)
    del f['_counts'], f['_latents']
    return f

  def conversions(self, rng: np.random.Generator,
                  clicks: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Every true conversion of `clicks` with its time and whether it is observed."""
    counts = clicks['_counts']
    click_pos, window = np.nonzero(counts)
    reps = counts[click_pos, window]
    click_pos = np.repeat(click_pos, reps)
    window = np.repeat(window, reps)
    delay_h = self.delay.sample(rng, window)
    ts = clicks[columns.CLICK_TS][click_pos] + np.floor(delay_h * HOUR).astype(
        np.int64)
    browser = clicks[BROWSER][click_pos]
    lat = {k: v[click_pos] for k, v in clicks['_latents'].items()}
    adv = clicks['advertiser_id'][click_pos]
    cap = obs.cap_hours(browser, clicks[FIRST_PARTY][click_pos],
                        lat['decorated'])
    p = self.report_probability(browser, adv, lat['consent'], lat['in_panel'],
                                obs.cookie_survival(delay_h, cap))
    return {
        columns.CLICK_ID: clicks[columns.CLICK_ID][click_pos],
        columns.CONVERSION_TS: ts,
        'window': window,
        # One uniform per conversion, as in every generator version: at
        # heterogeneity 0 and no panel, p is f_b and the same conversions are
        # reported.
        'observed': rng.random(len(ts)) < p,
    }


def _daily_counts(num_clicks: int, days: int) -> np.ndarray:
  """Clicks per day with a weekly cycle; largest-remainder rounding."""
  weights = 1.0 + 0.1 * np.cos(2 * np.pi * np.arange(days) / 7)
  exact = num_clicks * weights / weights.sum()
  counts = np.floor(exact).astype(np.int64)
  rest = num_clicks - counts.sum()
  counts[np.argsort(-(exact - counts), kind='stable')[:rest]] += 1
  return counts


def _world_params(cfg: config_lib.Config) -> Dict:
  return {
      'generator_version': GENERATOR_VERSION,
      'world': json.loads(json.dumps({
          k: v for k, v in cfg.world.__dict__.items()
          if k not in ('delay_window_shares', 'delay_window_scale_hours')})),
      'observability': [b.__dict__ for b in cfg.observability.browsers],
      'observability_spec': json.loads(json.dumps(dataclasses.asdict(obs.SPEC))),
      # The true delay model, as generator version 3 recorded it.
      'delay': {'window_shares': list(cfg.world.delay_window_shares),
                'window_scale_hours': list(cfg.world.delay_window_scale_hours)},
  }


def spec_hash(cfg: config_lib.Config) -> str:
  """SHA-256 of the world's parameters except its seed and size: the same for
  every world a benchmark draws from one spec."""
  params = _world_params(cfg)
  params['world'] = {k: v for k, v in params['world'].items()
                     if k not in ('seed', 'num_clicks')}
  return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def generate(cfg: config_lib.Config, out_dir: str, log=print,
             log_days: bool = True) -> Dict:
  """Generates the world into `out_dir` (replaced atomically) and returns the manifest.

  `log` gets a line per day (with `log_days`) and a last line of totals.

  Memory is flat in the number of clicks: clicks are made and written one chunk
  at a time, and conversions go straight to open per-date writers.
  """
  w = cfg.world
  world = World(cfg)
  start = int(w.start().timestamp())
  end = start + w.days * SECONDS_PER_DAY
  horizon = end + w.conversion_horizon_days * SECONDS_PER_DAY
  tmp = out_dir.rstrip('/') + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  writers: Dict[datetime.date, 'tf.io.TFRecordWriter'] = {}
  stats = {'clicks': 0, 'true_conversions': 0, 'observed_conversions': 0,
           'logged_conversions': 0, 'conversions_after_horizon': 0,
           'panel_clicks': 0}
  clicks_per_day = _daily_counts(w.num_clicks, w.days)
  log_columns = [c.name for c in cfg.dataset.click_log_columns()]
  t0 = time.time()
  next_id = 0
  next_conversion_id = 0

  def close_before(day: datetime.date):
    for d in [d for d in writers if d < day]:
      writers.pop(d).close()

  for day_index, n_day in enumerate(clicks_per_day):
    day_start = start + day_index * SECONDS_PER_DAY
    day = datetime.datetime.fromtimestamp(day_start, datetime.timezone.utc).date()
    close_before(day)  # no later click converts before its own day
    click_dir = layout.partition_path(tmp, layout.CLICKS, day)
    os.makedirs(click_dir, exist_ok=True)
    for part, lo in enumerate(range(0, int(n_day), w.chunk_size)):
      n = min(w.chunk_size, int(n_day) - lo)
      rng = np.random.default_rng([w.seed, 1, day_index, part])
      clicks = world.clicks(rng, n, day_start, next_id,
                            np.random.default_rng([w.seed, 5, day_index, part]))
      next_id += n
      convs = world.conversions(rng, clicks)
      path = os.path.join(click_dir, f'part-{part:05d}.tfrecord.gz')
      with tf.io.TFRecordWriter(path, options='GZIP') as writer:
        for record in codec.encode({c: clicks[c] for c in log_columns}):
          writer.write(record)
      stats['clicks'] += n
      stats['panel_clicks'] += int(clicks[IN_PANEL].sum())
      stats['true_conversions'] += len(convs[columns.CONVERSION_TS])
      observed = convs['observed']
      stats['observed_conversions'] += int(observed.sum())
      keep = observed & (convs[columns.CONVERSION_TS] < horizon)
      stats['conversions_after_horizon'] += int((observed & ~keep).sum())
      conv_ts = convs[columns.CONVERSION_TS][keep]
      conv_id = convs[columns.CLICK_ID][keep]
      order = np.argsort(conv_ts, kind='stable')
      conv_ts, conv_id = conv_ts[order], conv_id[order]
      conv_day = (conv_ts - start) // SECONDS_PER_DAY
      for d in np.unique(conv_day):
        sel = conv_day == d
        date = (w.start() + datetime.timedelta(days=int(d))).date()
        if date not in writers:
          conv_dir = layout.partition_path(tmp, layout.CONVERSIONS, date)
          os.makedirs(conv_dir, exist_ok=True)
          writers[date] = tf.io.TFRecordWriter(
              os.path.join(conv_dir, 'part-00000.tfrecord.gz'), options='GZIP')
        n_sel = int(sel.sum())
        ids = np.arange(next_conversion_id, next_conversion_id + n_sel, dtype=np.int64)
        next_conversion_id += n_sel
        for record in codec.encode({columns.CONVERSION_ID: ids,
                                    columns.CLICK_ID: conv_id[sel],
                                    columns.CONVERSION_TS: conv_ts[sel]}):
          writers[date].write(record)
        stats['logged_conversions'] += int(sel.sum())
    if log_days:
      log(f'  {day}: {int(n_day)} clicks')
  close_before(datetime.date.max)
  # Every day of the conversion log has a partition, empty or not, so a missing
  # partition always means a missing upload.
  for d in range((horizon - start) // SECONDS_PER_DAY):
    conv_dir = layout.partition_path(tmp, layout.CONVERSIONS,
                             (w.start() + datetime.timedelta(days=d)).date())
    if not os.path.exists(conv_dir):
      os.makedirs(conv_dir)
      tf.io.TFRecordWriter(os.path.join(conv_dir, 'part-00000.tfrecord.gz'),
                           options='GZIP').close()
  # Each partition's marker comes after its files, as an upload job would write
  # it: the ExampleGen refuses a partition without one (a half-written day).
  for log_name in layout.LOGS:
    for name in os.listdir(os.path.join(tmp, log_name)):
      with open(os.path.join(tmp, log_name, name, layout.COMPLETE_MARKER), 'w'):
        pass

  files = []
  for root, _, names in sorted(os.walk(tmp)):
    for name in sorted(names):
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      files.append({'path': os.path.relpath(path, tmp), 'sha256': digest})
  manifest = {
      **_world_params(cfg),
      'start': datetime.datetime.fromtimestamp(start, datetime.timezone.utc).isoformat(),
      'end': datetime.datetime.fromtimestamp(end, datetime.timezone.utc).isoformat(),
      'counts': stats,
      # What a measurement study would tell the pipeline (the spec, "What the
      # pipeline may know").
      'observability_priors': world.observability_priors(),
      'files': files,
  }
  with open(os.path.join(tmp, MANIFEST), 'w') as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
  shutil.rmtree(out_dir, ignore_errors=True)
  os.replace(tmp, out_dir)
  log(f'wrote {stats["clicks"]} clicks and {stats["logged_conversions"]} reported '
      f'conversions to {out_dir} in {time.time() - t0:.1f}s')
  return manifest


def read_manifest(out_dir: str) -> Optional[Dict]:
  path = os.path.join(out_dir, MANIFEST)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m world.generator',
      description='Generate the synthetic click and conversion logs '
      '(docs/architecture.md §3).')
  parser.add_argument('--config', help='YAML config (defaults apply without one)')
  parser.add_argument('--set', dest='overrides', action='append', default=[],
                      metavar='KEY=VALUE',
                      help='override a config key, e.g. world.num_clicks=1000000')
  parser.add_argument('--out', help='output directory (default: paths.data_root)')
  parser.add_argument('--if-absent', action='store_true',
                      help='do nothing if the same world is already there')
  parser.add_argument('--force', action='store_true',
                      help='replace a different world at the output directory')
  parser.add_argument('--verbose', action='store_true',
                      help='a line per generated day (default: the totals only)')
  args = parser.parse_args(argv)
  try:
    cfg = config_lib.load_config(args.config, args.overrides)
  except config_lib.ConfigError as e:
    parser.exit(2, f'error: {e}\n')
  if not cfg.dataset.truth:
    # `make run` on a team's own logs: there is nothing to generate.
    print(f'dataset {cfg.dataset.name} is not the synthetic world; nothing to '
          f'generate (its logs: {cfg.paths.data_root or cfg.dataset.source.format})')
    return 0
  out = args.out or cfg.paths.data_root
  existing = read_manifest(out)
  if existing is not None and not args.force:
    same = {k: existing.get(k) for k in _world_params(cfg)} == json.loads(
        json.dumps(_world_params(cfg)))
    if same and args.if_absent:
      print(f'{out} already holds this world (seed {cfg.world.seed}, '
            f'{cfg.world.num_clicks} clicks); nothing to do')
      return 0
    if not same:
      parser.exit(2, f'error: {out} holds a different world; remove it or pass '
                  '--force to replace it\n')
  elif os.path.exists(out) and existing is None and os.listdir(out) and not args.force:
    parser.exit(2, f'error: {out} exists and is not a generated world; remove it '
                'or pass --force\n')
  generate(cfg, out, log_days=args.verbose)
  return 0


if __name__ == '__main__':
  sys.exit(main())
