"""Sorted fixed-width keys, and the two merges built on them: consent flags of registry parts
and the key pass's facts."""

import collections
import tempfile
from unittest import mock

from hypothesis import given, settings, strategies as st
import numpy as np
import pyarrow as pa

from transforms.common.batches import ROW, SOURCE
from transforms.consent.rules import (VERDICT_CODE, ConsentRow, Decisions, FlagRun, decide_flags,
                                      decide_subject, default_decision, flag_run, registry_flags)
from transforms.common.scratch import Scratch
from transforms.common.sorted_keys import (fit_width, fixed_width, group_starts, merge_runs,
                                           partition_of, sorted_run, split_by_partition, texts)

KEYS = st.text(alphabet=st.sampled_from(['a', 'b', '\x00', '王', '\x01']), max_size=4)


@settings(max_examples=200, deadline=None)
@given(runs=st.lists(st.lists(KEYS, max_size=12), min_size=1, max_size=5))
def test_merged_runs_order_and_group_keys_as_python_does(runs):
    """Runs of any widths (NUL, the terminator byte, prefixes, non-ASCII) merge into one order
    in which equal keys sit together, each run's copies in run order."""
    built = [sorted_run(fixed_width(pa.array(run, pa.string())),
                        np.array([(i, j) for j in range(len(run))], dtype=int).reshape(-1, 2))
             for i, run in enumerate(runs)]
    keys, where = merge_runs(built)
    texts = [k[:-1].decode('utf-8') for k in keys.tolist()]
    everything = [(k, i, j) for i, run in enumerate(runs) for j, k in enumerate(run)]
    assert sorted(texts) == sorted(k for k, _, _ in everything)
    starts = group_starts(keys)
    assert len(starts) == len(set(texts))
    for start, end in zip(starts, list(starts[1:]) + [len(keys)]):
        group = set(texts[start:end])
        assert len(group) == 1
        assert [tuple(w) for w in where[start:end]] == sorted(
            (i, j) for k, i, j in everything if k in group)


def test_a_key_longer_than_the_width_matches_nothing():
    keys = fixed_width(pa.array(['abc', 'a', 'ab\x01c']))
    assert fit_width(keys, 3).tolist() == [b'', b'a\x01', b'']  # not b'ab\x01', which is 'ab'
    assert fit_width(keys, 6).tolist() == keys.tolist()


def test_partitions_spread_keys_evenly():
    keys = fixed_width(pa.array([f'C{i:08d}' for i in range(40_000)]))
    sizes = np.bincount(partition_of(keys, 8), minlength=8)
    assert sizes.min() > 0.9 * 5000 and sizes.max() < 1.1 * 5000, sizes


REGISTRY = st.lists(st.tuples(st.sampled_from(['C1', 'C2', 'C10', '王']),
                              st.sampled_from(['credit', 'servicing', 'risk']),
                              st.booleans(), st.booleans(), st.booleans(), st.booleans()),
                    max_size=30)


@settings(max_examples=150, deadline=None)
@given(rows=REGISTRY, cuts=st.lists(st.integers(0, 30), max_size=4),
       erased=st.sets(st.sampled_from(['C2', 'C3', '王']), max_size=2),
       cross_border=st.booleans(), partitions=st.integers(1, 3))
def test_registry_parts_decide_as_each_customer_alone(rows, cuts, erased, cross_border,
                                                      partitions):
    """A customer's rows spread over several parts (byte ranges, batches) and decided one hash
    partition at a time decide as ``decide_subject`` on all of them together."""
    purposes = {'credit': 'consent', 'risk': 'consent', 'servicing': 'contract'}
    bounds = sorted({0, len(rows), *[c for c in cuts if c < len(rows)]})
    parts = [rows[a:b] for a, b in zip(bounds, bounds[1:])]
    runs = [flag_run(registry_flags(_registry(part), purposes), purposes) for part in parts]
    erased_keys = fixed_width(pa.array(sorted(erased), pa.string()))
    decided = []
    for p in range(partitions):
        runs_p = [FlagRun(r.subjects[at], r.flags[at]) for r in runs
                  for at in [partition_of(r.subjects, partitions) == p]]
        erased_p = texts(erased_keys[partition_of(erased_keys, partitions) == p])
        decided.append(decide_flags(runs_p, erased_p, purposes=purposes,
                                    cross_border=cross_border))
    subjects = {r[0] for r in rows} | erased
    assert sorted(s for codes in decided for s in codes) == sorted(subjects)
    default = VERDICT_CODE[default_decision(purposes=purposes, cross_border=cross_border)]
    decisions = Decisions(decided, default)
    for s in subjects | {'nobody', ''}:
        assert decisions.decision(s) == decide_subject(
            [ConsentRow(p, g, w, se, cb) for subj, p, g, w, se, cb in rows if subj == s],
            erased=s in erased, purposes=purposes, cross_border=cross_border), s


