"""The shape of the code: the import graph has no cycles, and the pure modules (rules, formats,
keys, config, the report) load without Beam, so commands and tests that need no pipeline start
fast and the rules can be read without the runner."""

import ast
import functools
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('config', 'schemas', 'transforms', 'pipelines')

# Modules that build or run pipelines: Beam composites, DoFns and the commands that launch them.
# Everything else must import without Beam at module level.
BEAM_MODULES = {
    'transforms.common.batches', 'transforms.common.metrics', 'transforms.common.scratch',
    'transforms.read.tables', 'transforms.conform.conform', 'transforms.conform.dedup',
    'transforms.consent.gate', 'transforms.mask.mask',
    'transforms.write.tables', 'transforms.write.sink', 'transforms.write.deadletter',
    'transforms.commit.manifest', 'transforms.commit.risk', 'transforms.commit.notice',
    'transforms.stream.feeds', 'transforms.stream.pubsub', 'transforms.stream.consent',
    'transforms.stream.order', 'transforms.stream.epochs',
}
PURE = ('config', 'schemas', 'transforms.common.errors', 'transforms.common.files',
        'transforms.common.reasons', 'transforms.common.sorted_keys', 'transforms.common.run',
        'transforms.common.progress', 'transforms.common.interrupts',
        'transforms.detect', 'transforms.conform.casting', 'transforms.consent.rules',
        'transforms.consent.events', 'transforms.mask.methods', 'transforms.read.csv_ranges',
        'transforms.read.csv_records', 'transforms.read.ranges', 'transforms.read.headers',
        'transforms.read.encodings', 'transforms.read.columns', 'transforms.keys',
        'transforms.commit.report', 'transforms.commit.report_text',
        'transforms.commit.audit', 'transforms.commit.manifest_schema',
        'transforms.stream.changes', 'transforms.stream.cdc_values',
        'pipelines.options', 'pipelines.cli', 'pipelines.commands', 'pipelines.progress')


def _modules() -> dict:
    found = {}
    for package in PACKAGES:
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith('.py'):
                    path = os.path.join(directory, name)
                    module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                    found[module.removesuffix('.__init__')] = path
    return found


MODULES = _modules()


def _imports(path: str, *, top_level: bool) -> set:
    """Modules ``path`` imports: at module level only, or anywhere (deferred imports too)."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    nodes = tree.body if top_level else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f'{node.module}.{a.name}' for a in node.names)
    return names


@functools.lru_cache(maxsize=None)
def _graph(*, top_level: bool) -> dict:
    graph = {}
    for module, path in MODULES.items():
        names = _imports(path, top_level=top_level)
        edges = {n for n in names if n in MODULES and n != module}
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        edges |= {p for n in edges for p in _parents(n) if p in MODULES and p != module}
        if any(n == 'apache_beam' or n.startswith('apache_beam.') for n in names):
            edges.add('apache_beam')
        graph[module] = edges
    return graph


def _parents(module: str) -> list:
    parts = module.split('.')
    return ['.'.join(parts[:i]) for i in range(1, len(parts))]


def _cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _loads_beam(module: str, graph: dict) -> list:
    """The chain of module-level imports through which ``module`` loads Beam, or []."""
    seen, todo = {module: None}, [module]
    while todo:
        v = todo.pop()
        for w in graph.get(v, ()):
            if w in seen:
                continue
            seen[w] = v
            if w == 'apache_beam':
                chain = [w]
                while chain[-1] != module:
                    chain.append(seen[chain[-1]])
                return chain[::-1]
            todo.append(w)
    return []


def test_the_modules_import_each_other_without_cycles():
    assert _cycles(_graph(top_level=False)) == []


@pytest.mark.parametrize('module', sorted(m for m in MODULES
                                          if any(m == p or m.startswith(p + '.') for p in PURE)))
def test_pure_modules_load_without_beam(module):
    assert _loads_beam(module, _graph(top_level=True)) == []


def test_beam_is_imported_only_by_the_modules_that_build_pipelines():
    graph = _graph(top_level=True)
    direct = {m for m, edges in graph.items() if 'apache_beam' in edges}
    commands = {m for m in direct if m.startswith('pipelines.')}
    assert direct - commands == BEAM_MODULES


def test_the_tests_mirror_the_stages():
    """tests/<stage>/ beside transforms/<stage>/: a newcomer finds a stage's tests by its name."""
    stages = sorted(d for d in os.listdir(os.path.join(ROOT, 'transforms'))
                    if os.path.isfile(os.path.join(ROOT, 'transforms', d, '__init__.py')))
    assert [s for s in stages if not glob.glob(os.path.join(ROOT, 'tests', s, 'test_*.py'))] == []


def test_each_vocabulary_has_one_home():
    """The words of each reason code are written once, in the registry: a second copy would
    drift from it (as the report's own table of reasons once did)."""
    from transforms.common.reasons import REGISTRY
    words = {text: r.code for r in REGISTRY for text in (r.meaning, r.report_en, r.report_zh)}
    homes = {}
    for module, path in MODULES.items():
        tree = ast.parse(open(path, encoding='utf-8').read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in words:
                homes.setdefault(words[node.value], set()).add(module)
    assert {code: sorted(m) for code, m in homes.items()} == {
        r.code: ['transforms.common.reasons'] for r in REGISTRY}
