"""The configuration reference (docs/configuration.md), generated from the schema.

Every key of the config tree (config/schema.py, and the dataset spec's of
config/dataset.py) with its default, what values it takes, the value
pipeline/configs/default.yaml gives it, and what it does: the section's
docstring, the field's `doc=` and the comments on and above its line. The
dataclasses are the one source; `python -m bench.readme` writes the document and
`--check` fails when it differs.
"""

import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any, Dict, List, Optional, Tuple

import yaml

from config import schema

DEFAULT_YAML = 'pipeline/configs/default.yaml'


@dataclasses.dataclass
class _Key:
  key: str
  default: str
  allowed: str
  doc: str


def _comments(cls) -> Dict[str, str]:
  """Field name -> its doc: `doc=`, the comment lines right above it and the
  comments on its own lines, in that order."""
  source = textwrap.dedent(inspect.getsource(cls))
  lines = source.splitlines()
  full, inline = {}, {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type != tokenize.COMMENT:
      continue
    row = tok.start[0]
    text = tok.string.lstrip('#').strip()
    if lines[row - 1].strip().startswith('#'):
      full[row] = text
    else:
      inline.setdefault(row, []).append(text)
  meta = {f.name: f.metadata.get('doc', '') for f in dataclasses.fields(cls)}
  out = {}
  for node in ast.parse(source).body[0].body:
    if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
      continue
    name = node.target.id
    above, row = [], node.lineno - 1
    while row in full:
      above.insert(0, full[row])
      row -= 1
    on = [c for r in range(node.lineno, node.end_lineno + 1) for c in inline.get(r, [])]
    parts = [meta.get(name, '')] + [' '.join(above)] + on
    out[name] = '; '.join(p for p in parts if p)
  return out


def _value(v: Any) -> str:
  if v is None:
    return 'unset'
  if isinstance(v, bool):
    return 'true' if v else 'false'
  if isinstance(v, str):
    return f'`{v}`' if v else "`''`"
  if dataclasses.is_dataclass(v):
    v = dataclasses.asdict(v)
  if isinstance(v, (list, tuple, dict)):
    text = yaml.safe_dump(_plain(v), default_flow_style=True, width=10**6).strip()
    return f'`{text}`'
  return f'`{v}`'


def _plain(v):
  if dataclasses.is_dataclass(v):
    return _plain(dataclasses.asdict(v))
  if isinstance(v, dict):
    return {k: _plain(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_plain(x) for x in v]
  return v


def _allowed(f: dataclasses.Field) -> str:
  m = f.metadata
  if m.get('choices'):
    return ', '.join(f'`{c}`' for c in m['choices'])
  lo, hi = m.get('min'), m.get('max')
  if lo is None and hi is None:
    return ''
  left = ('> ' if m.get('min_exclusive') else '>= ') + f'{lo:g}' if lo is not None else ''
  right = f'<= {hi:g}' if hi is not None else ''
  return ', '.join(p for p in (left, right) if p)


def _item_class(cls, name: str):
  """The dataclass a list field holds (None: not a list of dataclasses)."""
  tp = typing.get_type_hints(cls).get(name)
  if typing.get_origin(tp) in (list, List):
    (arg,) = typing.get_args(tp)
    if dataclasses.is_dataclass(arg):
      return arg
  return None


def _paragraphs(doc: Optional[str]) -> str:
  if not doc:
    return ''
  paras = inspect.cleandoc(doc).split('\n\n')
  return '\n\n'.join(' '.join(p.split()) for p in paras)


def _section(prefix: str, obj, overrides: Dict[str, Any],
             out: List[Tuple[str, str, List[_Key]]]) -> None:
  """Appends (section key, its doc, its keys) for `obj` and its subsections."""
  cls = type(obj)
  docs = _comments(cls)
  keys, subs = [], []
  for f in dataclasses.fields(cls):
    key = f'{prefix}.{f.name}' if prefix else f.name
    value = getattr(obj, f.name)
    if dataclasses.is_dataclass(value):
      subs.append((key, value))
      continue
    keys.append(_Key(key, _value(value), _allowed(f), docs.get(f.name, '')))
    item = _item_class(cls, f.name)
    if item is not None:
      item_docs = _comments(item)
      example = item()
      for g in dataclasses.fields(item):
        keys.append(_Key(f'{key}[].{g.name}', _value(getattr(example, g.name)),
                         _allowed(g), item_docs.get(g.name, '')))
  out.append((prefix, _paragraphs(cls.__doc__), keys))
  for key, value in subs:
    _section(key, value, overrides, out)


def _flatten(data: Any, prefix: str = '') -> Dict[str, Any]:
  if not isinstance(data, dict):
    return {prefix: data}
  out = {}
  for k, v in data.items():
    key = f'{prefix}.{k}' if prefix else str(k)
    if isinstance(v, dict) and v:
      out.update(_flatten(v, key))
    else:
      out[key] = v
  return out


def default_overrides(path: str = DEFAULT_YAML) -> Dict[str, Any]:
  """The keys pipeline/configs/default.yaml sets, dotted, with their values."""
  with open(path) as f:
    return _flatten(yaml.safe_load(f) or {})


def _cell(text: str) -> str:
  return _text(text).replace('|', '\\|').replace('\n', ' ')


def _text(text: str) -> str:
  """Markdown-safe prose: `<name>` placeholders shown, not taken for HTML."""
  parts = text.split('`')
  return '`'.join(p if i % 2 else re.sub(r'<(?=[A-Za-z/])', '&lt;', p)
                  for i, p in enumerate(parts))


def markdown(overrides: Optional[Dict[str, Any]] = None) -> str:
  """Every section and key as Markdown tables (the generated block of
  docs/configuration.md)."""
  overrides = default_overrides() if overrides is None else overrides
  sections: List[Tuple[str, str, List[_Key]]] = []
  _section('', schema.Config(), overrides, sections)
  # The dataset spec's keys last: they come from `dataset_file`, not this tree.
  sections.sort(key=lambda s: s[0] == 'dataset' or s[0].startswith('dataset.'))
  known = {k.key for _, _, keys in sections for k in keys}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ValueError(f'{DEFAULT_YAML} sets keys the schema does not have: {unknown}')
  lines = []
  for name, doc, keys in sections:
    if not keys:
      continue
    lines += [f'### `{name}`' if name else '### top level', '']
    if doc:
      lines += [_text(doc), '']
    lines += ['| key | default | `default.yaml` | allowed | what it does |',
              '|---|---|---|---|---|']
    for k in keys:
      given = _value(overrides[k.key]) if k.key in overrides else ''
      lines.append(f'| `{k.key}` | {_cell(k.default)} | {_cell(given)} | '
                   f'{_cell(k.allowed)} | {_cell(k.doc)} |')
    lines.append('')
  return '\n'.join(lines).rstrip('\n')
