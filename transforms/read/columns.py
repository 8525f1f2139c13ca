"""Columns: how a file's columns map to the schema's fields (names, aliases, extra and missing
columns, a header that is really a data row), and Python values made into Arrow arrays.
"""

import json

import pyarrow as pa

from transforms.common.errors import InputError

__all__ = ['ColumnPlan', 'looks_like_value', 'shown_columns', 'text_array', 'typed_array']


# A column name longer than this, or holding this many digits, is more likely a value.
_NAME_MAX = 64


_NAME_DIGITS = 6


def looks_like_value(name: str) -> bool:
    """Whether a column name looks like a customer's value rather than a name: an identifier
    the detectors find, many digits, an @, or very long."""
    from transforms.detect.detectors import find
    return (len(name) > _NAME_MAX or sum(c.isdigit() for c in name) >= _NAME_DIGITS
            or '@' in name or bool(find(name)))


def shown_columns(names) -> list:
    """Column names as messages and the manifest show them. If any looks like a value, the
    line they come from is probably a record, not a header: none of them is shown (a name
    next to an ID number may be the customer's own)."""
    names = list(names)
    if _any_looks_like_value(names):
        return [f'<{len(names)} name(s) not shown: some look like values, so the first line '
                f'may be a record, not a header>']
    return names


def _any_looks_like_value(names) -> bool:
    """``looks_like_value`` over many names, the detectors run once over all of them."""
    from transforms.detect.detectors import scan
    return any(len(n) > _NAME_MAX or sum(c.isdigit() for c in n) >= _NAME_DIGITS or '@' in n
               for n in names) or bool(names and scan(list(names)))


def _some(names, shown=20) -> str:
    """Names for a one-line message: the first ``shown``, then how many more."""
    names = list(names)
    more = f' and {len(names) - shown:,} more' if len(names) > shown else ''
    return ', '.join(str(n) for n in names[:shown]) + more


class ColumnPlan:
    """How a file's columns map to the schema's fields (pure).

    A column is a field's name or one of its aliases. Columns that are no field are an error
    (they would be unclassified data) unless the table says ``extra_columns: ignore``; then they
    are left out and listed in the manifest. Missing nullable fields read as nulls; missing
    required fields are an error.
    """

    def __init__(self, table):
        self._table = table
        self._field_of = {}
        for f in table.schema.fields:
            for name in (f.name,) + f.aliases:
                self._field_of[name] = f.name

    def knows(self, column: str) -> bool:
        """Whether ``column`` names a field of the schema (by name or alias)."""
        return column in self._field_of

    def field(self, column: str) -> str:
        """The field ``column`` names (a field's name or one of its aliases)."""
        return self._field_of[column]

    def resolve(self, columns, path, *, require_all=True):
        """(source column -> field, ignored columns), or InputError naming what is wrong.

        ``require_all=False`` (JSON Lines, where each record names its own keys) leaves missing
        required fields to Conform, row by row.
        """
        schema = self._table.schema
        if columns and not any(c in self._field_of for c in columns):
            raise InputError(f'{path}: none of its {len(columns)} column names is a field of '
                             f'{schema.source}: a file without its header line, or another '
                             f'table\'s file? (the names are not shown: they may be data)')
        mapping, ignored, seen = {}, [], {}
        for column in columns:
            field = self._field_of.get(column)
            if field is None:
                ignored.append(column)
                continue
            if field in seen:
                raise InputError(f'{path}: columns {seen[field]!r} and {column!r} both map to '
                                 f'field {field!r} of {schema.source}')
            seen[field] = column
            mapping[column] = field
        ignored = shown_columns(ignored) if ignored else []  # the manifest lists them
        if ignored and self._table.extra_columns != 'ignore':
            raise InputError(
                f'{path}: column(s) not in the schema (unclassified): {_some(ignored)}; '
                f'classify them in {schema.source} (or add an alias), or set tables.'
                f'{self._table.name}.extra_columns: ignore')
        missing = [f.name for f in schema.fields if f.name not in seen and not f.nullable]
        if missing and require_all:
            raise InputError(f'{path}: missing required column(s) {", ".join(missing)} of '
                             f'{schema.source}')
        return mapping, ignored

    def batch(self, batch: pa.RecordBatch, mapping) -> pa.RecordBatch:
        """``batch`` with the schema's fields in order; absent fields as null text."""
        by_field = {field: batch.column(column) for column, field in mapping.items()}
        n = batch.num_rows
        names = self._table.schema.field_names
        return pa.RecordBatch.from_arrays(
            [by_field[name] if name in by_field else pa.nulls(n, pa.string()) for name in names],
            names=list(names))


def text_array(values):
    """Values as text: strings as they are, booleans as true/false, anything else (numbers
    not kept as text, nested values) as its JSON."""
    try:
        return pa.array(values, type=pa.string())  # all strings (or None): Arrow's own loop
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    return pa.array([None if v is None else
                     ('true' if v else 'false') if isinstance(v, bool) else
                     v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                     for v in values], type=pa.string())


def typed_array(values):
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        return text_array(values)  # mixed types (an Avro union): let Conform cast the text
