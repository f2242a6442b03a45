"""The quality benchmark's scoring and README tables, on saved predictions with a
known answer (issue 13). The training side is the pipeline's own run_fn, tested
elsewhere; here the numbers a reader sees are checked."""

import json
import os

import numpy as np
import pytest

from bench import quality_report
from bench import readme
from schemas import columns
from world import synthetic

N = 6000
SEEDS, AA_SEEDS = [0, 1], [2, 3]
RECIPES = ['production', 'offset', 'kd_full']
SCALE = {'production': 0.7, 'offset': 1.0, 'kd_full': 1.0}
TEACHER_WINDOW_SCALE = (1.0, 1.0, 1.2)


def _world(path, seed):
  rng = np.random.default_rng(seed)
  shares = np.array([0.5, 0.3, 0.2])
  total = np.exp(-3.0 + 0.8 * rng.standard_normal(N))
  rows = {synthetic.TRUE_RATES[w]: (total * shares[w]).astype(np.float32)
          for w in range(3)}
  rate = sum(rows[c].astype(np.float64) for c in synthetic.TRUE_RATES)
  rows[columns.TRUE_CONVERSIONS] = rng.poisson(rate)
  rows['serving_rate'] = rate * np.exp(0.1 * rng.standard_normal(N))
  rows[quality_report.SLICE_PREFIX + 'tcpa_gt_250'] = rng.random(N) < 0.1
  rows[quality_report.SLICE_PREFIX + 'low_observability'] = rng.random(N) < 0.4
  os.makedirs(os.path.join(path, 'predictions'))
  np.savez(os.path.join(path, 'scoring.npz'), **rows)

  def save(name, pred):
    np.save(os.path.join(path, 'predictions', name + '.npy'), pred.astype(np.float32))
  teacher = np.stack([rows[c] * k for c, k in zip(synthetic.TRUE_RATES,
                                                  TEACHER_WINDOW_SCALE)], 1)
  save('teacher', teacher.sum(1))
  save('teacher_windows', teacher)
  save('glm', rate * np.exp(0.5 * rng.standard_normal(N)))
  save('lgbm', rate * np.exp(0.4 * rng.standard_normal(N)))
  for recipe in RECIPES:
    for s in SEEDS + AA_SEEDS:
      noise = 0.2 if recipe != 'kd_full' else 0.15
      pred = SCALE[recipe] * rate * np.exp(noise * rng.standard_normal(N))
      save(f'{recipe}-s{s}-float', pred)
      save(f'{recipe}-s{s}-int8', pred * (1 + 0.01 * rng.standard_normal(N)))
      if recipe == 'kd_full' and s == SEEDS[0]:
        save(f'{recipe}-s{s}r-float', pred)  # trained again, reproduced exactly


@pytest.fixture(scope='module')
def result(tmp_path_factory):
  root = tmp_path_factory.mktemp('quality')
  dirs = []
  for w in range(4):
    dirs.append(str(root / f'world-{w}'))
    _world(dirs[-1], w)
  out = quality_report.build(dirs, RECIPES, SEEDS, AA_SEEDS, 'kd_full',
                             repeat='kd_full-s0r')
  out.update({'size': {'clicks': 1000}, 'world_seeds': [0, 1, 2, 3],
              'training_seeds': SEEDS})
  return json.loads(json.dumps(out))  # what the committed JSON holds


def test_the_floor_has_no_excess_risk_and_models_are_scored_per_slice(result):
  floor = result['models']['floor']
  for s in quality_report.SLICES:
    assert floor[s]['excess_risk']['mean'] == pytest.approx(0.0, abs=1e-12)
    assert floor[s]['calibration']['mean'] == pytest.approx(1.0, rel=1e-6)
  assert result['models']['kd_full']['overall']['excess_risk']['mean'] > 0
  assert set(result['models']) >= {'glm', 'lgbm', 'teacher', 'kd_full_int8'}


