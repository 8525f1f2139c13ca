"""Re-identification risk of what was delivered: k-anonymity, prosecutor risk, l-diversity.

A customer's quasi-identifiers are the delivered values of the fields marked
``quasi_identifier``, in every table that has any (for a table with several rows a customer,
each distinct combination counts). Customers with the same quasi-identifiers form an
equivalence class: the acquirer, or whoever gets the data, cannot tell them apart by those
fields. The figures, as ARX reports them for its prosecutor model:

- k: the size of the smallest class; the histogram of class sizes;
- the customers (and their share) in classes smaller than ``risk.min_k``;
- the highest re-identification risk, 1 / k, and the average, classes / customers (the mean of
  1 / class size over customers);
- per ``sensitive_attribute``: l, the fewest distinct values in a class (distinct
  l-diversity), and how many classes have one value only (all their customers' value is known).

Everything runs in the pipeline, on every worker, in Arrow tables: each batch's customers are
split into shards by a hash of their delivered subject key; each shard finds its customers'
classes, which are split again by a hash of the class, so that each class meets in one shard;
each such shard counts its classes' sizes and values, and only those figures meet in one place.
No rows are gathered, and no Beam element stands for one customer or one class. The shards wait
in the run's scratch files between the steps (``GroupInScratch``), not in the runner's memory.

When one table holds the quasi-identifiers and its primary key is its subject key, a
delivered row is a customer (duplicates were refused), so each batch counts its own classes
and only the counts go on: the step by customer is skipped (``class_counts``).
"""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.common.scratch import GroupInScratch
from transforms.common.sorted_keys import split_rows, split_table, string_hashes

__all__ = ['ReidentificationRisk', 'class_counts', 'class_figures', 'combined_classes',
           'customer_classes', 'customer_parts', 'one_row_a_customer', 'risk_figures']

_SUBJECT, _PART = '__subject', '__part'
_NULL = '\u2205'  # a null value, as a class sees it
_FIELD_SEPARATOR = '\u241f'
_PART_SEPARATOR = '\u241e'
_NO_VALUES = pa.table({'class': pa.array([], pa.string()), 'attribute': pa.array([], pa.string()),
                       'value': pa.array([], pa.string())})
SHARDS = 16  # at least; more for a large input (ReidentificationRisk's ``shards``)


def _text(column: pa.Array) -> pa.Array:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return pc.fill_null(column, _NULL)


def customer_parts(batch: pa.RecordBatch, table) -> pa.Table:
    """(subject, part, sensitive attributes...) of a delivered batch, distinct: ``part`` is the
    table's name and the row's quasi-identifiers, as one text."""
    columns = {_SUBJECT: _text(batch.column(table.subject_key)), _PART: _part(batch, table)}
    for name in table.sensitive_attributes:
        columns[f'{table.name}.{name}'] = _text(batch.column(name))
    t = pa.table(columns)
    return t.group_by(t.column_names, use_threads=False).aggregate([])


def _part(batch, table) -> pa.Array:
    """Each row's part: the table's name and the row's quasi-identifiers, as one text."""
    qis = [_text(batch.column(n)) for n in table.quasi_identifiers]
    return pc.binary_join_element_wise(pa.array([table.name] * batch.num_rows, pa.string()),
                                       *qis, _FIELD_SEPARATOR)


def one_row_a_customer(tables) -> bool:
    """Whether each delivered row of ``tables`` is one customer's whole part: one table, whose
    primary key is its subject key (a primary key is never null, and duplicates are refused
    before delivery)."""
    return len(tables) == 1 and tables[0].schema.primary_key == tables[0].subject_key


def class_counts(batch: pa.RecordBatch, table) -> tuple:
    """(customers, values) of a batch of a ``one_row_a_customer`` table, as ``customer_classes``
    gives them, with the customers counted: (class, count) per class of the batch."""
    classes = pc.dictionary_encode(_part(batch, table))
    index = classes.indices.to_numpy()
    customers = pa.table({'class': classes.dictionary,
                          'count': np.bincount(index, minlength=len(classes.dictionary))})
    values = []
    for name in table.sensitive_attributes:
        encoded = pc.dictionary_encode(_text(batch.column(name)))
        width = max(1, len(encoded.dictionary))
        pairs = np.unique(index.astype(np.int64) * width + encoded.indices.to_numpy())
        of_class, of_value = np.divmod(pairs, width)
        values.append(pa.table({'class': classes.dictionary.take(pa.array(of_class)),
                                'attribute': pa.array([f'{table.name}.{name}'] * len(pairs),
                                                      pa.string()),
                                'value': encoded.dictionary.take(pa.array(of_value))}))
    return customers, (pa.concat_tables(values) if values else _NO_VALUES)


