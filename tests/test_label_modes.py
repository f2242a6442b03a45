"""Real-log label modes against the truth (issue 14, deliverable 7): on the
observability world the panel mode is unbiased for the true totals and
observed_observable is not; the TeacherGate's panel calibration is the teacher's
calibration."""

import numpy as np
import pytest

import config as config_lib
from observation import eval_labels
from observation import labels
from schemas import columns
from tests.test_observability_world import draw
from world import synthetic


@pytest.fixture(scope='module')
def joined():
  """Clicks of one day of a heterogeneity-1 world with a 20% panel (a large
  panel only for sampling error), joined as of T two days after the day's end,
  with the true total rate."""
  world, clicks, convs = draw(1.0, panel_share=0.2, n=200_000, seed=7)
  cfg = world.cfg
  t = int(cfg.world.start().timestamp()) + 3 * 86400
  logged = convs['observed']  # the conversion log holds the observed ones
  spec = cfg.label_spec()
  rows = labels.labels_as_of(clicks, convs[columns.CLICK_ID][logged],
                             convs[columns.CONVERSION_TS][logged], t, spec,
                             labels.prior_delay(spec))
  rows[synthetic.IN_PANEL] = clicks[synthetic.IN_PANEL]
  rate = sum(clicks[c].astype(np.float64) for c in synthetic.TRUE_RATES)
  return cfg, rows, rate


def _ratio(cfg, rows, rate, mode):
  """sum(label) / sum(E[label] under the true rate) over the mode's clicks."""
  label, scale, keep = cfg.eval_label_spec(mode).label_and_scale(rows)
  return label[keep].sum() / (scale[keep] * rate[keep]).sum(), label[keep].sum()


def test_the_panel_mode_is_unbiased_for_the_true_totals(joined):
  cfg, rows, rate = joined
  ratio, n = _ratio(cfg, rows, rate, 'panel')
  assert n > 1000
  # Poisson noise, plus how far the clicks' window split differs from the
  # average shares the one-output score assumes (a few percent).
  assert abs(ratio - 1) < 3 / np.sqrt(n) + 0.03, (ratio, n)


def test_observed_observable_under_counts_where_consent_and_tags_hide_conversions(
    joined):
  cfg, rows, rate = joined
  ratio, n = _ratio(cfg, rows, rate, 'observed_observable')
  assert n > 1000
  # Consent and tag coverage hide conversions of fully observed browsers too.
  assert ratio < 0.85, ratio


def test_the_panel_mode_needs_the_panel_column():
  available = list(synthetic.LABELS + synthetic.EXPOSURES) + [columns.MATURITY]
  with pytest.raises(ValueError, match='in_panel'):
    eval_labels.resolve('panel', available, synthetic.WINDOW_NAMES, synthetic.IN_PANEL)
  with pytest.raises(ValueError, match='needs a panel column'):
    eval_labels.resolve('panel', available, synthetic.WINDOW_NAMES, '')
  assert eval_labels.resolve('panel', available + [synthetic.IN_PANEL],
                             synthetic.WINDOW_NAMES, synthetic.IN_PANEL) == 'panel'
