"""The dataset spec: loaded and checked at load time, every error one line naming
the spec file and its key; what a config asks of the dataset checked against it;
and no pipeline module naming a column of the synthetic world's spec."""

import io
import os
import re
import tokenize

import pytest

import config as config_lib
from config import dataset as dataset_lib
from schemas import columns
from tests import app_installs
from world import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def spec_file(tmp_path):
  return app_installs.write_spec(str(tmp_path / 'app.yaml'))


def load(spec_file, *overrides):
  return config_lib.load_config(None, [f'dataset_file={spec_file}'] +
                                app_installs.OVERRIDES + list(overrides))


def error(spec_file, *overrides):
  with pytest.raises(config_lib.ConfigError) as e:
    load(spec_file, *overrides)
  message = str(e.value)
  assert '\n' not in message, message
  return message


def test_a_spec_of_another_shape_loads(spec_file):
  d = load(spec_file).dataset
  assert d.name == 'app_installs'
  assert d.window_names() == ('0_1h', '1_6h', '6_24h')
  assert d.serving_names() == app_installs.SERVING
  assert [c.name for c in d.features('teacher_only')] == ['session_depth']
  assert (d.segment, d.first_party, d.tcpa, d.panel, d.truth) == ('', '', '', '',
                                                                 False)
  assert d.slice_columns() == ()
  # The vocabulary's ids: one per value and one for the rest.
  assert d.feature('os').bucket_count() == 3
  # What is off, said once (the run summary prints it).
  assert len(d.summary()) == 4 and 'no tCPA' in d.summary()[1]


@pytest.mark.parametrize('override, message', [
    ('dataset.windows=[{name: a, start_hours: 0, end_hours: 5, prior_share: 0.5, '
     'prior_scale_hours: 1}, {name: b, start_hours: 4, end_hours: 9, '
     'prior_share: 0.5, prior_scale_hours: 1}]',
     'windows[1].start_hours: b [4, 9) overlaps or precedes a [0, 5)'),
    ('dataset.windows=[{name: a, start_hours: 3, end_hours: 3, prior_share: 1, '
     'prior_scale_hours: 1}]', 'windows[0].end_hours: 3 is not after start_hours 3'),
    ('dataset.windows=[]', 'windows: declare at least one delay window'),
    ('dataset.windows=[{name: a, start_hours: 0, end_hours: 3, prior_share: 0.4, '
     'prior_scale_hours: 1}]', 'windows: the prior_share values sum to 0.4, not 1'),
    ('dataset.meanings={observability_segment: campaign}',
     "meanings.observability_segment: 'campaign' is a hashed string; give it a "
     'vocabulary'),
    ('dataset.meanings={panel: bid_floor}',
     "meanings.panel: 'bid_floor' is a model feature"),
    ('dataset.meanings={panel_calibration_groups: [campaign]}',
     'meanings.panel_calibration_groups: the calibration needs a panel'),
    ('dataset.meanings={slices: [bid_floor]}',
     "meanings.slices[0]: 'bid_floor' is not a categorical feature"),
    ('dataset.delay={segment_by: nope}',
     "delay.segment_by: 'nope' is not a categorical feature"),
    ('dataset.clicks={timestamp: {column: tap_time_ms, unit: format}}',
     'clicks.timestamp.format: a strptime format goes with unit: format'),
    ('dataset.source={format: bigquery}',
     'source.clicks: a BigQuery source needs a table or a query'),
    ('dataset.source={clicks: {path: taps/all}}',
     "source.clicks.path: 'taps/all' needs a {date} placeholder"),
    ('dataset.source={format: avro}', "source.format: 'avro' is not one of"),
])
def test_spec_errors_name_the_file_and_the_key(spec_file, override, message):
  got = error(spec_file, override)
  assert got.startswith(f'{spec_file}: ') and message in got, got


@pytest.mark.parametrize('feature, message', [
    ('{name: city, dtype: string, kind: numeric}',
     "features[6].kind: a string feature is categorical"),
    ('{name: rank, dtype: int, kind: categorical}',
     'features[6].buckets: a categorical feature needs its bucket count'),
    ('{name: score, dtype: float, kind: numeric, buckets: 4}',
     'features[6].buckets: only a categorical feature has buckets'),
    ('{name: exposure_0_1h, dtype: float, kind: numeric}',
     "features[6].name: 'exposure_0_1h' is a column the pipeline writes"),
    ('{name: "bad name", dtype: float, kind: numeric}',
     "features[6].name: 'bad name' is not a column name"),
    ('{name: campaign, dtype: float, kind: numeric}',
     "clicks.features: ['campaign'] declared more than once"),
])
def test_feature_errors_name_the_key(spec_file, feature, message):
  with open(spec_file) as f:
    text = f.read()
  with open(spec_file, 'w') as f:
    f.write(text.replace('conversions:\n', f'    - {feature}\nconversions:\n', 1))
  got = error(spec_file)
  assert got.startswith(f'{spec_file}: ') and message in got, got


