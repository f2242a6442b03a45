"""The observability world's mechanisms (docs/observability-world.md, spec version 1).

Pure numpy: the generator draws each conversion's report with probability

  p = 1                                   for a click in the measurement panel,
  p = (1 - h) * f_b + h * p_mech(click, d) otherwise,

  p_mech = r_b * consent(click) * tag(advertiser) * cookie(click, d),

where h is `world.observability_heterogeneity`. The parameters are frozen in `SPEC`;
its fields enter the world's spec hash, so a benchmark result names the spec it ran on.
"""

import dataclasses
from typing import Dict, Tuple

import numpy as np

# Privacy regions of a country (by its id; see `region_of_country`).
CONSENT_REQUIRED, OPT_OUT, NO_BANNER = 0, 1, 2
REGION_NAMES = ('consent_required', 'opt_out', 'no_banner')


@dataclasses.dataclass(frozen=True)
class ObservabilitySpec:
  """The frozen parameters of the mechanisms (sources in the spec document)."""
  version: int = 1
  # Consent: sigmoid(logit(median) + spread * z_a), per region.
  consent_median: Tuple[float, float, float] = (0.60, 0.93, 1.0)
  consent_spread: Tuple[float, float, float] = (1.2, 0.5, 0.0)
  # Cookie caps (hours) of the capped browsers, by browser id.
  capped_browsers: Tuple[int, ...] = (2,)  # safari
  cap_hours: float = 168.0  # ITP 2.1: script-set cookies expire after 7 days
  decorated_cap_hours: float = 24.0  # ITP 2.2: after a decorated navigation
  decorated_share: float = 0.90
  revisit_share: float = 0.15  # conversions beyond the cap still attributed
  first_party_share: float = 0.30
  tag_beta: Tuple[float, float] = (9.0, 1.0)


SPEC = ObservabilitySpec()


def region_of_country(country) -> np.ndarray:
  """Privacy region of each country id: odd ids require consent, id 0 has an
  opt-out regime, other even ids show no banner."""
  c = np.asarray(country, dtype=np.int64)
  return np.where(c % 2 == 1, CONSENT_REQUIRED,
                  np.where(c == 0, OPT_OUT, NO_BANNER)).astype(np.int64)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
  p = np.clip(p, 1e-12, 1 - 1e-12)
  return np.log(p) - np.log1p(-p)


@dataclasses.dataclass(frozen=True)
class AdvertiserTables:
  """Per-advertiser state: the first-party flag is a serving feature; the consent
  design effect and the tag coverage are hidden."""
  first_party: np.ndarray  # int64 [A] 0/1
  consent_z: np.ndarray  # float64 [A]
  tag_coverage: np.ndarray  # float64 [A]

  def consent_rate(self, advertiser, country, spec: ObservabilitySpec = SPEC
                   ) -> np.ndarray:
    """P(the click's user consents on the advertiser's site)."""
    region = region_of_country(country)
    median = np.asarray(spec.consent_median)[region]
    spread = np.asarray(spec.consent_spread)[region]
    rate = _sigmoid(_logit(median) + spread * self.consent_z[advertiser])
    return np.where(median >= 1.0, 1.0, rate)


def advertiser_tables(rng: np.random.Generator, n_advertisers: int,
                      spec: ObservabilitySpec = SPEC) -> AdvertiserTables:
  """Draws the per-advertiser tables (stream [seed, 6])."""
  return AdvertiserTables(
      first_party=(rng.random(n_advertisers) < spec.first_party_share).astype(np.int64),
      consent_z=rng.standard_normal(n_advertisers),
      tag_coverage=rng.beta(spec.tag_beta[0], spec.tag_beta[1], n_advertisers))


def click_latents(rng: np.random.Generator, n: int, consent_rate: np.ndarray,
                  panel_share: float, spec: ObservabilitySpec = SPEC
                  ) -> Dict[str, np.ndarray]:
  """Per-click hidden state (stream [seed, 5, day, part]).

  The same number of uniforms is drawn whatever the knob and the panel share, so
  neither changes another click's state.
  """
  u = rng.random((n, 3))
  return {
      'consent': (u[:, 0] < consent_rate).astype(np.int64),
      'decorated': (u[:, 1] < spec.decorated_share).astype(np.int64),
      'in_panel': (u[:, 2] < panel_share).astype(np.int64),
  }


def cap_hours(browser, first_party, decorated, spec: ObservabilitySpec = SPEC
              ) -> np.ndarray:
  """The cookie cap in hours per click (inf where there is none)."""
  capped = np.isin(np.asarray(browser), spec.capped_browsers) & (
      np.asarray(first_party) == 0)
  cap = np.where(np.asarray(decorated) == 1, spec.decorated_cap_hours, spec.cap_hours)
  return np.where(capped, cap, np.inf)


def cookie_survival(delay_hours, cap, spec: ObservabilitySpec = SPEC) -> np.ndarray:
  """P(the click's cookie is still there `delay_hours` after it)."""
  return np.where(np.asarray(delay_hours) < cap, 1.0, spec.revisit_share)


def window_survival(delay_model, cap, spec: ObservabilitySpec = SPEC) -> np.ndarray:
  """[n, W]: mean cookie survival over the delay distribution inside each window."""
  cap = np.asarray(cap, dtype=np.float64)
  finite = np.isfinite(cap)
  before = np.ones((len(cap), len(delay_model.windows)))
  if finite.any():
    before[finite] = delay_model.exposures(cap[finite])  # P(d <= cap | window)
  return before + spec.revisit_share * (1.0 - before)


def mechanism(residual_b, consent, tag, survival) -> np.ndarray:
  """p_mech given its factors (any broadcastable shapes)."""
  return np.asarray(residual_b) * np.asarray(consent) * np.asarray(tag) * np.asarray(
      survival)


def report_probability(f_b, p_mech, in_panel, heterogeneity: float) -> np.ndarray:
  """The report probability: 1 in the panel, else the knob's mix of f_b and p_mech.

  At heterogeneity 0 it is f_b itself (bit for bit), so the old world's draws are
  reproduced exactly.
  """
  h = float(heterogeneity)
  f_b, p_mech = np.broadcast_arrays(np.asarray(f_b, np.float64),
                                    np.asarray(p_mech, np.float64))
  p = f_b if h == 0.0 else (1.0 - h) * f_b + h * p_mech
  return np.where(np.asarray(in_panel) == 1, 1.0, p)
