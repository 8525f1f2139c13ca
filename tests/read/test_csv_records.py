"""A stray quote costs its own record, never the records after it; a remark typed over several
lines stays one value. Pure tables for transforms.read.csv_records, then the reader on files."""

import io
import os

from apache_beam.io.filesystem import FileMetadata
from apache_beam.pvalue import TaggedOutput
import pytest

from tests.read.test_dirty_exports import MARK, assert_no_value_in_reasons, make_table
from transforms.read import csv_records as records_module
from transforms.read import ranges as read_ranges
from transforms.common.batches import ROW
from transforms.read.csv_ranges import record_splits
from transforms.read.csv_records import broken_quote_problem, csv_records, holds_a_record
from transforms.read.ranges import FileRange, plan_ranges
from transforms.read.tables import ReadTable, _ReadBatchesFn


def records(text, width=3, subject=0, **shape):
    lines = text.splitlines(keepends=True)
    return [(r.number, r.fields, r.swallowed) for r in
            csv_records(lines, width=width, subject=subject, **shape)]


@pytest.mark.parametrize('text, expected', [
    ('a,b,c\nd,e,f\n', [(1, ['a', 'b', 'c'], 0), (2, ['d', 'e', 'f'], 0)]),
    # blank lines are no records; a last line without a line ending is one
    ('a,b,c\n\n\r\nd,e,f', [(1, ['a', 'b', 'c'], 0), (2, ['d', 'e', 'f'], 0)]),
    # a remark typed over lines, in the last, the first and a middle column
    ('a,b,"one\ntwo\nthree"\nd,e,f\n', [(1, ['a', 'b', 'one\ntwo\nthree'], 0),
                                       (2, ['d', 'e', 'f'], 0)]),
    ('"one\ntwo, too",b,c\nd,e,f\n', [(1, ['one\ntwo, too', 'b', 'c'], 0),
                                      (2, ['d', 'e', 'f'], 0)]),
    ('a,"one\n\ntwo",c\r\nd,e,f\r\n', [(1, ['a', 'one\n\ntwo', 'c'], 0),
                                       (2, ['d', 'e', 'f'], 0)]),
    # doubled quotes inside a quoted value; a quote inside an unquoted value is a character
    ('a,"say ""hi""\nthen go",c\nd,e"x,f\n', [(1, ['a', 'say "hi"\nthen go', 'c'], 0),
                                              (2, ['d', 'e"x', 'f'], 0)]),
    # a stray quote: its record is broken, the records it ran across are read as themselves
    ('a,b,"open\nd,e,f\ng,h,i\n', [(1, None, 2), (2, ['d', 'e', 'f'], 0),
                                   (3, ['g', 'h', 'i'], 0)]),
    # ... closed by the next record's quoted value
    ('a,b,"open\nd,e,f\ng,h,"x, y"\n', [(1, None, 2), (2, ['d', 'e', 'f'], 0),
                                        (3, ['g', 'h', 'x, y'], 0)]),
    # ... closed at once by a record of its own (its record would be too wide)
    ('a,b,"open\ng,h,"x, y"\n', [(1, None, 1), (2, ['g', 'h', 'x, y'], 0)]),
    # ... left open at the end of the file, over lines that are no records: one value
    ('a,b,c\nd,e,"open\n', [(1, ['a', 'b', 'c'], 0), (2, ['d', 'e', 'open'], 0)]),
    ('a,b,"open\nremark\n', [(1, ['a', 'b', 'open\nremark'], 0)]),
])
def test_records_and_broken_quotes(text, expected):
    assert records(text) == expected


def test_a_record_without_a_subject_key_is_not_taken_for_a_record():
    # a remark line with the right number of commas but nothing where the key is
    assert records('a,b,"x\n,y,z\nend"\n') == [(1, ['a', 'b', 'x\n,y,z\nend'], 0)]


def test_other_delimiters_and_quotes():
    assert records("a;b;'open\nd;e;f\n", delimiter=';', quote="'") == [
        (1, None, 1), (2, ['d', 'e', 'f'], 0)]


def test_a_quote_open_past_the_lookahead_is_broken(monkeypatch):
    monkeypatch.setattr(records_module, 'LOOKAHEAD_LINES', 3)
    text = 'a,b,"open\n' + 'x\n' * 5 + 'end"\n'
    got = records(text)
    assert got[0] == (1, None, 4)
    assert [n for n, *_ in got] == list(range(1, 8))


@pytest.mark.parametrize('value, holds', [
    ('one line', False),
    ('first\nsecond line, with a comma', False),
    ('first\nR2,1.00,x', True),
    ('first\n,1.00,x', False),           # no subject key
    ('first\nR2,1.00,x\r', True),
    ('first\nR2,1.00', False),
])
def test_holds_a_record(value, holds):
    assert holds_a_record(value, width=3, delimiter=',', quote='"', subject=0) is holds


@pytest.mark.parametrize('swallowed, words', [
    (1, 'the next 1 line,'), (31, 'the next 31 lines'),
    (10_001, 'more than 10,000 lines')])
def test_the_problem_says_how_far_the_quote_ran(swallowed, words):
    assert words in broken_quote_problem('"', swallowed)


@pytest.mark.parametrize('first, splits', [
    (b'a,b,"one\ntwo"\n', True),          # a remark: the file can be split
    (b'a,b,"open\nd,e,f\n', False),        # a quote that holds a record: read whole
])
def test_the_splitter_reads_whole_a_file_whose_quote_holds_a_record(first, splits):
    data = first + b'g,h,i\n' * 100
    found = record_splits(io.BytesIO(data), 0, [300], delimiter=',', quote='"', width=3)
    assert (found is not None) is splits