def customer_classes(parts) -> tuple:
    """(customers, values) of one shard of customers, from its ``customer_parts`` tables (all
    of each customer's rows among them): ``customers`` has each customer's class (the sorted
    set of their parts, as one text), ``values`` each distinct (class, attribute, value)."""
    tables = list(parts)
    attributes = sorted({c for t in tables for c in t.column_names} - {_SUBJECT, _PART})
    t = pa.concat_tables([_with_columns(t, attributes) for t in tables])
    pairs = t.select([_SUBJECT, _PART])
    pairs = pairs.group_by([_SUBJECT, _PART], use_threads=False).aggregate([])
    pairs = pairs.sort_by([(_SUBJECT, 'ascending'), (_PART, 'ascending')])
    # sorted parts, grouped in order (use_threads=False keeps it): one class key a customer
    customers = pairs.group_by(_SUBJECT, use_threads=False).aggregate([(_PART, 'list')])
    classes = pa.table({_SUBJECT: customers.column(_SUBJECT),
                        'class': pc.binary_join(customers.column(f'{_PART}_list'),
                                                _PART_SEPARATOR)})
    values = []
    for attribute in attributes:
        rows = t.select([_SUBJECT, attribute]).filter(pc.is_valid(t.column(attribute)))
        joined = rows.join(classes, _SUBJECT).select(['class', attribute])
        joined = joined.group_by(['class', attribute], use_threads=False).aggregate([])
        values.append(pa.table({'class': joined.column('class'),
                                'attribute': pa.array([attribute] * joined.num_rows,
                                                      pa.string()),
                                'value': joined.column(attribute)}))
    values = pa.concat_tables(values) if values else _NO_VALUES
    customers = classes.select(['class'])
    return customers.append_column('count', pa.array(np.ones(customers.num_rows, np.int64))), \
        values


def _parts_by_shard(batch, table, shards):
    for shard, part in split_table(customer_parts(batch, table), _SUBJECT, shards):
        yield shard, ('parts', part)


def _by_class(kv, shards):
    """A shard of customers' classes and values, split again by a hash of the class: every
    customer of a class then meets in one shard."""
    yield from _classes_by_shard(customer_classes(table for _, table in kv[1]), shards)


def _counted_by_shard(batch, table, shards):
    """A batch's class counts, split by a hash of the class."""
    yield from _classes_by_shard(class_counts(batch, table), shards)


def _classes_by_shard(classes, shards):
    """Customers' classes and values, by a hash of the class (each distinct class hashed once:
    the values' classes are among the customers')."""
    customers, values = classes
    distinct = pc.dictionary_encode(customers.column('class').combine_chunks())
    shard_of = (string_hashes(distinct.dictionary) % np.uint64(shards)).astype(np.intp)
    yield from ((shard, ('customers', part)) for shard, part in split_rows(
        customers, shard_of[distinct.indices.to_numpy()], shards))
    of_values = pc.index_in(values.column('class'), value_set=distinct.dictionary).to_numpy()
    yield from ((shard, ('values', part)) for shard, part in split_rows(
        values, shard_of[of_values], shards))


def combined_classes(kind: str, table: pa.Table) -> pa.Table:
    """A shard's ('customers', (class, count)) rows summed by class, or its ('values', (class,
    attribute, value)) rows made distinct (pure): what a worker holds of a shard shrinks to its
    classes before it is written."""
    if kind == 'customers':
        summed = table.group_by('class', use_threads=False).aggregate([('count', 'sum')])
        return pa.table({'class': summed.column('class'), 'count': summed.column('count_sum')})
    return table.group_by(['class', 'attribute', 'value'], use_threads=False).aggregate(
        []).select(['class', 'attribute', 'value'])


