"""Package layering: no import from a lower layer to a higher one, and no cycles.

Imports are read with `ast`, never executed, so the check is fast and sees every
import: module level, inside functions, methods and classes, relative ones, and
the dotted module paths held in strings (TFX finds run_fn and preprocessing_fn,
and TFMA a metric module, by such a path, so the string is a real dependency of
the module that holds it).
"""

import ast
import os
import re
from typing import Dict, List, Optional, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom up. A module may import its own package or packages of a strictly lower
# rank; two packages of one rank are peers and may not import each other.
RANKS = {
    'schemas': 0,
    'observation': 1,
    'config': 2,
    'models': 3,
    'components': 4,
    'world': 4,
    'pipeline': 5,
    'bench': 6,
    'tests': 6,
    'conftest': 6,  # the root conftest.py
}
# On top, they may import anything: their imports are not checked (but they are
# still modules, so nothing below may import them).
UNCHECKED = ('bench', 'tests', 'conftest')
SKIP_DIRS = {'.venv', '__pycache__', 'build', 'dist', 'docs', 'data', 'outputs',
             'serving'}
_DOTTED = re.compile(r'[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+')

Graph = Dict[str, Set[str]]


def _skipped(name: str) -> bool:
  return name in SKIP_DIRS or name.endswith('.egg-info') or name.startswith('.')


def find_modules(root: str, ranks: Dict[str, int]) -> Tuple[Dict[str, str], Set[str]]:
  """Finds the project's modules under `root`.

  Args:
    root: the repository root.
    ranks: top-level package (or root module) name to rank.

  Returns:
    (module name to file path, package names). A directory without an
    `__init__.py` still counts as a (namespace) package.
  """
  modules, packages = {}, set()
  for top in ranks:
    single = os.path.join(root, top + '.py')
    if os.path.isfile(single):
      modules[top] = single
    base = os.path.join(root, top)
    if not os.path.isdir(base):
      continue
    for dirpath, dirnames, filenames in os.walk(base):
      dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
      package = os.path.relpath(dirpath, root).replace(os.sep, '.')
      packages.add(package)
      for name in sorted(filenames):
        if name.endswith('.py'):
          stem = name[:-3]
          module = package if stem == '__init__' else f'{package}.{stem}'
          modules[module] = os.path.join(dirpath, name)
  return modules, packages


def _defined_names(tree: ast.Module) -> Set[str]:
  """Names a module binds outside its functions and classes."""
  names = set()

  def visit(body):
    for node in body:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names.add(node.name)
      elif isinstance(node, (ast.Import, ast.ImportFrom)):
        names.update((a.asname or a.name).split('.')[0] for a in node.names)
      elif hasattr(node, 'body'):  # if, try, with, for, while at module level
        for field in ('body', 'orelse', 'finalbody'):
          visit(getattr(node, field, []))
        for handler in getattr(node, 'handlers', []):
          visit(handler.body)
      else:
        names.update(n.id for n in ast.walk(node)
                     if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))

  visit(tree.body)
  return names