def test_calibration_and_recalibration_separate_bias_from_ranking(result):
  prod = result['models']['production']['overall']
  assert prod['calibration']['mean'] == pytest.approx(0.7 * np.exp(0.02), rel=0.03)
  # A global factor removes the bias; only the ranking noise is left.
  assert prod['recalibrated_excess_risk']['mean'] < 0.5 * prod['excess_risk']['mean']
  offset = result['models']['offset']['overall']
  assert prod['recalibrated_excess_risk']['mean'] == pytest.approx(
      offset['recalibrated_excess_risk']['mean'], rel=0.1)


def test_paired_differences_carry_cis_that_order_real_effects(result):
  d = result['vs_production']['offset']['overall']['excess_risk']
  lo, hi = d['ci95']
  assert lo <= d['mean'] <= hi < 0  # the offset student is really better
  kd = result['vs_offset']['kd_full']['overall']['excess_risk']
  assert kd['ci95'][1] < 0  # less noise than the offset student
  # Against the tabular peer too (one LightGBM per world, every seed paired to it).
  assert result['vs_lgbm']['kd_full']['overall']['excess_risk']['ci95'][1] < 0
  gap = result['models']['offset']['overall']['gap_closed']
  assert 0 < gap['mean'] <= 1.5


def test_kd_is_compared_with_the_best_teacher_free_student(result):
  """Offset (unbiased) beats production (0.7x), so it is the reference; the
  table across heterogeneity levels shows that comparison per level."""
  best = result['vs_best_teacher_free']
  assert best['reference'] == 'offset'
  assert best['overall'] == result['vs_offset']['kd_full']['overall']
  text = quality_report.heterogeneity_markdown({'0.5': result, '0': result})
  rows = [l for l in text.splitlines() if l.startswith('| 0')]
  assert [r.split(' | ')[0] for r in rows] == ['| 0', '| 0.5']  # ordered by h
  want = quality_report._pct(best['overall']['excess_risk'])
  assert f'{want} (offset)' in rows[0] and 'not measured' in rows[0]
  # Each level says how its teacher set its offsets, and at which commit.
  calibrated = dict(result, git_sha='abcdef0123',
                    config={'model': {'teacher_panel_calibration': True}})
  text = quality_report.heterogeneity_markdown({'1': calibrated})
  assert text.splitlines()[-1].endswith('| panel-calibrated | abcdef0 |')


def test_aa_row_contains_zero(result):
  aa = result['aa']
  assert aa['other_seeds'] == AA_SEEDS
  for s in quality_report.SLICES:
    lo, hi = aa[s]['excess_risk']['ci95']
    assert lo <= 0 <= hi, (s, lo, hi)


def test_reproducibility_compares_the_model_trained_twice(result):
  rep = result['reproducibility']
  assert rep['identical'] and rep['max_relative_prediction_difference'] == 0.0
  assert rep['models'] == ['kd_full-s0-float', 'kd_full-s0r-float']


def test_teacher_calibration_is_reported_per_window(result):
  cal = result['teacher_calibration']['mean']
  for name, k in zip(synthetic.WINDOW_NAMES, TEACHER_WINDOW_SCALE):
    assert cal[name]['mean'] == pytest.approx(k, rel=1e-5)
  assert len(result['teacher_calibration']['per_world']) == 4


def test_readme_table_is_generated_from_the_json(result, tmp_path):
  path = tmp_path / 'quality.json'
  path.write_text(json.dumps(result))
  tables = {'quality': (str(path), quality_report.markdown)}
  text = 'intro\n' + readme.block('quality', 'stale') + '\noutro\n'
  new = readme.render(text, tables)
  assert new.startswith('intro\n') and new.endswith('\noutro\n')
  assert 'stale' not in new
  assert quality_report.label('kd_full_int8') in new
  # Every number comes from the JSON: the offset row's excess-risk change.
  d = result['vs_production']['offset']['overall']['excess_risk']
  assert f'{100 * d["mean"]:+.2f}%' in new
  assert readme.render(new, tables) == new
  with pytest.raises(ValueError, match='quality:begin'):
    readme.render('no markers', tables)


def test_committed_docs_match_their_sources():
  """README.md's headline, docs/benchmarks.md and docs/configuration.md."""
  assert set(readme.DOCS) == {readme.README, readme.BENCHMARKS, readme.CONFIGURATION}
  assert readme.main(['--check']) == 0


