"""The typed config: defaults, YAML, overrides, and errors that name the key."""

import dataclasses
import json
import os

import pytest

import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_YAML = os.path.join(ROOT, 'pipeline', 'configs', 'default.yaml')


def test_defaults_are_valid_and_default_yaml_loads():
  cfg = config_lib.load_config(DEFAULT_YAML)
  # default.yaml: two eval days, so the promotion resolves a 5% better
  # candidate; the lag E + 16 h (the schema's defaults are 1 day and 40 h).
  assert cfg.window.days == 28 and cfg.window.eval_days == 2
  assert cfg.window.teacher_lag_hours == 64.0
  assert cfg.model.teacher.hidden_units == [128, 64, 32]
  assert cfg.observability.fractions()[0] == 1.0
  # The product's default world is the observability world at its spec's
  # default (docs/observability-world.md), the pipeline reading its priors.
  assert cfg.world.observability_heterogeneity == 1.0
  assert cfg.world.panel_share == 0.03
  assert cfg.observability.priors_source == 'world_manifest'


def test_yaml_and_overrides(tmp_path):
  path = tmp_path / 'c.yaml'
  path.write_text('window:\n  eval_days: 2\n  teacher_lag_hours: 72\n')
  cfg = config_lib.load_config(str(path), ['window.eval_days=3',
                                           'model.teacher.train_steps=10'])
  assert cfg.window.eval_days == 3
  assert cfg.window.teacher_lag_hours == 72.0
  # A partial section keeps the rest of its own defaults.
  assert cfg.model.teacher.train_steps == 10
  assert cfg.model.teacher.hidden_units == [128, 64, 32]


def test_scientific_notation_is_a_number():
  cfg = config_lib.load_config(None, ['model.student.l2=3e-4',
                                      'model.teacher.learning_rate=1E-3'])
  assert cfg.model.student.l2 == pytest.approx(3e-4)
  assert cfg.model.teacher.learning_rate == pytest.approx(1e-3)
  assert config_lib.parse_override('world.start_date=2026-01-01')[1] == '2026-01-01'


def test_json_round_trip():
  cfg = config_lib.load_config(None, ['window.snapshot_time=2026-02-05T00:00:00Z'])
  again = config_lib.from_json(cfg.to_json())
  # The JSON carries the dataset spec whole, so it names no file to re-read.
  assert again.dataset_file == '' and again.dataset == cfg.dataset
  assert dataclasses.replace(again, dataset_file=cfg.dataset_file) == cfg
  assert json.loads(cfg.to_json())['window']['snapshot_time'].startswith('2026')
  assert again.window.snapshot().isoformat() == '2026-02-05T00:00:00+00:00'


def test_teacher_gate_json_without_calibration_band_loads_the_default():
  # Stored pipelines carry the bar (and the whole config) from before the key.
  old = {'mode': 'truth', 'min_gap_closed': 0.6, 'min_improvement': 0.02}
  bar = config_lib.TeacherGateConfig.from_json(json.dumps(old))
  assert bar.calibration_band == 0.10 and bar.min_gap_closed == 0.6
  assert config_lib.TeacherGateConfig.from_json(bar.to_json()) == bar
  data = json.loads(config_lib.load_config(None).to_json())
  del data['teacher_gate']['calibration_band']
  assert config_lib.from_json(json.dumps(data)).teacher_gate.calibration_band == 0.10
  cfg = config_lib.load_config(None, ['teacher_gate.calibration_band=0'])
  assert cfg.teacher_gate.calibration_band == 0.0


