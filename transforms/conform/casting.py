"""Cast seller columns to a table schema's types (pure, vectorized; no Beam).

``cast_column`` returns the typed column and a mask of the rows whose value could not be cast,
with a description of what was expected. The description never contains the value itself.
"""

import dataclasses
from typing import Optional

import numpy as np
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
# The fixed-width forms most exports use (see _fixed_form): tried first, on the bytes.
_DATE_FORMS = ('dddd-dd-dd', 'dddd/dd/dd')
_TIMESTAMP_FORM = 'dddd-dd-dd?dd:dd:dd'  # naive, to the second
_ZONED_TIMESTAMP_FORM = 'dddd-dd-dd?dd:dd:dd±dd:dd'
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
        if text.null_count == len(text):  # e.g. a column of blanks: nothing to parse
            return CastResult(pa.nulls(len(text), target), None, expected)
        typed = _PARSERS[field.kind](text, field, zone)
        bad = pc.and_(pc.is_valid(text), pc.is_null(typed))
    elif values.type.equals(target) and field.kind not in _CALENDAR:
        return CastResult(values, None, expected)
    else:
        typed = _cast_safely(values, target)
        bad = pc.and_(pc.is_valid(values), pc.is_null(typed))
    if field.kind == 'enum':
        typed, bad = _check_symbols(typed, bad, field)
    if field.kind in _CALENDAR:
        typed, bad = _within_calendar(typed, bad, _CALENDAR[field.kind])
    if not pc.any(bad).as_py():
        return CastResult(typed, None, expected)
    return CastResult(typed, bad, expected)


# Days and microseconds since 1970 of 0001-01-01 and 9999-12-31 (the end of that day): a date
# or time outside them is in no calendar a reader (Python, Java, a database) can hold, so it is
# malformed, not a value to carry (Parquet and Avro store any 64-bit number).
_CALENDAR = {'date': (-719_162, 2_932_896),
             'timestamp': (-62_135_596_800_000_000, 253_402_300_799_999_999)}


def _within_calendar(typed, bad, bounds):
    low, high = bounds
    number = typed.cast(pa.int32() if pa.types.is_date32(typed.type) else pa.int64())
    outside = pc.fill_null(pc.or_(pc.less(number, low), pc.greater(number, high)), False)
    if not pc.any(outside).as_py():
        return typed, bad
    return (pc.if_else(outside, pa.scalar(None, typed.type), typed), pc.or_(bad, outside))


def _check_symbols(typed, bad, field):
    outside = pc.and_(pc.is_valid(typed), pc.invert(pc.is_in(typed, pa.array(field.symbols))))
    bad = pc.or_(bad, outside)
    return pc.if_else(outside, pa.scalar(None, typed.type), typed), bad


def _cast_safely(values: pa.Array, target: pa.DataType, screen=None) -> pa.Array:
    """Cast; values that cannot be cast become null. Bisects only when a batch has bad values.

    ``screen``, if given, nulls most bad values in one vectorized pass before bisecting (a
    bisection costs a cast per level for every bad value's half).
    """
    try:
        return values.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if screen is not None:
            return _cast_safely(screen(values), target)
        if len(values) == 1:
            return pa.nulls(1, type=target)
        middle = len(values) // 2
        return pa.concat_arrays([_cast_safely(values.slice(0, middle), target),
                                 _cast_safely(values.slice(middle), target)])


def _gated(text, pattern, target, screen=None):
    """Cast only the values matching ``pattern``; the rest become null."""
    ok = pc.match_substring_regex(text, pattern)
    candidates = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    return _cast_safely(candidates, target, screen)


_DAYS_IN_MONTH = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_ZERO = ord('0')


