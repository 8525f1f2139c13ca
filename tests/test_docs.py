"""The manual: README.md is the way in (short), docs/ holds the rest. Links resolve, paths named
exist, every command is in the tour, and the tables of reason codes, key roles and masking
methods are the registries' own (one home per vocabulary)."""

import glob
import os
import re

import pytest

from tests.conftest import ROOT

PAGES = sorted([os.path.join(ROOT, 'README.md')] +
               glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'), recursive=True))


def _text(path: str) -> str:
    return open(path, encoding='utf-8').read()


def _prose(text: str) -> str:
    """The text outside code blocks."""
    return re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)


def _anchors(text: str) -> set:
    """GitHub's anchors of the page's headings."""
    found = set()
    for heading in re.findall(r'^#{1,6} (.+)$', _prose(text), re.M):
        found.add(re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-'))
    return found


def _name(path: str) -> str:
    return os.path.relpath(path, ROOT)


def test_the_readme_is_the_way_in():
    lines = _text(os.path.join(ROOT, 'README.md')).count('\n')
    assert lines < 250, f'README.md has {lines} lines: move detail to docs/'


@pytest.mark.parametrize('page', PAGES, ids=_name)
def test_every_link_resolves(page):
    for target in re.findall(r'\]\(([^)\s]+)\)', _prose(_text(page))):
        if re.match(r'[a-z]+:', target):
            continue  # a web address
        path, _, anchor = target.partition('#')
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        assert os.path.exists(resolved), f'{_name(page)}: {target} does not exist'
        if anchor:
            assert anchor in _anchors(_text(resolved)), f'{_name(page)}: no heading for {target}'


@pytest.mark.parametrize('page', PAGES, ids=_name)
def test_every_path_named_exists(page):
    named = re.findall(r'`((?:transforms|pipelines|config|schemas|benchmarks|tests|dataflow)'
                       r'/[\w/.-]*\.(?:py|yaml|avsc|json))`', _text(page))
    missing = [p for p in named if not glob.glob(os.path.join(ROOT, p))]
    assert missing == [], f'{_name(page)} names files that do not exist: {missing}'


def test_the_tour_names_every_command_and_the_reference_has_their_synopses():
    import importlib
    from pipelines.commands import COMMANDS
    readme = _text(os.path.join(ROOT, 'README.md'))
    reference = _text(os.path.join(ROOT, 'docs', 'commands.md'))
    block = re.search(r'```\n(novation \[-v\].*?)```', reference, re.S).group(1).splitlines()[1:]
    synopses = []
    for name in COMMANDS:
        assert f'`novation {name}' in readme, f'the README\'s tour lacks {name}'
        synopses += importlib.import_module(f'pipelines.commands.{name}').SYNOPSIS
    assert sorted(block) == sorted(synopses), 'docs/commands.md: paste the commands\' SYNOPSIS'


@pytest.mark.parametrize('page, table', [
    ('reason-codes.md', 'transforms.common.reasons:reasons_table'),
    ('keys.md', 'transforms.keys.roles:roles_table'),
    ('config.md', 'transforms.mask.methods:methods_table'),
])
def test_vocabulary_tables_are_the_registries(page, table):
    import importlib
    module, function = table.split(':')
    expected = getattr(importlib.import_module(module), function)()
    assert expected in _text(os.path.join(ROOT, 'docs', page)), \
        f'docs/{page}: its table differs from {module}; paste {function}()'


def test_every_masking_method_is_described():
    from transforms.mask.methods import METHODS, OPERATORS
    assert set(METHODS) == set(OPERATORS)


def test_the_architecture_page_names_every_stage_package():
    page = _text(os.path.join(ROOT, 'docs', 'architecture.md'))
    packages = sorted(d for d in os.listdir(os.path.join(ROOT, 'transforms'))
                      if os.path.isfile(os.path.join(ROOT, 'transforms', d, '__init__.py')))
    assert [p for p in packages if f'`transforms/{p}/`' not in page] == []


@pytest.mark.parametrize('page, schema', [('manifest.schema.json', 'SCHEMA'),
                                          ('epoch-manifest.schema.json', 'EPOCH_SCHEMA')])
def test_the_published_manifest_schemas_are_the_readers(page, schema):
    import json
    from transforms.commit import manifest_schema
    published = json.loads(_text(os.path.join(ROOT, 'docs', page)))
    assert published == getattr(manifest_schema, schema), \
        f'docs/{page}: write json.dumps({schema}, indent=2)'