@pytest.mark.parametrize('override, message', [
    ('world.foo=1', 'unknown config key world.foo'),
    ('windw.days=3', 'unknown config key windw'),
    ('window.eval_days=abc', "window.eval_days: expected an integer, got 'abc'"),
    ('window.eval_days=1.5', 'window.eval_days: expected an integer'),
    ('window.teacher_lag_hours=-1', 'window.teacher_lag_hours: -1.0 is out of range'),
    ('world.mobile_share=1.5', 'world.mobile_share: 1.5 is out of range'),
    ('observability.browsers=[{id: 0, name: a, observed_fraction: 1.5}]',
     'observability.browsers[0].observed_fraction: 1.5 is out of range'),
    ('observability.browsers=[{id: 0, name: a, observed_fraction: 0}]',
     'observed_fraction: 0.0 is out of range (must be > 0.0)'),
    ('window.eval_days=28', 'window.eval_days: 28 must be smaller than window.days'),
    ('window.snapshot_time=yesterday', 'window.snapshot_time'),
    ('window.snapshot_policy=sometimes', 'window.snapshot_policy'),
    ('world.delay_window_shares=[0.5, 0.6, 0.1]', 'world.delay_window_shares: must be'),
    ('world.start_date=2026-13-01', 'world.start_date'),
    ('model.teacher.hint_layer=0', 'model.teacher.hidden_units[0]'),
    ('model.student.hint_layer=5', 'model.student.hint_layer'),
    ('world.browser_shares_mobile=[0.5, 0.5]', 'world.browser_shares_mobile'),
    ('world.num_clicks=true', 'world.num_clicks: expected an integer'),
    ('model.student.hidden_units=[64, 0]', 'model.student.hidden_units'),
    ('teacher_gate.calibration_band=-0.1',
     'teacher_gate.calibration_band: -0.1 is out of range (must be >= 0.0)'),
    ('teacher_gate.calibration_band=1',
     'teacher_gate.calibration_band: 1.0 is out of range (must be < 1.0)'),
    ('pruning.target_sparsity=1', 'pruning.target_sparsity: 1.0 is out of range'),
    ('pruning.schedule=cubic', 'pruning.schedule'),
    ('pruning.end_fraction=0', 'pruning.end_fraction: 0.0 must be above '
     'pruning.begin_fraction'),
    ('pruning.layers=[dense_*, dense_7]',
     "pruning.layers[1]: 'dense_7' matches none of the student's Dense layers"),
    ('pruning.layers=[]', 'pruning.layers: name at least one Dense layer'),
])
def test_bad_values_name_the_key(override, message):
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.load_config(None, [override])
  assert message in str(e.value)
  assert '\n' not in str(e.value)


def test_panel_calibration_needs_a_panel_in_a_synthetic_world():
  """default.yaml calibrates the teacher on the panel: turning the panel off
  fails at load time, naming the setting, rather than in the teacher's run."""
  with pytest.raises(config_lib.ConfigError, match='model.teacher_panel_calibration'):
    config_lib.load_config('pipeline/configs/default.yaml', ['world.panel_share=0'])
  config_lib.load_config('pipeline/configs/default.yaml', [
      'world.panel_share=0', 'model.teacher_panel_calibration=false'])


def test_bad_files(tmp_path):
  with pytest.raises(config_lib.ConfigError, match='cannot read config'):
    config_lib.load_config(str(tmp_path / 'missing.yaml'))
  bad = tmp_path / 'bad.yaml'
  bad.write_text('window: [1, 2\n')
  with pytest.raises(config_lib.ConfigError, match='not valid YAML'):
    config_lib.load_config(str(bad))
  listy = tmp_path / 'list.yaml'
  listy.write_text('- 1\n')
  with pytest.raises(config_lib.ConfigError, match='mapping'):
    config_lib.load_config(str(listy))
  with pytest.raises(config_lib.ConfigError, match='expected key.path=value'):
    config_lib.load_config(None, ['window.days'])


def test_observability_priors_need_every_browser_and_flag_once():
  good = [{'browser': b, 'first_party': fp, 'segment_shares': [0.5] * 4}
          for b in range(5) for fp in (0, 1)]
  cfg = config_lib.from_dict({'observability': {'priors': good}})
  assert len(cfg.observability.segment_priors()) == 10
  with pytest.raises(config_lib.ConfigError, match=r'observability\.priors: .*missing \[\(4, 1\)\]'):
    config_lib.from_dict({'observability': {'priors': good[:-1]}})
  bad = [dict(p) for p in good]
  bad[0]['segment_shares'] = [0.5, 0.5, 0.5]
  with pytest.raises(config_lib.ConfigError,
                     match=r'observability\.priors\[0\]\.segment_shares'):
    config_lib.from_dict({'observability': {'priors': bad}})


def test_world_manifest_priors_name_the_missing_manifest(tmp_path):
  cfg = config_lib.load_config(None, [f'paths.data_root={tmp_path}',
                                      'observability.priors_source=world_manifest'])
  with pytest.raises(config_lib.ConfigError,
                     match='priors_source: world_manifest needs the priors'):
    cfg.label_spec()