def class_figures(items, attributes) -> dict:
    """{'sizes': {size: classes}, 'l': {attribute: least l}, 'single': {attribute: classes
    with at most one value}} of one shard of classes (pure): ``items`` are ('customers',
    (class, count)) and ('values', (class, attribute, value)) tables."""
    customers = pa.concat_tables([v for k, v in items if k == 'customers'])
    values = [v for k, v in items if k == 'values']
    sizes = customers.group_by('class').aggregate([('count', 'sum')])
    histogram = pc.value_counts(sizes.column('count_sum')).to_pylist()
    out = {'sizes': {h['values']: h['counts'] for h in histogram}, 'l': {}, 'single': {}}
    values = pa.concat_tables(values) if values else None
    for attribute in attributes:
        if values is None:
            l_of = np.zeros(sizes.num_rows, dtype=np.int64)
        else:
            of = values.filter(pc.equal(values.column('attribute'), attribute))
            # distinct again: the customers of a class came from several shards
            counted = of.group_by('class').aggregate([('value', 'count_distinct')])
            joined = sizes.select(['class']).join(counted, 'class', join_type='left outer')
            l_of = pc.fill_null(joined.column('value_count_distinct'), 0).to_numpy()
        out['l'][attribute] = int(l_of.min()) if len(l_of) else 0
        out['single'][attribute] = int((l_of <= 1).sum())
    return out


def _with_columns(t, attributes):
    for name in attributes:
        if name not in t.column_names:
            t = t.append_column(name, pa.nulls(t.num_rows, pa.string()))
    return t.select([_SUBJECT, _PART] + attributes)


class _RiskFigures(beam.CombineFn):
    """The shards' figures to the run's: class sizes added up, l kept at its least."""

    def __init__(self, min_k, attributes):
        self._min_k = min_k
        self._attributes = tuple(attributes)

    def create_accumulator(self):
        return {'sizes': {}, 'l': {}, 'single': {}}

    def add_input(self, acc, shard):
        return self.merge_accumulators([acc, shard])

    def merge_accumulators(self, accs):
        total = self.create_accumulator()
        for acc in accs:
            for n, count in acc['sizes'].items():
                total['sizes'][n] = total['sizes'].get(n, 0) + count
            for name, l_value in acc['l'].items():
                total['l'][name] = min(total['l'].get(name, l_value), l_value)
            for name, count in acc['single'].items():
                total['single'][name] = total['single'].get(name, 0) + count
        return total

    def extract_output(self, acc):
        return risk_figures(acc['sizes'], self._min_k,
                            {a: acc['l'].get(a, 0) for a in self._attributes},
                            {a: acc['single'].get(a, 0) for a in self._attributes})


def risk_figures(sizes: dict, min_k: int, l_values=None, single=None) -> dict:
    """The figures from the histogram of class sizes ({size: classes}) (pure)."""
    customers = sum(n * c for n, c in sizes.items())
    classes = sum(sizes.values())
    k = min(sizes) if sizes else 0
    below = sum(n * c for n, c in sizes.items() if n < min_k)
    return {
        'customers': customers,
        'classes': classes,
        'k': k,
        'class_sizes': {str(n): sizes[n] for n in sorted(sizes)},
        'min_k': min_k,
        'customers_below_min_k': below,
        'share_below_min_k': below / customers if customers else 0.0,
        'highest_risk': 1 / k if k else 0.0,
        'average_risk': classes / customers if customers else 0.0,
        'l_diversity': {name: {'l': l_values[name], 'classes_with_one_value': single[name]}
                        for name in sorted(l_values or {})},
    }


class ReidentificationRisk(beam.PTransform):
    """Takes {table name: delivered batches} for ``config.risk_tables``; outputs one dict,
    the run's risk figures (``risk_figures``). ``scratch``: the run's
    ``transforms.common.scratch.Scratch``, where the shards wait between steps; ``shards``:
    how many (memory follows a shard, so a large input takes more)."""

    def __init__(self, tables, min_k, scratch, shards=SHARDS):
        super().__init__()
        self._tables = tuple(tables)
        self._min_k = min_k
        self._scratch = scratch
        self._shards = max(SHARDS, shards)

    def expand(self, delivered):
        if one_row_a_customer(self._tables):
            t = self._tables[0]
            classes = delivered[t.name] | f'Counts[{t.name}]' >> beam.FlatMap(
                _counted_by_shard, t, self._shards)
        else:
            classes = (tuple(delivered[t.name] | f'Parts[{t.name}]' >> beam.FlatMap(
                           _parts_by_shard, t, self._shards) for t in self._tables)
                       | 'ByCustomer' >> GroupInScratch(self._scratch, 'risk-customers',
                                                       self._shards)
                       | 'Classes' >> beam.FlatMap(_by_class, self._shards))
        attributes = [f'{t.name}.{n}' for t in self._tables for n in t.sensitive_attributes]
        return (classes
                | 'ByClass' >> GroupInScratch(self._scratch, 'risk-classes', self._shards,
                                              combine=combined_classes)
                | 'ShardFigures' >> beam.Map(lambda kv: class_figures(kv[1], attributes))
                | 'Figures' >> beam.CombineGlobally(_RiskFigures(self._min_k, attributes)))