# -- the reader ---------------------------------------------------------------------------------

def read_all(table, file_range=None):
    """(row numbers kept, {row: (reason, problem, subject)} dead, rows read, lines, notes)."""
    kept, dead, rows_read, lines, notes = [], {}, 0, 0, {}
    for out in _ReadBatchesFn(table).process(file_range or FileRange(table.path)):
        if isinstance(out, TaggedOutput):
            if out.tag == ReadTable.DEAD:
                d = out.value
                dead[d.row] = (d.reason, d.problem, d.subject)
            else:
                rows_read += out.value.rows_read
                lines += out.value.lines or 0
            continue
        kept += out.column(ROW).to_pylist()
        notes.update(zip(out.column(ROW).to_pylist(), out.column('note').to_pylist()))
    return kept, dead, rows_read, lines, notes


def export(tmp_path, notes, encoding='utf-8', newline='\n', **options):
    table = make_table(str(tmp_path), 'csv', encoding=encoding, **options)
    lines = ['rid,amount,day,flag,note'] + [
        f'R{i}{MARK},{i}.00,2024-01-02,Y,{note}' for i, note in enumerate(notes, 1)]
    with open(table.path, 'wb') as f:
        f.write((newline.join(lines) + newline).encode(encoding))
    return table


@pytest.mark.parametrize('encoding, newline', [('utf-8', '\n'), ('gbk', '\r\n')])
def test_a_stray_quote_costs_its_own_record_only(tmp_path, encoding, newline):
    notes = [f'备注{i}' for i in range(1, 41)]
    notes[8] = '"开' + MARK   # row 9 opens a quote it never closes
    notes[19] = '"a, quoted"'  # ... which, unfixed, would close here
    table = export(tmp_path, notes, encoding, newline)
    kept, dead, rows_read, lines, got = read_all(table)
    assert kept == [i for i in range(1, 41) if i != 9]
    assert list(dead) == [9]
    reason, problem, subject = dead[9]
    assert (reason, subject) == ('malformed', 'R9' + MARK)
    assert 'runs across the next 11 lines' in problem
    assert_no_value_in_reasons([type('D', (), {'field': '', 'problem': problem})], notes)
    assert (rows_read, lines) == (40, 40)
    assert got[20] == 'a, quoted' and all('\n' not in v for v in got.values())


def test_a_remark_over_several_lines_is_one_value_and_the_lines_show_it(tmp_path):
    notes = [f'n{i}' for i in range(1, 11)]
    notes[2] = '"first line\nsecond, with a comma\nR99,2.00,2024-01-02"'  # too few fields
    table = export(tmp_path, notes)
    kept, dead, rows_read, lines, got = read_all(table)
    assert (kept, dead, rows_read, lines) == (list(range(1, 11)), {}, 10, 12)
    assert got[3] == 'first line\nsecond, with a comma\nR99,2.00,2024-01-02'


def test_a_stray_quote_on_the_last_line_of_a_file_without_a_line_ending(tmp_path):
    notes = ['a', 'b', '"never closed']
    table = export(tmp_path, notes)
    with open(table.path, 'rb+') as f:
        f.truncate(os.path.getsize(table.path) - 1)
    kept, dead, rows_read, lines, got = read_all(table)
    # nothing to run across: the value is the rest of the line, as every CSV reader reads it
    assert (kept, list(dead), rows_read, lines, got[3]) == ([1, 2, 3], [], 3, 3,
                                                            'never closed')


def test_rows_of_the_wrong_width_before_and_after_a_stray_quote_are_dead_letters(tmp_path):
    table = make_table(str(tmp_path), 'csv')
    data = ('rid,amount,day,flag,note\nR1,1.00\nR2,2.00,2024-01-02,Y,"open\n'
            'R3,3.00,2024-01-02,Y,x\nR4,4.00\nR5,5.00,2024-01-02,Y,"two\nlines"\n')
    (tmp_path / 'data.csv').write_text(data, encoding='utf-8')
    kept, dead, rows_read, lines, got = read_all(table)
    assert kept == [3, 5] and got[5] == 'two\nlines'
    assert {row: d[0] for row, d in dead.items()} == {1: 'malformed', 2: 'malformed',
                                                      4: 'malformed'}
    assert 'expected 5 columns, found 2' in dead[4][1] and 'quote' in dead[2][1]
    assert (rows_read, lines) == (5, 6)


@pytest.mark.parametrize('stray', [4, 58])
def test_a_file_with_a_stray_quote_is_read_whole(tmp_path, monkeypatch, stray):
    notes = [f'备注{i}' for i in range(1, 61)]
    notes[stray] = '"开'
    table = export(tmp_path, notes)
    monkeypatch.setattr(read_ranges, 'MIN_RANGE_BYTES', 100)
    monkeypatch.setattr(read_ranges, 'MAX_RANGE_BYTES', 300)
    ranges = plan_ranges(FileMetadata(table.path, os.path.getsize(table.path)), table, 3)
    # Before a split, the records a stray quote ran across could not be counted: read whole.
    assert ranges == [FileRange(table.path)]
    parts = [read_all(table, r) for r in ranges]
    numbers = sorted([n for p in parts for n in p[0]] + [r for p in parts for r in p[1]])
    assert numbers == list(range(1, 61))
    assert [r for p in parts for r in p[1]] == [stray + 1]
    assert sum(p[2] for p in parts) == sum(p[3] for p in parts) == 60
