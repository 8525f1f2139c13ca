import datetime
import decimal

import pyarrow as pa
import pytest

from schemas import FieldSpec
from transforms.casting import cast_column


def field(kind, **extra):
    return FieldSpec('f', kind, True, 'internal', **extra)


def cast(kind, values, **extra):
    result = cast_column(pa.array(values, type=pa.string()), field(kind, **extra))
    bad = [False] * len(values) if result.bad is None else result.bad.to_pylist()
    return result.values.to_pylist(), bad


D = datetime.date


@pytest.mark.parametrize('text, expected', [
    ('2024-01-02', D(2024, 1, 2)),
    ('2024/1/2', D(2024, 1, 2)),
    ('20240102', D(2024, 1, 2)),
    ('2024年1月2日', D(2024, 1, 2)),
    (' 2024-01-02 ', D(2024, 1, 2)),
    ('2024-02-29', D(2024, 2, 29)),
    ('2023-02-29', 'bad'),
    ('1990-02-30', 'bad'),
    ('2024-13-01', 'bad'),
    ('19xx-01-01', 'bad'),
    ('', None),
    ('NULL', None),
    (r'\N', None),
])
def test_dates(text, expected):
    values, bad = cast('date', [text])
    assert (values[0], bad[0]) == ((None, True) if expected == 'bad' else (expected, False))


UTC = datetime.timezone.utc


@pytest.mark.parametrize('text, expected', [
    ('2024-01-02 08:00:00', datetime.datetime(2024, 1, 2, 0, 0, tzinfo=UTC)),  # Asia/Shanghai
    ('2024-01-02T08:00:00', datetime.datetime(2024, 1, 2, 0, 0, tzinfo=UTC)),
    ('2024-01-02T08:00:00.5', datetime.datetime(2024, 1, 2, 0, 0, 0, 500000, tzinfo=UTC)),
    ('2024-01-02T08:00:00Z', datetime.datetime(2024, 1, 2, 8, 0, tzinfo=UTC)),
    ('2024-01-02T08:00:00+08:00', datetime.datetime(2024, 1, 2, 0, 0, tzinfo=UTC)),
    ('2024-02-30 08:00:00', 'bad'),
    ('yesterday', 'bad'),
])
def test_timestamps(text, expected):
    values, bad = cast('timestamp', [text])
    assert (values[0], bad[0]) == ((None, True) if expected == 'bad' else (expected, False))


@pytest.mark.parametrize('text, expected', [
    ('123.45', decimal.Decimal('123.45')),
    ('-5', decimal.Decimal('-5.00')),
    ('0.1', decimal.Decimal('0.10')),
    ('9999999999.99', decimal.Decimal('9999999999.99')),
    ('99999999999.99', 'bad'),   # 11 digits before the point: over precision 12, scale 2
    ('1.234', 'bad'),            # more decimals than the scale: never rounded silently
    ('五千元', 'bad'),
    ('1,000', 'bad'),
    ('1e3', 'bad'),
    ('', None),
])
def test_decimals(text, expected):
    values, bad = cast('decimal', [text], precision=12, scale=2)
    assert (values[0], bad[0]) == ((None, True) if expected == 'bad' else (expected, False))


@pytest.mark.parametrize('kind, text, expected', [
    ('int', '42', 42),
    ('int', '-7', -7),
    ('int', '2147483648', 'bad'),
    ('long', '2147483648', 2147483648),
    ('int', '4.2', 'bad'),
    ('int', 'abc', 'bad'),
    ('double', '4.25', 4.25),
    ('double', '-1e3', -1000.0),
    ('double', 'x1', 'bad'),
])
def test_numbers(kind, text, expected):
    values, bad = cast(kind, [text])
    assert (values[0], bad[0]) == ((None, True) if expected == 'bad' else (expected, False))


@pytest.mark.parametrize('text, expected', [
    ('true', True), ('FALSE', False), ('1', True), ('0', False), ('Y', True), ('n', False),
    ('是', True), ('否', False), ('maybe', 'bad'), ('', None),
])
def test_booleans(text, expected):
    values, bad = cast('boolean', [text])
    assert (values[0], bad[0]) == ((None, True) if expected == 'bad' else (expected, False))


@pytest.mark.parametrize('text, expected', [('M', 'M'), ('F', 'F'), ('X', 'bad'), ('m', 'bad'),
                                            ('', None)])
def test_enums(text, expected):
    values, bad = cast('enum', [text], symbols=('M', 'F'))
    assert (values[0], bad[0]) == ((None, True) if expected == 'bad' else (expected, False))


def test_typed_columns_cast_safely_and_mark_only_the_bad_rows():
    result = cast_column(pa.array([1, 2**40, 3], type=pa.int64()), field('int'))
    assert result.values.to_pylist() == [1, None, 3]
    assert result.bad.to_pylist() == [False, True, False]


def test_expected_text_never_contains_the_value():
    result = cast_column(pa.array(['13812345678']), field('date'))
    assert '13812345678' not in result.expected