def _registry(rows):
    return pa.table({
        'subject_id': pa.array([r[0] for r in rows], pa.string()),
        'purpose': pa.array([r[1] for r in rows], pa.string()),
        'granted': pa.array([r[2] for r in rows], pa.bool_()),
        'withdrawn_at': pa.array([0 if r[3] else None for r in rows],
                                 pa.timestamp('us', tz='UTC')),
        'sensitive_consent': pa.array([r[4] for r in rows], pa.bool_()),
        'cross_border_consent': pa.array([r[5] for r in rows], pa.bool_())})


Table = collections.namedtuple('Table', 'schema keep_duplicates order_by')
Schema = collections.namedtuple('Schema', 'primary_key')
FACT_ROWS = st.lists(st.tuples(st.sampled_from(['k1', 'k2', 'k10', '键']),
                               st.one_of(st.none(), st.integers(0, 3)),
                               st.sampled_from(['a.csv', 'b.csv'])), max_size=30)


@settings(max_examples=100, deadline=None)
@given(rows=FACT_ROWS, cuts=st.lists(st.integers(0, 30), max_size=4),
       keep=st.sampled_from(['latest', 'none']), order_by=st.booleans(),
       parts=st.integers(1, 4), spill_rows=st.integers(1, 40))
def test_key_facts_spilled_in_any_grouping_find_the_copy_to_keep(keys_dir, rows, cuts, keep,
                                                                 order_by, parts, spill_rows):
    """Batches whose facts are spilled to scratch by partition, in any bundles and spill sizes,
    find every duplicated key and, for keep: latest, the copy with the greatest (order, source,
    row)."""
    from transforms.conform import dedup
    table = Table(Schema('id'), keep, 'order' if order_by else None)
    numbered = [(key, order, source, n + 1) for n, (key, order, source) in enumerate(rows)]
    bounds = sorted({0, len(rows), *[c for c in cuts if c < len(rows)]})
    batches = [pa.record_batch({
        'id': pa.array([r[0] for r in part], pa.string()),
        'order': pa.array([r[1] for r in part], pa.int64()),
        SOURCE: pa.array([r[2] for r in part], pa.string()),
        ROW: pa.array([r[3] for r in part], pa.int64())})
        for part in (numbered[a:b] for a, b in zip(bounds, bounds[1:]))]
    bundles = [batches[:1] * 2] + [[b] for b in batches[1:]]  # the first batch twice
    with tempfile.TemporaryDirectory() as directory, \
            mock.patch.object(dedup, 'SPILL_ROWS', spill_rows):
        scratch = Scratch(directory, keys_dir, 'r')
        fn = dedup._SpillKeyFactsFn(table, scratch, parts)
        spilled = []
        for bundle in bundles:
            fn.start_bundle()
            for batch in bundle:
                spilled += fn.process(batch)
            spilled += [w.value for w in fn.finish_bundle()]
        result = {}
        for p in range(parts):
            result.update(dedup._duplicated_in_partition(p, table, scratch, spilled))
    counted = collections.Counter(r[0] for r in numbered)
    if batches[:1]:  # the first batch was read twice: its keys count twice
        counted.update(batches[0].column('id').to_pylist())
    duplicated = {k for k, n in counted.items() if n > 1}
    assert set(result) == duplicated
    for key in duplicated:
        if keep == 'none':
            assert result[key] is None
        else:
            copies = [{'order': o if order_by else None, 'source': s, 'row': n}
                      for k, o, s, n in numbered if k == key]
            assert result[key] == max(dedup._rank(c) for c in copies)[2:]


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(KEYS, max_size=20), wider=st.integers(0, 5), parts=st.integers(1, 7))
def test_a_key_falls_in_one_partition_at_any_width(keys, wider, parts):
    fixed = fixed_width(pa.array(keys, pa.string()))
    of = partition_of(fixed, parts)
    assert ((0 <= of) & (of < parts)).all()
    widened = fixed.astype(f'S{fixed.dtype.itemsize + wider}')
    assert partition_of(widened, parts).tolist() == of.tolist()
    order, bounds = split_by_partition(fixed, parts)
    for p in range(parts):
        assert set(of[order[bounds[p]:bounds[p + 1]]].tolist()) <= {p}


def test_string_hashes_depend_on_the_text_alone_and_split_tables_whole():
    import pyarrow as pa
    from transforms.common.sorted_keys import split_table, string_hashes
    texts = ['', 'a', 'ab', 'ba', '张三', None, 'a' * 300, 'ab']
    h = string_hashes(pa.array(texts))
    assert h[2] == h[7] and h[0] == h[5]  # equal texts; a null hashes as empty
    assert len({int(x) for x in h[:5]} | {int(h[6])}) == 6
    sliced = pa.array(['x'] + texts).slice(1)  # an offset into the buffers
    assert list(string_hashes(sliced)) == list(h)
    table = pa.table({'k': [f'k{i % 50}' for i in range(1000)], 'v': list(range(1000))})
    parts = dict(split_table(table, 'k', 8))
    assert sum(p.num_rows for p in parts.values()) == 1000
    for part in parts.values():
        for key in set(part.column('k').to_pylist()):
            assert sum(key in p.column('k').to_pylist() for p in parts.values()) == 1