def _string_buffers(text: pa.Array):
    """(offsets, lengths, valid, data) of a string array, as numpy views of its buffers."""
    text = text.cast(pa.string())
    n = len(text)
    _, offsets, data = text.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int32)[text.offset:text.offset + n + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else \
        np.full(1, _ZERO, dtype=np.uint8)
    valid = np.ones(n, dtype=bool) if text.null_count == 0 else \
        text.is_valid().to_numpy(zero_copy_only=False)
    return offsets, np.diff(offsets), valid, data


def _leading_bytes(text: pa.Array, width: int):
    """(rows, lengths, valid): each value's first ``width`` bytes as a row of a matrix, padded
    with '0'; its length in bytes; whether it is non-null. Read from the Arrow buffers."""
    offsets, lengths, valid, data = _string_buffers(text)
    places = np.arange(width)
    present = (places < lengths[:, None]) & valid[:, None]
    index = np.where(present, offsets[:-1, None] + places, 0)
    return np.where(present, data[index], _ZERO).astype(np.uint8), lengths, valid


def _real(rows: np.ndarray) -> np.ndarray:
    """Which rows (YYYY-MM-DD[?HH:MM[:SS]] bytes) name a real day and time of day: the values
    Arrow's cast accepts (no 2023-02-29, 2024-04-31, 24:00 or 12:60)."""
    digits = rows[:, :19].T.astype(np.int32) - _ZERO  # one contiguous row per place

    def number(first, stop):
        value = digits[first]
        for place in range(first + 1, stop):
            value = value * 10 + digits[place]
        return value

    year, month, day = number(0, 4), number(5, 7), number(8, 10)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    longest = _DAYS_IN_MONTH[np.clip(month, 0, 12)] - ((month == 2) & ~leap)
    real = (month >= 1) & (month <= 12) & (day >= 1) & (day <= longest)
    if rows.shape[1] >= 16:
        real &= (number(11, 13) < 24) & (number(14, 16) < 60)
    if rows.shape[1] >= 19:
        real &= number(17, 19) < 60
    return real


def _real_moments(iso: pa.Array) -> pa.Array:
    """``iso`` with the values that name no real day or time of day as null, in one pass."""
    rows, _, valid = _leading_bytes(iso, 19)
    return pc.if_else(pa.array(valid & _real(rows)), iso, pa.scalar(None, pa.string()))


def _fixed_form(text: pa.Array, form: str):
    """(rows, valid) if every non-null value has ``form`` ('d' a digit, '?' a space or T, '±'
    a sign, any other character itself): ``rows`` holds the non-null values' bytes, one per
    row. Else None.

    Exports mostly write every value of a column one way; looking at the bytes directly is far
    cheaper than a regular expression.
    """
    width = len(form)
    offsets, lengths, valid, data = _string_buffers(text)
    if not valid.any() or (lengths[valid] != width).any():
        return None
    if (lengths[~valid] == 0).all():  # the usual layout: the values lie end to end
        rows = data[offsets[0]:offsets[-1]].reshape(-1, width)
    else:
        rows = data[offsets[:-1][valid, None] + np.arange(width)]
    digits = rows[:, [i for i, c in enumerate(form) if c == 'd']]
    if not ((digits >= _ZERO) & (digits <= ord('9'))).all():
        return None
    for i, c in enumerate(form):
        allowed = {'?': [ord(' '), ord('T')], '±': [ord('+'), ord('-')]}.get(c, [ord(c)])
        if c != 'd' and not np.isin(rows[:, i], allowed).all():
            return None
    return rows, valid


def _from_fixed_form(rows, valid, target) -> pa.Array:
    """Typed values from _fixed_form's rows: written the ISO way, unreal days and times null,
    put back in place among the nulls."""
    rows = rows.copy()
    rows[:, [4, 7]] = ord('-')
    if rows.shape[1] > 10:
        rows[:, 10] = ord('T')
    count, width = rows.shape
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    iso = pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets),
                                                     pa.py_buffer(rows.tobytes())])
    iso = pc.if_else(pa.array(_real(rows)), iso, pa.scalar(None, pa.string()))
    typed = _cast_safely(iso, target)
    if valid.all():
        return typed
    places = pa.array(np.cumsum(valid) - 1, mask=~valid)
    return typed.take(places)


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
    for form in _DATE_FORMS:
        fixed = _fixed_form(text, form)
        if fixed is not None:
            return _from_fixed_form(*fixed, pa.date32())
    return _parse_any_date(text)


def _parse_any_date(text):
    parts = pc.extract_regex(text, _DATE_RE)
    year = parts.field('y')

    def first(*names):
        return pc.coalesce(*[pc.if_else(pc.equal(parts.field(n), ''), None, parts.field(n))
                             for n in names])

    month = pc.utf8_lpad(first('m1', 'm2', 'm3', 'm4'), 2, '0')
    day = pc.utf8_lpad(first('d1', 'd2', 'd3', 'd4'), 2, '0')
    iso = pc.binary_join_element_wise(year, month, day, '-')
    return _cast_safely(iso, pa.date32(), _real_moments)


def _parse_timestamp(text, field, zone):
    fixed = _fixed_form(text, _TIMESTAMP_FORM)
    if fixed is not None:
        return _naive_in_zone(_from_fixed_form(*fixed, pa.timestamp('us')), zone)
    fixed = _fixed_form(text, _ZONED_TIMESTAMP_FORM)
    if fixed is not None:
        return _from_fixed_form(*fixed, pa.timestamp('us', tz='UTC'))
    return _parse_any_timestamp(text, zone)


def _parse_any_timestamp(text, zone):
    iso = pc.replace_substring(text, ' ', 'T', max_replacements=1)
    naive = _gated(iso, _NAIVE_TS_RE, pa.timestamp('us'), _real_moments)
    zoned = _gated(iso, _ZONED_TS_RE, pa.timestamp('us', tz='UTC'))
    return pc.coalesce(_naive_in_zone(naive, zone), zoned)


def _naive_in_zone(naive, zone):
    local = pc.assume_timezone(naive, zone, ambiguous='earliest', nonexistent='earliest')
    return local.cast(pa.timestamp('us', tz='UTC'))


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
