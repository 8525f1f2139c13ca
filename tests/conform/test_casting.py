import datetime
import decimal

from hypothesis import given, settings, strategies as st
import pyarrow as pa
import pytest

from schemas import FieldSpec
from transforms.conform import casting
from transforms.conform.casting import cast_column


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


@pytest.mark.parametrize('kind, values, arrow_type, bad', [
    ('timestamp', [0, 2**62, -2**62, 253_402_300_799_999_999], pa.timestamp('us', tz='UTC'),
     [False, True, True, False]),
    ('timestamp', [0, 2**62], pa.int64(), [False, True]),
    ('date', [0, 2_932_897, -719_163, -719_162], pa.date32(), [False, True, True, False]),
])
def test_dates_and_times_outside_any_calendar_are_malformed(kind, values, arrow_type, bad):
    """Parquet and Avro store any 64-bit number; no reader holds the year 146,000."""
    stored = pa.int32() if arrow_type == pa.date32() else pa.int64()
    typed = pa.array(values, stored).cast(arrow_type)
    result = cast_column(typed, field(kind))
    assert (result.bad.to_pylist() if result.bad is not None else [False] * len(values)) == bad
    assert [v is None for v in result.values.to_pylist()] == bad


def test_a_dead_letter_keeps_a_value_python_cannot_hold_as_its_number():
    from transforms.common.batches import ROW, SOURCE, row_dicts
    batch = pa.RecordBatch.from_arrays(
        [pa.array([2**62], pa.int64()).cast(pa.timestamp('us')), pa.array(['f']),
         pa.array([3], pa.int64())], names=['at', SOURCE, ROW])
    assert row_dicts(batch, [0]) == [('f', 3, {'at': 2**62})]


def test_expected_text_never_contains_the_value():
    result = cast_column(pa.array(['13812345678']), field('date'))
    assert '13812345678' not in result.expected


# -- the fixed-form fast paths equal the general parsers ----------------------------------------

def _digits(n):
    return st.text(alphabet='0123456789', min_size=n, max_size=n)


_moment = st.tuples(_digits(4), st.sampled_from(['01', '02', '04', '12', '13', '00', '2']),
                    st.sampled_from(['01', '28', '29', '30', '31', '32', '00']),
                    st.sampled_from(['00', '23', '24']), st.sampled_from(['00', '59', '60']),
                    st.sampled_from(['00', '59', '60', '5x']))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), _moment), max_size=40), st.sampled_from('-/'))
def test_fixed_form_dates_parse_as_the_general_parser_does(moments, sep):
    text = pa.array([None if m is None else f'{m[0]}{sep}{m[1]}{sep}{m[2]}' for m in moments],
                    type=pa.string())
    assert casting._parse_date(text, None, None).equals(casting._parse_any_date(text))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), _moment), max_size=40), st.sampled_from(' T'),
       st.sampled_from(['', '+08:00', '-05:30', '+00:00', '+24:00']))
def test_fixed_form_timestamps_parse_as_the_general_parser_does(moments, sep, offset):
    text = pa.array([None if m is None else
                     f'{m[0]}-{m[1]}-{m[2]}{sep}{m[3]}:{m[4]}:{m[5]}{offset}'
                     for m in moments], type=pa.string())
    zone = 'Asia/Shanghai'
    assert casting._parse_timestamp(text, None, zone).equals(
        casting._parse_any_timestamp(text, zone))


def test_the_calendar_screen_rejects_exactly_what_arrow_rejects():
    days = [f'{y:04d}-{m:02d}-{d:02d}' for y in (1900, 1999, 2000, 2023, 2024, 2100)
            for m in range(0, 14) for d in range(0, 33)]
    times = [f'2024-02-29T{h:02d}:{mi:02d}:{s:02d}' for h in (0, 23, 24) for mi in (0, 59, 60)
             for s in (0, 59, 60)]
    for text in days + times:
        target = pa.date32() if len(text) == 10 else pa.timestamp('us')
        try:
            pa.array([text]).cast(target)
            accepted = True
        except pa.ArrowInvalid:
            accepted = False
        screened = casting._real_moments(pa.array([text])).is_valid().to_pylist()[0]
        assert screened == accepted, text


def test_fixed_form_reads_nulls_that_keep_their_bytes():
    text = pa.array(['2024-01-02', '2024-01-03', '2024-01-04'])
    validity = pa.array([True, False, True]).buffers()[1]
    holey = pa.Array.from_buffers(pa.string(), 3, [validity] + text.buffers()[1:])
    assert casting._parse_date(holey, None, None).to_pylist() == [D(2024, 1, 2), None,
                                                                   D(2024, 1, 4)]