def import_graph(root: str, ranks: Dict[str, int]) -> Graph:
  """Every project module's imports of other project modules.

  Importing `a.b` is an edge to `a.b` only, not also to its parent package `a`
  (whose `__init__` Python runs first): see test_no_import_cycles for why.

  Args:
    root: the repository root.
    ranks: top-level package (or root module) name to rank.

  Returns:
    Importer module name to the project modules it imports (no self-edges).
  """
  modules, packages = find_modules(root, ranks)
  trees = {}
  for module, path in modules.items():
    with open(path, encoding='utf-8') as f:
      trees[module] = ast.parse(f.read(), filename=path)
  defined = {}

  def longest_known(dotted: str) -> Optional[str]:
    parts = dotted.split('.')
    if parts[0] not in ranks:
      return None
    for n in range(len(parts), 0, -1):
      prefix = '.'.join(parts[:n])
      if prefix in modules or prefix in packages:
        return prefix
    return parts[0]  # an imported project package that does not exist (yet)

  def from_string(value: str) -> Optional[str]:
    # Only a module file, or a module plus a name it defines: 'world.seed' is a
    # config key, not the `world` package's attribute.
    if not _DOTTED.fullmatch(value) or value.split('.')[0] not in ranks:
      return None
    if value in modules:
      return value
    head, attr = value.rsplit('.', 1)
    if head in modules:
      if head not in defined:
        defined[head] = _defined_names(trees[head])
      if attr in defined[head]:
        return head
    return None

  graph = {}
  for module, tree in trees.items():
    is_package = os.path.basename(modules[module]) == '__init__.py'
    own_package = module if is_package else module.rpartition('.')[0]
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets.update(longest_known(a.name) for a in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          parts = own_package.split('.')
          anchor = '.'.join(parts[:len(parts) - node.level + 1])
          base = f'{anchor}.{base}'.strip('.') if base else anchor
        for alias in node.names:
          # `from pkg import mod` imports the module pkg/mod.py.
          candidate = f'{base}.{alias.name}'
          targets.add(candidate if candidate in modules else longest_known(base))
      elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        targets.add(from_string(node.value))
    targets.discard(None)
    targets.discard(module)
    graph[module] = targets
  return graph


def find_violations(root: str, ranks: Dict[str, int],
                    unchecked=UNCHECKED) -> List[str]:
  """Every import from a lower layer to a higher one, or between peers.

  Args:
    root: the repository root.
    ranks: top-level package (or root module) name to rank.
    unchecked: top-level names whose own imports are not checked.

  Returns:
    Sorted 'importer -> imported (rank a -> rank b)' lines.
  """
  lines = []
  for importer, targets in import_graph(root, ranks).items():
    top = importer.split('.')[0]
    if top in unchecked:
      continue
    for imported in targets:
      other = imported.split('.')[0]
      if other != top and ranks[other] >= ranks[top]:
        lines.append(f'{importer} -> {imported} '
                     f'(rank {ranks[top]} -> rank {ranks[other]})')
  return sorted(lines)


def find_cycle(graph: Graph) -> Optional[List[str]]:
  """One import cycle as a chain [a, b, ..., a], or None (DFS in name order)."""
  state = {}  # module -> 1 while on the DFS stack, 2 when done
  stack = []

  def visit(module):
    state[module] = 1
    stack.append(module)
    for target in sorted(graph.get(module, ())):
      if state.get(target) == 1:
        return stack[stack.index(target):] + [target]
      if target not in state:
        cycle = visit(target)
        if cycle:
          return cycle
    stack.pop()
    state[module] = 2
    return None

  for module in sorted(graph):
    if module not in state:
      cycle = visit(module)
      if cycle:
        return cycle
  return None


def test_no_import_from_a_lower_layer_to_a_higher_one():
  violations = find_violations(ROOT, RANKS)
  assert not violations, '\n'.join(
      [f'{len(violations)} layer violation(s):'] + violations)


def test_no_import_cycles():
  # No edge is excluded, not even a package __init__'s to its own submodules.
  # An import of `a.b` is an edge to `a.b` alone, not to the parent `a` that
  # Python initialises first, so an __init__ that re-exports its submodules is
  # never a cycle by itself. An edge back into the __init__ comes only from
  # importing a name of the package itself (`from config import Config` in
  # config/loader.py), and with the __init__ importing that submodule it is a
  # real cycle: whether it works depends on the order of the __init__'s lines.
  cycle = find_cycle(import_graph(ROOT, RANKS))
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def _write(root, files):
  for path, text in files.items():
    full = root / path
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(text)


def test_the_checker_sees_local_relative_and_string_imports(tmp_path):
  _write(tmp_path, {
      'schemas/__init__.py': '',
      # A config key that looks like a path into a package: not an import.
      'schemas/columns.py': "KEY = 'world.seed'\n",
      'models/__init__.py': '',
      'models/local.py': ('from schemas import columns\n\n'
                          'def f():\n'
                          '  from pipeline import cli\n'
                          '  return cli\n'),
      'models/by_string.py': "RUN_FN = 'pipeline.cli.main'\n",
      'models/missing_attr.py': "NOT_A_PATH = 'pipeline.cli.nothing_here'\n",
      'world/__init__.py': '',
      'world/gen.py': 'class G:\n  def m(self):\n    import components.helper\n',
      'components/__init__.py': '',
      'components/helper.py': 'from . import sibling\nfrom .sibling import x\n',
      'components/sibling.py': 'x = 1\n',
      'pipeline/__init__.py': '',
      'pipeline/cli.py': 'from models import local\n\ndef main():\n  pass\n',
      'tests/__init__.py': '',
      'tests/test_x.py': 'import pipeline.cli\n',
      'models/build/stale.py': 'import pipeline.cli\n',  # skipped
  })
  ranks = {'schemas': 0, 'models': 3, 'components': 4, 'world': 4,
           'pipeline': 5, 'tests': 6}
  assert find_violations(str(tmp_path), ranks) == [
      'models.by_string -> pipeline.cli (rank 3 -> rank 5)',
      'models.local -> pipeline.cli (rank 3 -> rank 5)',
      'world.gen -> components.helper (rank 4 -> rank 4)',
  ]
  graph = import_graph(str(tmp_path), ranks)
  assert graph['components.helper'] == {'components.sibling'}
  assert graph['schemas.columns'] == set()
  cycle = find_cycle(graph)
  assert cycle[0] == cycle[-1] and set(cycle) == {'models.local', 'pipeline.cli'}


def test_the_checker_finds_a_cycle_through_a_package_init(tmp_path):
  _write(tmp_path, {
      'config/__init__.py': 'from config.loader import load\n',
      'config/schema.py': 'class Config:\n  pass\n',
      # `from config import schema` is the module, not the __init__: no cycle.
      'config/loader.py': 'from config import schema\n\ndef load():\n  pass\n',
  })
  ranks = {'config': 2}
  assert find_cycle(import_graph(str(tmp_path), ranks)) is None
  (tmp_path / 'config/loader.py').write_text(
      'def load():\n  from config import Config\n')
  assert find_cycle(import_graph(str(tmp_path), ranks)) == [
      'config', 'config.loader', 'config']
