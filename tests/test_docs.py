"""The front door and the docs: every relative link resolves, every anchor exists,
and the benchmark page's prose quotes no figure (its figures are generated)."""

import glob
import os
import re

import pytest

from bench import readme

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ['README.md'] + sorted(os.path.relpath(p, ROOT)
                              for p in glob.glob(os.path.join(ROOT, 'docs', '*.md')))
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def _text(path):
  with open(os.path.join(ROOT, path)) as f:
    return f.read()


def _outside_code(text):
  """The text without fenced code blocks and inline code spans."""
  text = re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)
  return re.sub(r'`[^`\n]*`', '', text)


def anchors(text):
  """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens,
  repeats numbered."""
  seen, out = {}, set()
  for line in re.sub(r'^```.*?^```', '', text, flags=re.S | re.M).splitlines():
    m = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
    if not m:
      continue
    slug = re.sub(r'[^\w\- ]', '', m.group(1).lower()).replace(' ', '-')
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    out.add(slug if n == 0 else f'{slug}-{n}')
  return out


def test_the_readme_is_a_front_door():
  assert len(_text('README.md').splitlines()) <= 250


@pytest.mark.parametrize('doc', DOCS)
def test_every_relative_link_and_anchor_resolves(doc):
  text = _text(doc)
  broken = []
  for target in LINK.findall(_outside_code(text)):
    if re.match(r'[a-z]+:', target):  # http(s), mailto
      continue
    path, _, anchor = target.partition('#')
    full = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), path)) if path \
        else os.path.join(ROOT, doc)
    if not os.path.exists(full):
      broken.append(f'{target}: no such file')
      continue
    if anchor and full.endswith('.md') and anchor not in anchors(_text(full)):
      broken.append(f'{target}: no such heading')
  assert not broken, f'{doc}: {broken}'


def test_the_benchmark_prose_quotes_no_figure():
  """Outside its generated blocks, docs/benchmarks.md states no measured number: a
  percentage, a decimal, a number with thousands separators or of three digits or
  more (the slice name `tCPA > 250`, a 95% CI's level and the p99.9 quantile's
  name aside)."""
  text = _text(readme.BENCHMARKS)
  for name in readme.TABLES:
    text = re.sub(rf'<!-- {name}:begin -->.*?<!-- {name}:end -->', '', text, flags=re.S)
  text = _outside_code(text).replace('tCPA > 250', 'tCPA')
  text = re.sub(r'95% CIs?|p99\.9', '', text)
  text = LINK.sub('', text)
  figures = re.findall(r'\d+(?:\.\d+)?\s*%|\d+\.\d+|\d{1,3}(?:,\d{3})+|\b\d{3,}\b', text)
  assert not figures, figures
