"""Fuzz: configs, schemas and exports changed at random; every outcome is a result or one line.

A user's mistake must end in a ``NovationError`` (the CLI prints it as one line), never in
another exception (a traceback). Configs and schemas are the demo's, with one value at a random
place replaced by something a careless hand or a bad template gives (a list, a mapping, NaN,
a NUL, a huge number, nothing) or a key removed or added; exports are the reader's test files
with bytes changed, cut or inserted. Each is run through the code a ``novation run`` starts
with: the config loader, the plan, and the read DoFn with conform. Seeded, so a failure
repeats; the seed and the change are in the assertion message.
"""

import copy
import json
import os
import random
import shutil

import pytest
import yaml

from config import load_config
from config.plan import build_plan
from transforms.common.errors import NovationError

from tests.read.test_dirty_exports import make_table, read_file

from tests.conftest import ROOT
CASES = 400
EXPORT_CASES = 120
NASTY = [None, [], {}, [1], ['keep'], {'a': 1}, {'method': {'a': 1}}, '', ' ', 'x' * 5000,
         '\x00', '../../../etc/passwd', -1, 0, 1, 2**64, 1e308, float('nan'), float('inf'),
         float('-inf'), True, False, '.nan', 'null', '鞠雪', '2024-13-45', {'method': 'keep'},
         [[[[[]]]]], {'': None}]


def _places(value, path=()):
    """Every (path, value) in a nested config."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _places(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _places(v, path + (i,))


def _mutate(doc, rng):
    """``doc`` with one change at a random place; and the change, in words."""
    doc = copy.deepcopy(doc)
    path, _ = rng.choice([p for p in _places(doc) if p[0]])
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    what = rng.random()
    if what < 0.7:
        parent[last] = rng.choice(NASTY)
        return doc, f'{"/".join(map(str, path))} = {parent[last]!r:.60}'
    if what < 0.85 and isinstance(parent, dict):
        del parent[last]
        return doc, f'{"/".join(map(str, path))} removed'
    target = parent[last]
    if isinstance(target, dict):
        target['unknown_key'] = rng.choice(NASTY)
        return doc, f'{"/".join(map(str, path))}/unknown_key added'
    parent[last] = [target, target]
    return doc, f'{"/".join(map(str, path))} doubled into a list'


@pytest.fixture(scope='module')
def demo_files(tmp_path_factory):
    """The demo's config and schemas (no exports needed: loading reads none)."""
    base = str(tmp_path_factory.mktemp('fuzz'))
    shutil.copy(os.path.join(ROOT, 'config', 'demo.yaml'), os.path.join(base, 'demo.yaml'))
    from pipelines.demo import DEMO_SCHEMAS
    os.makedirs(os.path.join(base, 'schemas'))
    for name in DEMO_SCHEMAS:
        shutil.copy(os.path.join(ROOT, 'schemas', name), os.path.join(base, 'schemas', name))
    config = yaml.safe_load(open(os.path.join(base, 'demo.yaml'), encoding='utf-8'))
    schemas = {name: json.load(open(os.path.join(base, 'schemas', name), encoding='utf-8'))
               for name in os.listdir(os.path.join(base, 'schemas'))}
    load_config(os.path.join(base, 'demo.yaml'))  # the unchanged demo loads
    return base, config, schemas


def _outcome(path):
    """None if the config loads and plans, the error's one line if it is a user error; any
    other exception propagates (a traceback: the failure)."""
    try:
        build_plan(load_config(path))
    except NovationError as e:
        message = str(e)
        assert message and '\n' not in message, message
        return message
    return None


def test_a_changed_config_loads_or_is_one_line(demo_files, tmp_path):
    base, config, _ = demo_files
    rng = random.Random(19)
    refused = 0
    for case in range(CASES):
        changed, what = _mutate(config, rng)
        work = tmp_path / f'c{case}'
        work.mkdir()
        os.symlink(os.path.join(base, 'schemas'), work / 'schemas')
        with open(work / 'demo.yaml', 'w', encoding='utf-8') as f:
            yaml.safe_dump(changed, f, allow_unicode=True)
        try:
            refused += _outcome(str(work / 'demo.yaml')) is not None
        except Exception as e:  # noqa: BLE001 - the failure this test exists to find
            pytest.fail(f'case {case} ({what}): {type(e).__name__}: {e}'[:400])
    assert refused > CASES // 2  # most changes are mistakes, and are caught