def test_check_names_the_file_and_block_that_drifted(result, tmp_path, capsys):
  path = tmp_path / 'quality.json'
  path.write_text(json.dumps(result))
  tables = {'quality': (str(path), quality_report.markdown)}
  doc = tmp_path / 'benchmarks.md'
  doc.write_text('intro\n' + readme.block('quality', 'stale') + '\n')
  docs = {str(doc): tables}
  assert readme.main(['--check'], docs=docs) == 1
  err = capsys.readouterr().err
  assert str(doc) in err and 'quality:begin' in err
  assert 'stale' in doc.read_text()  # --check writes nothing
  assert readme.main([], docs=docs) == 0
  assert readme.main(['--check'], docs=docs) == 0
  # A changed result is drift too.
  changed = json.loads(json.dumps(result))
  changed['vs_production']['offset']['overall']['excess_risk']['mean'] += 0.01
  path.write_text(json.dumps(changed))
  assert readme.main(['--check'], docs=docs) == 1
  # So is a block missing from the document.
  doc.write_text('no block\n')
  assert readme.main(['--check'], docs=docs) == 1
  assert 'quality:begin' in capsys.readouterr().err


def test_a_missing_json_leaves_a_note_naming_its_make_target(tmp_path):
  tables = {'promotion': (str(tmp_path / 'promotion.json'), None)}
  text = readme.render('a\n' + readme.block('promotion', 'old') + '\n', tables)
  assert readme.block('promotion', 'Not yet run: make bench-promotion.') in text
  assert readme.render('<!-- promotion:begin -->\n<!-- promotion:end -->', tables) == \
      readme.block('promotion', 'Not yet run: make bench-promotion.')


def test_the_headline_says_which_world_each_figure_is_from(result):
  overrides = {'world.observability_heterogeneity': 1.0, 'world.panel_share': 0.03}
  text = readme.headline({'quality': result}, overrides)
  d = result['vs_production']['kd_full']['overall']['excess_risk']
  assert f'{100 * d["mean"]:+.1f}%' in text
  assert 'per-browser world' in text and 'the default world is the observability' in text
  assert 'not yet run: make bench-promotion' in text
  on_default = readme.headline({'quality': result}, {})
  assert 'on the default world, the per-browser world' in on_default


def test_the_configuration_reference_has_every_key_and_default_yaml(tmp_path):
  from config import reference  # pylint: disable=g-import-not-at-top
  from config import schema  # pylint: disable=g-import-not-at-top
  text = reference.markdown({'window.eval_days': 2})
  assert '| `window.eval_days` | `1` | `2` | >= 1 | E: the last E days are the eval split |' \
      in text
  # Every leaf key of the tree, its comment included.
  assert '`model.student.train_steps`' in text and '`vertex.schedule.cron`' in text
  assert 'TFX caching. Off by default' in text
  for f in schema.dataclasses.fields(schema.PromotionConfig):
    assert f'`promotion.{f.name}`' in text
  with pytest.raises(ValueError, match='window.no_such_key'):
    reference.markdown({'window.no_such_key': 1})


