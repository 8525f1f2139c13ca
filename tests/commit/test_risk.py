"""Re-identification risk: the Beam combine against pycanon and a direct count; the figures in
the manifest and the report; risk.enforce aborting a run before its manifest."""

import json
import os
import random

import pandas as pd
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that
from pycanon import anonymity

from tests.conftest import local_pipeline, user_lines
from transforms.commit.risk import (ReidentificationRisk, class_figures, combined_classes,
                                    customer_classes, customer_parts, risk_figures)


class Table:
    """The parts of a TableConfig the risk step reads."""

    def __init__(self, name, qis, sas=(), subject='customer_id', primary_key=None):
        self.name, self.quasi_identifiers, self.sensitive_attributes = name, tuple(qis), tuple(sas)
        self.subject_key = subject
        self.schema = type('Schema', (), {'primary_key': primary_key})


def generated(n, seed):
    rng = random.Random(seed)
    return pd.DataFrame({
        'customer_id': [f'{rng.getrandbits(64):016x}' for _ in range(n)],
        'gender': [rng.choice('MF') for _ in range(n)],
        'birth_year': [str(rng.randrange(1960, 1975)) for _ in range(n)],
        'city': [rng.choice(['上海', '北京', '深圳', '杭州', '成都']) for _ in range(n)],
        'score': [rng.choice(['[500,550)', '[550,600)', '[600,650)']) for _ in range(n)],
    })


def batches(df, size):
    table = pa.Table.from_pandas(df, preserve_index=False)
    return table.to_batches(max_chunksize=size)


@pytest.mark.parametrize('primary_key', [None, 'customer_id'], ids=['by-customer', 'counted'])
@pytest.mark.parametrize('n, seed', [(300, 1), (2000, 2), (5000, 3)])
def test_k_and_l_match_pycanon_on_generated_customers(n, seed, primary_key, scratch):
    """Both ways: customers gathered first, and (one row a customer) classes counted per
    batch."""
    df = generated(n, seed)
    qis, sa = ['gender', 'birth_year', 'city'], 'score'
    table = Table('customers', qis, [sa], primary_key=primary_key)
    with local_pipeline() as p:
        figures = ({'customers': p | __import__('apache_beam').Create(batches(df, 256))}
                   | ReidentificationRisk([table], min_k=5, scratch=scratch))
        expected_k = anonymity.k_anonymity(df, qis)
        expected_l = anonymity.l_diversity(df, qis, [sa])
        sizes = df.groupby(qis).size()
        expected = {
            'customers': n, 'classes': len(sizes), 'k': int(expected_k),
            'class_sizes': {str(k): int(v) for k, v in sorted(sizes.value_counts().items())},
            'customers_below_min_k': int(sizes[sizes < 5].sum()),
            'l': int(expected_l),
            'average_risk': len(sizes) / n,
        }

        def check(actual):
            (f,) = actual
            got = {k: f[k] for k in ('customers', 'classes', 'k', 'class_sizes',
                                     'customers_below_min_k', 'average_risk')}
            got['l'] = f['l_diversity']['customers.score']['l']
            assert got == expected
            assert f['highest_risk'] == 1 / expected_k
        assert_that(figures, check)


def test_a_customer_with_several_rows_in_several_tables_is_one_record():
    customers = pa.table({'customer_id': ['a', 'b', 'c'], 'gender': ['M', 'M', 'M']})
    # a and b have the same contracts' products; c has one product more
    contracts = pa.table({'customer_id': ['a', 'a', 'b', 'b', 'c', 'c', 'c'],
                          'product': ['car', 'van', 'van', 'car', 'car', 'van', 'bus']})
    parts = [customer_parts(customers.to_batches()[0], Table('customers', ['gender'])),
             customer_parts(contracts.to_batches()[0], Table('contracts', ['product']))]
    customers, _ = customer_classes(parts)
    figures = class_figures([('customers', customers)], [])
    assert figures['sizes'] == {1: 1, 2: 1}


def test_rows_without_a_subject_are_one_customer(scratch):
    """(A subject key that is the primary key is never null: such a table's classes are
    counted per batch.)"""
    import apache_beam as beam
    t = pa.table({'customer_id': ['a', None, 'c', None, 'e', 'f'],
                  'gender': ['M', 'M', 'F', 'F', 'M', 'F'],
                  'score': ['x', 'y', 'x', 'y', 'z', 'x']})
    table = Table('t', ['gender'], ['score'])

    def check(actual):
        (f,) = actual
        # a, e: M; c, f: F; the two rows without a subject, one customer of class {M, F}
        assert (f['customers'], f['class_sizes']) == (5, {'1': 1, '2': 2})
        # M: x, z; F: x, x; {M, F}: y
        assert f['l_diversity'] == {'t.score': {'l': 1, 'classes_with_one_value': 2}}
    with local_pipeline() as p:
        figures = ({'t': p | beam.Create(t.to_batches(max_chunksize=2))}
                   | ReidentificationRisk([table], min_k=2, scratch=scratch))
        assert_that(figures, check)


