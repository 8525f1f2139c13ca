"""Cast seller columns to a table schema's types (pure, vectorized; no Beam).

``cast_column`` returns the typed column and a mask of the rows whose value could not be cast,
with a description of what was expected. The description never contains the value itself.
"""

import dataclasses
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from schemas import FieldSpec

__all__ = ['CastResult', 'NULL_TOKENS', 'cast_column']

# Text that means "no value" in seller exports.
NULL_TOKENS = ('', 'NULL', 'null', r'\N')

_TRUE = ['true', 't', '1', 'y', 'yes', '是']
_FALSE = ['false', 'f', '0', 'n', 'no', '否']

# 2024-01-02, 2024/1/2, 20240102, 2024年1月2日
_DATE_RE = (r'^(?P<y>\d{4})(?:-(?P<m1>\d{1,2})-(?P<d1>\d{1,2})|/(?P<m2>\d{1,2})/(?P<d2>\d{1,2})'
            r'|(?P<m3>\d{2})(?P<d3>\d{2})|年(?P<m4>\d{1,2})月(?P<d4>\d{1,2})日)$')
_NAIVE_TS_RE = r'^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$'
_ZONED_TS_RE = r'^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$'
_INT_RE = r'^[+-]?\d{1,18}$'
_FLOAT_RE = r'^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$'
_INT_RANGE = {'int': (-2**31, 2**31 - 1), 'long': (-2**63, 2**63 - 1)}


@dataclasses.dataclass(frozen=True)
class CastResult:
    values: pa.Array  # typed column; null where the input was null or bad
    bad: Optional[pa.Array]  # boolean mask of rows that could not be cast (None: none)
    expected: str  # what a valid value looks like, for the dead letter's `problem`


def cast_column(values: pa.Array, field: FieldSpec, *, zone: str = 'Asia/Shanghai',
                null_values=NULL_TOKENS) -> CastResult:
    """Cast one column to ``field``'s type. Text columns are parsed; typed ones cast safely.

    Naive timestamps are read in ``zone``; text equal to one of ``null_values`` (after trimming)
    is null.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    target = field.arrow_type
    expected = _EXPECTED[field.kind](field)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        text = pc.utf8_trim_whitespace(values.cast(pa.string()))
        text = pc.if_else(pc.is_in(text, pa.array(null_values, pa.string())),
                          pa.scalar(None, pa.string()), text)
        if field.kind in ('string',):
            return CastResult(text, None, expected)
        typed = _PARSERS[field.kind](text, field, zone)
        bad = pc.and_(pc.is_valid(text), pc.is_null(typed))
    elif values.type.equals(target):
        return CastResult(values, None, expected)
    else:
        typed = _cast_safely(values, target)
        bad = pc.and_(pc.is_valid(values), pc.is_null(typed))
    if field.kind == 'enum':
        typed, bad = _check_symbols(typed, bad, field)
    if not pc.any(bad).as_py():
        return CastResult(typed, None, expected)
    return CastResult(typed, bad, expected)


def _check_symbols(typed, bad, field):
    outside = pc.and_(pc.is_valid(typed), pc.invert(pc.is_in(typed, pa.array(field.symbols))))
    bad = pc.or_(bad, outside)
    return pc.if_else(outside, pa.scalar(None, typed.type), typed), bad


def _cast_safely(values: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast; values that cannot be cast become null. Bisects only when a batch has bad values."""
    try:
        return values.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(values) == 1:
            return pa.nulls(1, type=target)
        middle = len(values) // 2
        return pa.concat_arrays([_cast_safely(values.slice(0, middle), target),
                                 _cast_safely(values.slice(middle), target)])


def _gated(text, pattern, target):
    """Cast only the values matching ``pattern``; the rest become null."""
    ok = pc.match_substring_regex(text, pattern)
    candidates = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    return _cast_safely(candidates, target)


def _parse_int(text, field, zone):
    wide = _gated(text, _INT_RE, pa.int64())
    low, high = _INT_RANGE[field.kind]
    if field.kind == 'long':
        return wide
    in_range = pc.and_(pc.greater_equal(wide, low), pc.less_equal(wide, high))
    return pc.if_else(in_range, wide, pa.scalar(None, pa.int64())).cast(field.arrow_type)


def _parse_float(text, field, zone):
    return _gated(text, _FLOAT_RE, field.arrow_type)


def _parse_decimal(text, field, zone):
    whole, scale = field.precision - field.scale, field.scale
    integer = rf'\d{{1,{whole}}}' if whole else '0?'
    fraction = rf'(\.\d{{1,{scale}}})?' if scale else ''
    return _gated(text, rf'^[+-]?{integer}{fraction}$', field.arrow_type)


def _parse_boolean(text, field, zone):
    lower = pc.utf8_lower(text)
    is_true = pc.is_in(lower, pa.array(_TRUE))
    is_false = pc.is_in(lower, pa.array(_FALSE))
    return pc.if_else(is_true, True, pc.if_else(is_false, False, pa.scalar(None, pa.bool_())))


def _parse_date(text, field, zone):
    parts = pc.extract_regex(text, _DATE_RE)
    year = parts.field('y')

    def first(*names):
        return pc.coalesce(*[pc.if_else(pc.equal(parts.field(n), ''), None, parts.field(n))
                             for n in names])

    month = pc.utf8_lpad(first('m1', 'm2', 'm3', 'm4'), 2, '0')
    day = pc.utf8_lpad(first('d1', 'd2', 'd3', 'd4'), 2, '0')
    iso = pc.binary_join_element_wise(year, month, day, '-')
    return _cast_safely(iso, pa.date32())


def _parse_timestamp(text, field, zone):
    iso = pc.replace_substring(text, ' ', 'T', max_replacements=1)
    naive = _gated(iso, _NAIVE_TS_RE, pa.timestamp('us'))
    local = pc.assume_timezone(naive, zone, ambiguous='earliest', nonexistent='earliest')
    zoned = _gated(iso, _ZONED_TS_RE, pa.timestamp('us', tz='UTC'))
    return pc.coalesce(local.cast(pa.timestamp('us', tz='UTC')), zoned)


def _parse_enum(text, field, zone):
    return text


_PARSERS = {
    'int': _parse_int,
    'long': _parse_int,
    'float': _parse_float,
    'double': _parse_float,
    'decimal': _parse_decimal,
    'boolean': _parse_boolean,
    'date': _parse_date,
    'timestamp': _parse_timestamp,
    'enum': _parse_enum,
}

_EXPECTED = {
    'string': lambda f: 'text',
    'int': lambda f: 'a whole number (32-bit)',
    'long': lambda f: 'a whole number (64-bit)',
    'float': lambda f: 'a number',
    'double': lambda f: 'a number',
    'decimal': lambda f: (f'a decimal number with at most {f.precision - f.scale} digits '
                          f'before and {f.scale} after the point'),
    'boolean': lambda f: 'a boolean (true/false, 1/0, Y/N, 是/否)',
    'date': lambda f: 'a date (2024-01-02, 2024/1/2, 20240102 or 2024年1月2日)',
    'timestamp': lambda f: 'a timestamp (2024-01-02 03:04:05, optionally with a zone offset)',
    'enum': lambda f: f'one of {", ".join(f.symbols)}',
}