def test_a_changed_schema_loads_or_is_one_line(demo_files, tmp_path):
    base, _, schemas = demo_files
    rng = random.Random(23)
    refused = 0
    for case in range(CASES):
        name = rng.choice(sorted(schemas))
        changed, what = _mutate(schemas[name], rng)
        work = tmp_path / f's{case}'
        shutil.copytree(os.path.join(base, 'schemas'), work / 'schemas')
        shutil.copy(os.path.join(base, 'demo.yaml'), work / 'demo.yaml')
        with open(work / 'schemas' / name, 'w', encoding='utf-8') as f:
            json.dump(changed, f, ensure_ascii=False)
        try:
            refused += _outcome(str(work / 'demo.yaml')) is not None
        except Exception as e:  # noqa: BLE001
            pytest.fail(f'case {case} ({name}: {what}): {type(e).__name__}: {e}'[:400])
    assert refused > CASES // 4


@pytest.mark.parametrize('text', [
    'transfer: ' + '[' * 50_000 + ']' * 50_000 + '\n',
    'a: &x [*x]\n',
    'transfer: {seller: !!python/object:os.system x}\n',
    '\x00\x01\x02',
    '- 1\n- 2\n',
    'transfer: ' + '{a: ' * 5000 + '1' + '}' * 5000 + '\n',
])
def test_yaml_that_is_no_config_is_one_line(tmp_path, text):
    path = tmp_path / 'c.yaml'
    path.write_text(text, encoding='utf-8')
    assert _outcome(str(path)) is not None


# ---------------------------------------------------------------------------------------------
# Exports

CSV_TEXT = ('rid,amount,day,flag,note,at\n'
            + ''.join(f'R{i},{i}.50,2024-01-0{i % 9 + 1},是,备注"{i}",2024-01-02 08:00:00\n'
                      for i in range(40)))
BYTE_EDITS = [
    lambda b, r: b[:r.randrange(len(b))],                                       # cut short
    lambda b, r: _at(b, r, b'\x00' * r.choice([1, 100, 1 << 20])),              # NULs
    lambda b, r: _at(b, r, b'"'),                                               # lone quote
    lambda b, r: b.replace(b'\n', b'\r'),                                       # lone CR
    lambda b, r: _at(b, r, b'x' * (2 << 20)),                                   # huge field
    lambda b, r: _at(b, r, bytes([r.randrange(256)])),                          # a stray byte
    lambda b, r: _flip(b, r),                                                   # a flipped bit
    lambda b, r: _at(b, r, '\ufeff'.encode('utf-8')),                           # a BOM inside
    lambda b, r: _at(b, r, b'\xff\xfe'),                                        # UTF-16 bytes
]


def _at(data, rng, piece):
    i = rng.randrange(len(data) + 1)
    return data[:i] + piece + data[i:]


def _flip(data, rng):
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]


def _export(directory, fmt):
    """A small export of the test table in ``fmt``, as bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    if fmt == 'csv':
        return CSV_TEXT.encode('gbk')
    rows = [{'rid': f'R{i}', 'amount': f'{i}.50', 'day': '2024-01-02', 'flag': '是',
             'note': f'备注{i}', 'at': '2024-01-02 08:00:00'} for i in range(40)]
    if fmt == 'jsonl':
        return ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows).encode('utf-8')
    path = os.path.join(directory, f'seed.{fmt}')
    if fmt == 'parquet':
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import fastavro
        schema = {'type': 'record', 'name': 't', 'fields': [
            {'name': k, 'type': ['null', 'string']} for k in rows[0]]}
        with open(path, 'wb') as f:
            fastavro.writer(f, fastavro.parse_schema(schema), rows)
    return open(path, 'rb').read()


@pytest.mark.parametrize('fmt', ['csv', 'jsonl', 'parquet', 'avro'])
def test_a_changed_export_reads_or_is_one_line(tmp_path, fmt):
    options = {'encoding': 'gbk'} if fmt == 'csv' else {}
    table = make_table(str(tmp_path), fmt, **options)
    seed = _export(str(tmp_path), fmt)
    rng = random.Random(['csv', 'jsonl', 'parquet', 'avro'].index(fmt))
    outcomes = {'read': 0, 'refused': 0}
    for case in range(EXPORT_CASES):
        edit = rng.randrange(len(BYTE_EDITS))
        data = BYTE_EDITS[edit](seed, rng)
        with open(table.path, 'wb') as f:
            f.write(data)
        try:
            kept, dead, rows_read, _ = read_file(table)
            outcomes['read'] += 1
            if rows_read is not None:  # nothing lost: each row read is kept or dead-lettered
                assert len(kept) + len([d for d in dead if d.row is not None]) >= rows_read
        except NovationError as e:
            assert str(e) and '\n' not in str(e), str(e)
            assert '备注' not in str(e), str(e)  # no value of the file in the message
            outcomes['refused'] += 1
        except Exception as e:  # noqa: BLE001
            pytest.fail(f'{fmt} case {case} (edit {edit}): {type(e).__name__}: {e}'[:400])
    assert outcomes["read"] and sum(outcomes.values()) == EXPORT_CASES