@pytest.mark.parametrize('override, key', [
    ('eval.label_mode=truth', 'eval.label_mode: truth needs truth columns'),
    ('eval.label_mode=panel', 'eval.label_mode: panel needs a panel column'),
    ('teacher_gate.mode=truth', 'teacher_gate.mode: truth needs truth columns'),
    ('distill.recipe=panel_only', 'distill.recipe: panel_only needs a panel column'),
    ('model.teacher_panel_calibration=true',
     'model.teacher_panel_calibration: true needs a panel'),
    ('sweep.score=panel', 'sweep.score: panel needs a panel column'),
    ('observability.browsers=[{id: 0, name: all, observed_fraction: 1.0}]\x00'
     'observability.priors=[{browser: 0, first_party: 0, segment_shares: [1, 1, 1, 1]}, '
     '{browser: 0, first_party: 1, segment_shares: [1, 1, 1, 1]}]',
     'observability.priors: the dataset has no observability_segment'),
])
def test_a_mode_the_dataset_cannot_support_is_a_config_error(spec_file, override,
                                                             key):
  got = error(spec_file, *override.split('\x00'))
  assert got.startswith(key) and "dataset 'app_installs'" in got, got


def test_a_missing_spec_file_names_it(tmp_path):
  with pytest.raises(config_lib.ConfigError,
                     match=r'dataset_file: cannot read the dataset spec .*nope.yaml'):
    config_lib.load_config(None, [f'dataset_file={tmp_path}/nope.yaml'])


def test_the_serving_contract_documents_the_inputs(spec_file):
  text = dataset_lib.contract_markdown(load(spec_file).dataset)
  assert '| `campaign` | int64 | `campaign` (string) | FarmHash Fingerprint64' in text
  assert "index in the vocabulary ['android', 'ios'] (2 for any other value)" in text
  assert '| `bid_floor` | float32 |' in text and 'session_depth' not in text


# --- No pipeline module names a column of the synthetic world --------------------

# config/ is not walked: it reads the synthetic world's manifest (observability
# priors_source world_manifest) and its spec keys (meanings.target_cpa) share
# names with the world's columns.
PIPELINE_PACKAGES = ('models', 'components', 'observation', 'pipeline', 'schemas')


def _string_literals(path):
  """Every string literal of a module that is not a docstring."""
  with open(path) as f:
    tokens = list(tokenize.generate_tokens(io.StringIO(f.read()).readline))
  out = []
  previous = None
  for tok in tokens:
    if tok.type == tokenize.STRING:
      docstring = previous is None or (previous.type in (
          tokenize.INDENT, tokenize.NEWLINE, tokenize.NL, tokenize.DEDENT))
      if not docstring:
        out.append((tok.start[0], tok.string))
    if tok.type not in (tokenize.COMMENT, tokenize.NL):
      previous = tok
  return out


def test_no_pipeline_module_names_a_synthetic_column():
  """The synthetic world's own columns (features and meaning columns) appear in
  no string literal of a pipeline package; what the pipeline writes is allowed."""
  spec = synthetic.spec()
  names = {f.name for f in spec.clicks.features} | set(spec.passthrough())
  written = {c.name for c in spec.pipeline_columns()}
  names -= written
  assert {'browser', 'target_cpa', 'in_panel', 'country', 'advertiser_id'} <= names
  found = []
  for package in PIPELINE_PACKAGES:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if not name.endswith('.py'):
          continue
        path = os.path.join(folder, name)
        for line, literal in _string_literals(path):
          words = set(re.findall(r'[A-Za-z_][A-Za-z0-9_]*', literal))
          hit = words & names
          if hit and re.fullmatch(r"[rbuf]*['\"]+([A-Za-z0-9_]+)['\"]+", literal):
            found.append(f'{os.path.relpath(path, ROOT)}:{line}: {literal}')
  assert not found, found


def test_the_walker_finds_a_planted_name(tmp_path):
  planted = tmp_path / 'planted.py'
  planted.write_text('"""Docs may say browser."""\nKEY = \'browser\'\n')
  assert _string_literals(str(planted)) == [(2, "'browser'")]
  assert columns.TCPA_BUCKET not in {f.name for f in synthetic.spec().clicks.features}