def test_classes_combined_before_they_are_written_give_the_same_figures():
    df = generated(3000, 4)
    table = Table('customers', ['gender', 'birth_year', 'city'], ['score'])
    parts = [customer_parts(b, table) for b in batches(df, 500)]
    customers, values = customer_classes(parts)
    items = [('customers', customers), ('values', values)]
    halves = [(kind, combined_classes(kind, t.slice(0, len(t) // 2)))
              for kind, t in items] + [(kind, combined_classes(kind, t.slice(len(t) // 2)))
                                       for kind, t in items]
    assert combined_classes('customers', customers).num_rows < customers.num_rows
    assert class_figures(halves, ['customers.score']) == \
        class_figures(items, ['customers.score'])


def test_nulls_are_a_value_and_sensitive_values_are_counted_per_class():
    t = pa.table({'customer_id': ['a', 'b', 'c', 'd'], 'gender': ['M', None, 'M', None],
                  'score': ['x', 'y', 'x', None]})
    parts = customer_parts(t.to_batches()[0], Table('t', ['gender'], ['score']))
    customers, values = customer_classes([parts])
    figures = class_figures([('customers', customers), ('values', values)], ['t.score'])
    # class M: scores x, x (l = 1); class null: y and a null, a value too (l = 2)
    assert figures == {'sizes': {2: 2}, 'l': {'t.score': 1}, 'single': {'t.score': 1}}


@pytest.mark.parametrize('sizes, min_k, expected', [
    ({1: 2, 5: 2}, 5, {'customers': 12, 'classes': 4, 'k': 1, 'customers_below_min_k': 2,
                       'highest_risk': 1.0, 'average_risk': 4 / 12}),
    ({10: 3}, 5, {'customers': 30, 'k': 10, 'customers_below_min_k': 0, 'highest_risk': 0.1}),
    ({}, 5, {'customers': 0, 'k': 0, 'share_below_min_k': 0.0, 'highest_risk': 0.0}),
])
def test_figures_from_class_sizes(sizes, min_k, expected):
    figures = risk_figures(sizes, min_k)
    assert {k: figures[k] for k in expected} == expected


@pytest.mark.slow
def test_the_run_records_the_risk_and_enforce_aborts_before_the_manifest(demo_copy, capsys):
    from pipelines.cli import main
    workdir, config, _ = demo_copy
    assert main(['run', '--config', config, '--run-id', 'risk-reported']) == 0
    capsys.readouterr()
    run_dir = os.path.join(workdir, 'out', 'risk-reported')
    manifest = json.load(open(os.path.join(run_dir, 'manifest.json'), encoding='utf-8'))
    risk = manifest['risk']
    assert risk['quasi_identifiers'] == ['customers.gender', 'customers.birth_date',
                                         'customers.city']
    assert risk['customers'] == manifest['tables']['customers']['rows_written']
    assert sum(int(n) * c for n, c in risk['class_sizes'].items()) == risk['customers']
    report = json.load(open(os.path.join(run_dir, 'report.json'), encoding='utf-8'))
    assert report['risk']['k'] == risk['k']
    assert 'Re-identification risk' in open(os.path.join(run_dir, 'report.html'),
                                            encoding='utf-8').read()
    text = open(config, encoding='utf-8').read() + '\nrisk: {min_k: 5, enforce: true}\n'
    open(config, 'w', encoding='utf-8').write(text)
    assert main(['run', '--config', config, '--run-id', 'risk-enforced']) == 3
    err = capsys.readouterr().err
    [last] = user_lines(err)
    assert last.startswith('novation: aborted: ') and 'risk.min_k 5' in last
    assert not os.path.exists(os.path.join(workdir, 'out', 'risk-enforced', 'manifest.json'))


def summary_lines(risk, sources=()):
    from pipelines.summary import print_summary
    manifest = {'run_id': 'r', 'transfer': {'seller': 's', 'acquirer': 'a'},
                'totals': {'rows_read': 4, 'rows_written': 4},
                'tables': {'t': {'rows_read': 4, 'rows_written': 4, 'dead_letters': {},
                                 'sensitive_suppressed_rows': 0}},
                'sources': list(sources), 'risk': risk}
    lines = []
    print_summary(manifest, out=lines.append)
    return lines


def test_the_summary_warns_when_customers_are_in_classes_below_min_k():
    alone = summary_lines(risk_figures({1: 4}, 5))
    assert any('WARNING: 4 of 4 customers (100.0%)' in line and 'every one alone' in line
               for line in alone)
    safe = summary_lines(risk_figures({5: 2}, 5))
    assert any('smallest class of quasi-identifiers holds 5' in line for line in safe)
    assert not any('WARNING' in line for line in safe)


def test_the_summary_names_a_table_with_more_lines_than_records():
    lines = summary_lines(None, [{'table': 't', 'rows_read': 4, 'lines': 6}])
    assert '  lines more than records (quoted values over several lines): t 2' in lines
