"""Loading the configuration: YAML plus `key.path=value` overrides, validated.

Loaded once at the edge (CLI / runner), validated with errors that name the key,
then passed down. Components receive parameters built by the config's sections
(config.schema); nothing reads environment variables.

Example:
  cfg = load_config('pipeline/configs/default.yaml', ['window.eval_days=2'])
"""

import dataclasses
import json
import math
import os
import re
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from config.dataset import DatasetSpec
from config.schema import Config
from config.schema import ConfigError
from config.schema import DEFAULT_DATASET_FILE

# The Trainers' custom_config key holding the whole config as JSON.
TRAINER_CONFIG_KEY = 'config'

class _Loader(yaml.SafeLoader):
  """SafeLoader that leaves dates and times as strings (the config parses them)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag != 'tag:yaml.org,2002:timestamp']
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# YAML 1.1 reads 3e-4 (no decimal point) as a string; people write it.
_Loader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$'),
    list('-+0123456789.'))


def _yaml(text):
  return yaml.load(text, Loader=_Loader)  # nosec: a SafeLoader subclass


def _type_name(tp) -> str:
  return getattr(tp, '__name__', None) or str(tp).replace('typing.', '')


def _coerce(key: str, value: Any, tp) -> Any:
  """Converts a YAML value to `tp`, or raises ConfigError naming `key`."""
  origin = typing.get_origin(tp)
  if origin is typing.Union:  # Optional[X]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None:
      return None
    return _coerce(key, value, args[0])
  if dataclasses.is_dataclass(tp):
    if not isinstance(value, dict):
      raise ConfigError(f'{key}: expected a mapping, got {value!r}')
    return _build(key, tp, value)
  if origin in (dict, Dict):
    if not isinstance(value, dict):
      raise ConfigError(f'{key}: expected a mapping, got {value!r}')
    k_tp, v_tp = typing.get_args(tp)
    return {_coerce(f'{key}', k, k_tp): _coerce(f'{key}.{k}', v, v_tp)
            for k, v in value.items()}
  if origin in (list, List):
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f'{key}: expected a list, got {value!r}')
    (item,) = typing.get_args(tp)
    return [_coerce(f'{key}[{i}]', v, item) for i, v in enumerate(value)]
  if tp is bool:
    if not isinstance(value, bool):
      raise ConfigError(f'{key}: expected true or false, got {value!r}')
    return value
  if tp is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f'{key}: expected an integer, got {value!r}')
    return value
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f'{key}: expected a number, got {value!r}')
    if not math.isfinite(value):
      raise ConfigError(f'{key}: expected a finite number, got {value!r}')
    return float(value)
  if tp is str:
    if not isinstance(value, str):
      raise ConfigError(f'{key}: expected a string, got {value!r}')
    return value
  raise ConfigError(f'{key}: unsupported type {_type_name(tp)}')


def _check_range(key: str, value: Any, meta: Dict[str, Any]) -> None:
  lo, hi, choices = meta.get('min'), meta.get('max'), meta.get('choices')
  if choices is not None and value not in choices:
    raise ConfigError(f'{key}: {value!r} is not one of {list(choices)}')
  if value is None or not isinstance(value, (int, float)):
    return
  if lo is not None and (value < lo or (meta.get('min_exclusive') and
                                        value == lo)):
    op = '>' if meta.get('min_exclusive') else '>='
    raise ConfigError(f'{key}: {value!r} is out of range (must be {op} {lo})')
  if hi is not None and value > hi:
    raise ConfigError(f'{key}: {value!r} is out of range (must be <= {hi})')


def _build(prefix: str, cls, data: Dict[str, Any]):
  """Builds dataclass `cls` from `data` on top of its defaults."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    where = f'{prefix}.' if prefix else ''
    raise ConfigError(f'unknown config key {where}{unknown[0]} (known keys under '
                      f'{prefix or "the top level"}: {", ".join(sorted(fields))})')
  hints = typing.get_type_hints(cls)
  defaults = cls()
  kwargs = {}
  for name, value in data.items():
    key = f'{prefix}.{name}' if prefix else name
    default = getattr(defaults, name)
    if dataclasses.is_dataclass(default) and isinstance(value, dict):
      # A partial section overrides this field's default, not the section
      # class's defaults (model.teacher keeps its own layer sizes).
      value = _merge(dataclasses.asdict(default), value)
    value = _coerce(key, value, hints[name])
    _check_range(key, value, fields[name].metadata)
    kwargs[name] = value
  obj = cls(**kwargs)
  # Defaults are validated too: a field left out is still range-checked.
  for name, f in fields.items():
    if name not in kwargs:
      _check_range(f'{prefix}.{name}' if prefix else name, getattr(obj, name),
                   f.metadata)
  return obj


def _merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
  """Deep-merges mapping `top` onto `base`; lists and scalars replace."""
  out = dict(base)
  for k, v in top.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(
        out.get(k), dict) else v
  return out


