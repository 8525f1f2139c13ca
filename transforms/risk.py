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

Everything runs in the pipeline, on every worker: each batch's customers are split into shards
by their delivered subject key, each shard's customers are grouped with Arrow, classes are
combined across shards by key, and only the figures meet in one place; no rows are gathered.
"""

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['ReidentificationRisk', 'class_summaries', 'customer_parts', 'risk_figures']

_SUBJECT, _PART = '__subject', '__part'
_NULL = '\u2205'  # a null value, as a class sees it
_FIELD_SEPARATOR = '\u241f'
_PART_SEPARATOR = '\u241e'
_SHARD_CHARACTERS = 2  # the subject key's last two characters: up to 256 shards of pseudonyms


def _text(column: pa.Array) -> pa.Array:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return pc.fill_null(column, _NULL)


def customer_parts(batch: pa.RecordBatch, table) -> pa.Table:
    """(subject, part, sensitive attributes...) of a delivered batch, distinct: ``part`` is the
    table's name and the row's quasi-identifiers, as one text."""
    qis = [_text(batch.column(n)) for n in table.quasi_identifiers]
    part = pc.binary_join_element_wise(pa.array([table.name] * batch.num_rows, pa.string()),
                                       *qis, _FIELD_SEPARATOR)
    columns = {_SUBJECT: _text(batch.column(table.subject_key)), _PART: part}
    for name in table.sensitive_attributes:
        columns[f'{table.name}.{name}'] = _text(batch.column(name))
    t = pa.table(columns)
    return t.group_by(t.column_names, use_threads=False).aggregate([])


def _shards(t: pa.Table):
    shard = pc.utf8_slice_codeunits(t.column(_SUBJECT), -_SHARD_CHARACTERS)
    t = t.append_column('__shard', shard)
    for key in pc.unique(shard).to_pylist():
        yield key, t.filter(pc.equal(t.column('__shard'), key)).drop_columns(['__shard'])


def class_summaries(parts) -> list:
    """(class, (customers, {attribute: distinct values})) for the customers of ``parts``
    (tables from ``customer_parts``, all of a customer's rows among them)."""
    tables = list(parts)
    if not tables:
        return []
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
    sizes = classes.group_by('class').aggregate([(_SUBJECT, 'count')])
    out = {c: (n, {}) for c, n in zip(sizes.column('class').to_pylist(),
                                      sizes.column(f'{_SUBJECT}_count').to_pylist())}
    for attribute in attributes:
        values = t.select([_SUBJECT, attribute]).filter(pc.is_valid(t.column(attribute)))
        joined = values.join(classes, _SUBJECT)
        distinct = joined.group_by('class').aggregate([(attribute, 'distinct')])
        for cls, seen in zip(distinct.column('class').to_pylist(),
                             distinct.column(f'{attribute}_distinct').to_pylist()):
            out[cls][1][attribute] = frozenset(seen)
    return sorted(out.items())


def _with_columns(t, attributes):
    for name in attributes:
        if name not in t.column_names:
            t = t.append_column(name, pa.nulls(t.num_rows, pa.string()))
    return t.select([_SUBJECT, _PART] + attributes)


class _MergeClass(beam.CombineFn):
    """A class across shards: customers add up, distinct values unite."""

    def create_accumulator(self):
        return 0, {}

    def add_input(self, acc, value):
        n, attributes = acc
        m, more = value
        merged = dict(attributes)
        for name, seen in more.items():
            merged[name] = merged.get(name, frozenset()) | seen
        return n + m, merged

    def merge_accumulators(self, accs):
        total = self.create_accumulator()
        for acc in accs:
            total = self.add_input(total, acc)
        return total

    def extract_output(self, acc):
        return acc


class _RiskFigures(beam.CombineFn):
    """Class summaries to the run's figures: sizes counted, l per attribute kept at its least."""

    def __init__(self, min_k, attributes):
        self._min_k = min_k
        self._attributes = tuple(attributes)

    def create_accumulator(self):
        return {'sizes': {}, 'l': {}, 'single': {}}

    def add_input(self, acc, summary):
        n, attributes = summary
        acc['sizes'][n] = acc['sizes'].get(n, 0) + 1
        for name in self._attributes:
            l_value = len(attributes.get(name, ()))
            acc['l'][name] = min(acc['l'].get(name, l_value), l_value)
            acc['single'][name] = acc['single'].get(name, 0) + (l_value <= 1)
        return acc

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
        return risk_figures(acc['sizes'], self._min_k, acc['l'], acc['single'])


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
    the run's risk figures (``risk_figures``)."""

    def __init__(self, tables, min_k):
        super().__init__()
        self._tables = tuple(tables)
        self._min_k = min_k

    def expand(self, delivered):
        parts = [delivered[t.name] | f'Parts[{t.name}]' >> beam.FlatMap(
            lambda batch, table: _shards(customer_parts(batch, table)), t)
            for t in self._tables]
        attributes = [f'{t.name}.{n}' for t in self._tables for n in t.sensitive_attributes]
        return (parts
                | 'AllParts' >> beam.Flatten()
                | 'ByShard' >> beam.GroupByKey()
                | 'Classes' >> beam.FlatMap(lambda kv: class_summaries(kv[1]))
                | 'MergeClasses' >> beam.CombinePerKey(_MergeClass())
                | 'Summaries' >> beam.Values()
                | 'Figures' >> beam.CombineGlobally(_RiskFigures(self._min_k, attributes)))