def test_teacher_fit_separates_label_noise_from_the_teachers_own_fit(tmp_path):
  """On the clicks the teacher trained on: its fit to its labels and their noise."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import config as config_lib  # pylint: disable=g-import-not-at-top
  from bench import quality_bench  # pylint: disable=g-import-not-at-top
  from schemas import codec  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  n, snap = 20_000, 1_000_000
  cfg = config_lib.load_config(None, ['window.teacher_lag_hours=40'])
  rows = {columns.CLICK_TS: rng.integers(snap - 20 * 86400, snap, n),
          columns.SNAPSHOT_TS: np.full(n, snap, np.int64),
          columns.OBSERVED_FRACTION: rng.choice([0.5, 1.0], n).astype(np.float32)}
  for label, exposure, teacher, true in zip(synthetic.LABELS, synthetic.EXPOSURES,
                                            synthetic.TEACHER_RATES, synthetic.TRUE_RATES):
    lam = rng.uniform(0.01, 0.1, n)
    rows[true] = lam.astype(np.float32)
    rows[exposure] = rng.uniform(0, 1, n).astype(np.float32)
    rows[label] = rng.poisson(lam * rows[exposure] * rows[columns.OBSERVED_FRACTION])
    rows[exposure.replace('exposure', 'observed_exposure')] = (
        rows[exposure] * rows[columns.OBSERVED_FRACTION])
    rows[teacher] = (1.1 * lam).astype(np.float32)  # 10% over everywhere
  split = tmp_path / 'Split-train'
  split.mkdir()
  with tf.io.TFRecordWriter(str(split / 'data.gz'), options='GZIP') as w:
    for record in codec.encode(rows):
      w.write(record)
  fit = quality_bench.teacher_fit(cfg, str(tmp_path))
  keep = rows[columns.CLICK_TS] <= snap - 40 * 3600
  for name, label in zip(synthetic.WINDOW_NAMES, synthetic.LABELS):
    f = fit[name]
    assert f['conversions'] == rows[label][keep].sum()
    assert f['calibration'] == pytest.approx(1.1, rel=1e-5)
    # A uniform error: calibration = fit to labels x labels vs truth (noise).
    assert f['fit_to_labels'] * f['labels_vs_truth'] == pytest.approx(
        f['calibration'], rel=1e-6)
    assert abs(f['labels_vs_truth'] - 1) < 4 / np.sqrt(f['conversions'])


def test_calibration_by_slice_follows_each_group(tmp_path):
  """A model biased by region and by expected observability shows that bias in
  exactly those rows; the table comes before the first KD number."""
  rng = np.random.default_rng(9)
  n = 4000
  rate = np.exp(-3.0 + 0.5 * rng.standard_normal(n))
  rows = {synthetic.TRUE_RATES[0]: rate.astype(np.float32),
          synthetic.TRUE_RATES[1]: np.zeros(n, np.float32),
          synthetic.TRUE_RATES[2]: np.zeros(n, np.float32),
          columns.TRUE_CONVERSIONS: rng.poisson(rate),
          synthetic.BROWSER: rng.integers(0, 5, n),
          'country': rng.integers(0, 32, n),
          synthetic.ADVERTISER_FIRST_PARTY: rng.integers(0, 2, n),
          quality_report.EXPECTED_OBSERVABILITY: rng.random(n),
          'advertiser_id': rng.integers(0, 100, n)}
  for name in quality_report.SLICES[1:]:
    rows[quality_report.SLICE_PREFIX + name] = np.zeros(n, bool)
  os.makedirs(tmp_path / 'predictions')
  np.savez(tmp_path / 'scoring.npz', **rows)
  region = rows['country'] % 2 == 1  # consent required (odd country ids)
  low = rows[quality_report.EXPECTED_OBSERVABILITY] < 0.2
  pred = rate * np.where(region, 0.8, 1.0) * np.where(low, 0.5, 1.0)
  np.save(tmp_path / 'predictions' / 'offset-s0-float.npy', pred)
  world = quality_report.World(str(tmp_path))
  cal = quality_report.calibration_by_slice([world], ['offset'], [0])['offset']
  want = lambda mask: pred[mask].sum() / rate[mask].sum()
  got = cal['region']['consent_required']['mean']
  assert got == pytest.approx(want(region)) and got < 0.8
  assert cal['region']['no_banner']['mean'] == pytest.approx(
      want((rows['country'] % 2 == 0) & (rows['country'] > 0)))
  q1 = cal['expected_observability']['Q1']
  assert q1['mean'] == pytest.approx(want(low), rel=0.02) and q1['mean'] < 0.5
  assert set(cal) == {'browser', 'region', 'first_party', 'expected_observability',
                      'advertiser_decile'}
  # Advertisers ranked by their mean expected observability, ten to a decile.
  groups = quality_report.calibration_groups(rows)['advertiser_decile']
  adv = rows['advertiser_id']
  means = {a: rows[quality_report.EXPECTED_OBSERVABILITY][adv == a].mean()
           for a in np.unique(adv)}
  lowest = sorted(means, key=means.get)[:10]
  np.testing.assert_array_equal(groups['D1'], np.isin(adv, lowest))
  lines = quality_report._calibration_markdown(
      {'calibration_by_slice': {'offset': cal}})
  assert lines[0].startswith('**Calibration by slice**')
  assert any(l.startswith('| region: consent_required | ') for l in lines)


def test_markdown_has_no_calibration_table_for_results_before_the_world(result):
  text = quality_report.markdown({k: v for k, v in result.items()
                                  if k != 'calibration_by_slice'})
  assert 'Calibration by slice' not in text
  assert 'Calibration by slice' in quality_report.markdown(result)


def test_observability_errors_weigh_by_true_rate_and_skip_the_panel():
  """A teacher exact on region 'consent_required' and the prior off by 0.2
  there: the table shows it in exactly that slice; panel clicks do not count."""
  rng = np.random.default_rng(4)
  n = 3000
  W = len(synthetic.WINDOW_NAMES)
  truth = rng.uniform(0.2, 0.9, (n, W))
  rate = rng.gamma(1.0, 0.05, (n, W))
  rows = {synthetic.IN_PANEL: (np.arange(n) % 10 == 0).astype(np.int64),
          synthetic.BROWSER: rng.integers(0, 5, n),
          'country': rng.integers(0, 32, n),
          synthetic.ADVERTISER_FIRST_PARTY: rng.integers(0, 2, n)}
  for i in range(W):
    rows[synthetic.TRUE_OBSERVABILITY[i]] = truth[:, i]
    rows[synthetic.TRUE_RATES[i]] = rate[:, i]
  consent = rows['country'] % 2 == 1
  teacher = np.where(consent[:, None], truth, truth + 0.1)
  prior = truth + 0.2
  panel = rows[synthetic.IN_PANEL] == 1
  teacher[panel] = 5.0  # ignored: the panel is fully observed by definition
  got = quality_report.observability_errors(rows, teacher, prior)
  assert got['region']['consent_required']['teacher'] == pytest.approx(0.0, abs=1e-12)
  assert got['region']['consent_required']['prior'] == pytest.approx(0.2)
  keep = ~panel
  want = (rate[keep] * np.abs(teacher[keep] - truth[keep])).sum() / rate[keep].sum()
  assert got['overall']['all clicks']['teacher'] == pytest.approx(want)
  assert got['overall']['all clicks']['clicks'] == int(keep.sum())
  lines = quality_report.observability_table([got, got])
  assert any(l.startswith('| region: consent_required | 0.0000 | 0.2000 | 0.000 ')
             for l in lines), lines


def test_observability_rmse_against_the_expectation_is_proper():
  """Per-click truth = a 0/1 hidden consent times 0.8, consent with probability
  0.7: an estimator exact in expectation (0.56) loses to the mode (0.8) on the
  mean absolute error against the truth and wins on the RMSE against the
  expectation, the score the table leads with."""
  rng = np.random.default_rng(5)
  n = 20000
  W = len(synthetic.WINDOW_NAMES)
  consent = rng.uniform(size=(n, 1)) < 0.7
  truth = np.repeat(0.8 * consent, W, 1)
  rows = {synthetic.IN_PANEL: np.zeros(n, np.int64)}
  for i in range(W):
    rows[synthetic.TRUE_OBSERVABILITY[i]] = truth[:, i]
    rows[synthetic.TRUE_RATES[i]] = np.ones(n)
  expected = np.full((n, W), 0.56)
  got = quality_report.observability_errors(rows, expected, np.full((n, W), 0.8),
                                            expected)['overall']['all clicks']
  assert got['teacher'] > got['prior']  # the improper score picks the mode
  assert got['teacher_rmse'] == pytest.approx(0.0)
  assert got['prior_rmse'] == pytest.approx(0.24)
  lines = quality_report.observability_table([{'overall': {'all clicks': got}}] * 2)
  assert 'RMSE' in lines[0] and lines[2].count('|') == 8, lines