def _check_tree(prefix: str, obj) -> None:
  """Runs every section's cross-field `check`, children first."""
  for f in dataclasses.fields(obj):
    value = getattr(obj, f.name)
    key = f'{prefix}.{f.name}' if prefix else f.name
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
      if dataclasses.is_dataclass(item):
        _check_tree(f'{key}[{i}]' if isinstance(value, list) else key, item)
  if hasattr(obj, 'check'):
    obj.check(prefix)


def _set_path(data: Dict[str, Any], dotted: str, value: Any) -> None:
  parts = dotted.split('.')
  node = data
  for part in parts[:-1]:
    child = node.setdefault(part, {})
    if not isinstance(child, dict):
      raise ConfigError(f'override {dotted}: {part} is not a section')
    node = child
  node[parts[-1]] = value


def parse_override(text: str):
  """Parses `key.path=value`; the value is read as YAML (so 3, 0.5, [1, 2])."""
  if '=' not in text:
    raise ConfigError(f'override {text!r}: expected key.path=value')
  key, raw = text.split('=', 1)
  key = key.strip()
  if not key:
    raise ConfigError(f'override {text!r}: empty key')
  try:
    return key, _yaml(raw) if raw.strip() else ''
  except yaml.YAMLError as e:
    raise ConfigError(f'override {key}: cannot parse value {raw!r}') from e


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dataset_path(path: str) -> str:
  """A dataset spec's path: as given if it exists, else from the repository
  (the synthetic world's spec is found from any working directory)."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(_REPO, path)


def read_dataset(path: str) -> Dict[str, Any]:
  """A dataset spec file's YAML mapping (checked when the config is built)."""
  full = dataset_path(path)
  try:
    with open(full) as f:
      data = _yaml(f) or {}
  except OSError as e:
    raise ConfigError(f'dataset_file: cannot read the dataset spec {path}: '
                      f'{e.strerror}') from e
  except yaml.YAMLError as e:
    raise ConfigError(f'{path}: not valid YAML: {e}') from e
  if not isinstance(data, dict):
    raise ConfigError(f'{path}: a dataset spec is a mapping at the top level')
  return data


def _with_dataset(data: Dict[str, Any]) -> Dict[str, Any]:
  """`data` with its dataset section read from `dataset_file` (under the section's
  own keys), and the spec checked on its own so errors name the file."""
  path = data.get('dataset_file', DEFAULT_DATASET_FILE)
  if not isinstance(path, str):
    raise ConfigError(f'dataset_file: expected a path, got {path!r}')
  section = data.get('dataset') or {}
  if not isinstance(section, dict):
    raise ConfigError(f'dataset: expected a mapping, got {section!r}')
  if path:
    section = _merge(read_dataset(path), section)
  try:
    spec = _build('', DatasetSpec, section)
    _check_tree('', spec)
  except ConfigError as e:
    raise ConfigError(f'{path or "dataset"}: {e}') from None
  return {**data, 'dataset': section}


def dataset_from_dict(data: Dict[str, Any]) -> DatasetSpec:
  """A dataset spec from its mapping (e.g. the ExampleGen's JSON parameter)."""
  spec = _build('', DatasetSpec, data)
  _check_tree('', spec)
  return spec


def from_dict(data: Optional[Dict[str, Any]]) -> Config:
  """Builds and validates a Config from a (possibly partial) mapping."""
  if data is None:
    data = {}
  if not isinstance(data, dict):
    raise ConfigError(f'the config must be a mapping, got {type(data).__name__}')
  cfg = _build('', Config, _with_dataset(data))
  _check_tree('', cfg)
  return cfg


def load_config(path: Optional[str] = None,
                overrides: Sequence[str] = ()) -> Config:
  """Loads YAML at `path` (optional), applies overrides, validates.

  Raises:
    ConfigError: naming the key, on unknown keys, wrong types or bad values.
  """
  data: Dict[str, Any] = {}
  if path:
    try:
      with open(path) as f:
        data = _yaml(f) or {}
    except OSError as e:
      raise ConfigError(f'cannot read config {path}: {e.strerror}') from e
    except yaml.YAMLError as e:
      raise ConfigError(f'config {path} is not valid YAML: {e}') from e
    if not isinstance(data, dict):
      raise ConfigError(f'config {path} must be a mapping at the top level')
  for text in overrides:
    key, value = parse_override(text)
    _set_path(data, key, value)
  return from_dict(data)


def from_json(text: str) -> Config:
  """Inverse of Config.to_json (the Trainers rebuild the config from it)."""
  return from_dict(json.loads(text))


def trainer_custom_config(cfg: Config) -> Dict[str, str]:
  """The Trainers' custom_config: the config (run_fn reads it back)."""
  return {TRAINER_CONFIG_KEY: cfg.to_json()}


def from_trainer_custom_config(custom_config: Mapping[str, Any]) -> Config:
  """The config a Trainer's run_fn was given (inverse of trainer_custom_config)."""
  return from_json(custom_config[TRAINER_CONFIG_KEY])
