"""Read: a table's seller files (CSV, JSON Lines, Avro, Parquet), streamed as Arrow record batches.

Every file is read in bounded memory (batch by batch, never whole) and every input row comes out
exactly once: in a batch, with its source file and row number, or as a dead letter. Columns are
mapped to schema fields by name or by the schema's Avro ``aliases`` (e.g. 证件号码 -> national_id)
(``columns.py``); large CSV files are read in byte ranges by several workers (``ranges.py``);
a file's first bytes and header are checked before any row (``headers.py``), and its text
encoding as it is read (``encodings.py``).
"""

import csv
import io
import json
import re
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.common import progress
from transforms.common.batches import holding_batches, with_provenance
from transforms.common.errors import InputError
from transforms.common.reasons import DeadLetter
from transforms.read.columns import ColumnPlan, text_array, typed_array
from transforms.read.csv_records import (
    broken_quote_problem,
    csv_records,
    holds_a_record,
    split_fields,
)
from transforms.read.encodings import (
    CSV_BLOCK_BYTES,
    REPLACEMENT,
    WRONG_ENCODING_ROWS,
    WRONG_ENCODING_SHARE,
    DecodedStream,
    first_undecodable_byte,
    may_hold_replacement,
)
from transforms.read.headers import (
    file_head,
    header_problem,
    split_csv_line,
    split_line,
    start_problem,
)
from transforms.read.ranges import open_range, plan_ranges

__all__ = ['ReadTable', 'SourceFacts']

_HEADER_MAX = 1 << 20  # a first line longer than this is no header
# A record is as long as its fields: Python's csv module (headers, malformed rows) would stop
# at 128 KiB by default.
csv.field_size_limit(1 << 30)
_BATCH_ROWS = 65_536
_TEXT_BATCH_ROWS = 16_384  # JSON Lines and Avro build batches from Python values


class SourceFacts(NamedTuple):
    """What reading one file (or range) found: its rows, the columns left out
    (``extra_columns: ignore``), the schema's fields no column or key of it holds (delivered
    as nulls, so the manifest names them) and, for text, its physical lines: set beside the
    records, they show what a multi-line value took in."""
    table: str
    path: str
    rows_read: int
    ignored: list
    missing: list
    lines: Optional[int] = None  # CSV and JSON Lines: physical lines after the header


class ReadTable(beam.PTransform):
    """Read every file matching a table's path.

    Outputs (tags): ``rows`` record batches with the schema's field names (text for CSV and JSON
    Lines, as stored for Avro and Parquet) plus provenance; ``dead`` rows that cannot be read
    (wrong column count, broken JSON, undecodable bytes); ``sources`` one ``SourceFacts`` per
    file (per range of a file read in ranges).
    """
    ROWS = 'rows'
    DEAD = 'dead'
    SOURCES = 'sources'

    def __init__(self, table, *, workers=1):
        super().__init__()
        self._table = table
        self._workers = workers  # how many workers will read: large CSV files are split

    def expand(self, pbegin):
        read = (pbegin
                | 'Match' >> fileio.MatchFiles(self._table.path)
                | 'Split' >> beam.FlatMap(plan_ranges, self._table, self._workers)
                | 'Spread' >> beam.Reshuffle()
                | 'ReadBatches' >> beam.ParDo(
                    _ReadBatchesFn(self._table)).with_outputs(
                        self.DEAD, self.SOURCES, main=self.ROWS))
        holding_batches(read[self.ROWS])
        return read


class _Progress:
    """Counts a file's rows read and bytes consumed (``transforms.common.progress``); ``position``
    says how far into the file the reader is, in bytes of the file."""

    def __init__(self, table, position):
        self._table = table
        self.position = position
        self._counted = 0

    def add(self, rows):
        at = self.position()
        progress.count('read', self._table, rows, nbytes=max(0, at - self._counted))
        self._counted = max(self._counted, at)


class _ReadBatchesFn(beam.DoFn):
    """One file in, its batches out. Each reader yields (batch with source columns, row
    numbers) and DeadLetters, and returns the number of rows it read."""

    def __init__(self, table):
        self._table = table
        self._plan = ColumnPlan(table)

    def process(self, file_range):
        path = file_range.path
        reader = {'csv': self._csv, 'jsonl': self._jsonl, 'avro': self._avro,
                  'parquet': self._parquet}[self._table.format]
        state = {'mapping': None, 'ignored': [], 'present': set()}
        self._lines = None
        if file_range.start == 0:
            problem = start_problem(file_head(path), self._table, path)
            if problem:
                raise InputError(problem)
        with open_range(file_range) as f:
            self._progress = _Progress(self._table.name, f.tell)
            rows_read = yield from self._emit(reader(f, path, file_range), path, self._progress,
                                              state, file_start=file_range.start == 0)
        progress.flush()
        missing = [] if state['mapping'] is None else [
            name for name in self._table.schema.field_names if name not in state['present']]
        yield beam.pvalue.TaggedOutput(ReadTable.SOURCES, SourceFacts(
            self._table.name, path, rows_read, state['ignored'], missing, self._lines))

    def _emit(self, items, path, counter, state, *, file_start=True):
        # Only the file's first batch may condemn the whole file as in the wrong encoding; a
        # later range's first batch is just rows.
        checked_encoding = not file_start
        while True:
            try:
                item = next(items)
            except StopIteration as done:
                return done.value
            if isinstance(item, DeadLetter):
                yield beam.pvalue.TaggedOutput(ReadTable.DEAD, item)
                continue
            batch, rows = item
            if state['mapping'] is None or set(batch.schema.names) != set(state['mapping']) \
                    | set(state['ignored']):
                state['mapping'], ignored = self._plan.resolve(
                    batch.schema.names, path, require_all=self._table.format != 'jsonl')
                state['ignored'] = sorted(set(state['ignored']) | set(ignored))
                state['present'] |= set(state['mapping'].values())
            batch = self._plan.batch(batch, state['mapping'])
            if self._table.format in ('csv', 'jsonl'):
                checked = checked_encoding
                checked_encoding = checked_encoding or batch.num_rows > 0
                batch, rows, dead = self._undecodable_rows(batch, rows, path, checked)
                for letter in dead:
                    yield beam.pvalue.TaggedOutput(ReadTable.DEAD, letter)
            counter.add(len(rows))
            if batch.num_rows:
                yield with_provenance(batch, path, rows)

    def _undecodable_rows(self, batch, rows, path, checked):
        """Split off rows holding U+FFFD (bytes the encoding could not decode)."""
        masks = {name: pc.fill_null(pc.match_substring(batch.column(name), REPLACEMENT), False)
                 for name in batch.schema.names
                 if pa.types.is_string(batch.schema.field(name).type)
                 and may_hold_replacement(batch.column(name))}
        bad = np.zeros(batch.num_rows, dtype=bool)
        for mask in masks.values():
            bad |= mask.to_numpy(zero_copy_only=False)
        if not bad.any():
            return batch, rows, []
        if not checked and bad.sum() >= WRONG_ENCODING_ROWS and \
                bad.mean() > WRONG_ENCODING_SHARE:
            self._wrong_encoding(path)
        dead = []
        subjects = batch.column(self._table.subject_key).to_pylist()
        for i in np.flatnonzero(bad):
            fields = [name for name, mask in masks.items() if mask[i].as_py()]
            dead.append(DeadLetter(
                reason='malformed', stage='read', table=self._table.name, source_file=path,
                row=int(rows[i]), field=', '.join(fields),
                problem=f'holds bytes that are not valid {self._table.encoding}',
                subject=subjects[i], raw=None))
        keep = ~bad
        return batch.filter(pa.array(keep)), rows[keep], dead

    def _wrong_encoding(self, path):
        offset = first_undecodable_byte(path, self._table.encoding)
        raise InputError(f'{path} is not valid {self._table.encoding}: the first bad byte '
                         f'sequence is at byte offset {offset}; set tables.{self._table.name}'
                         f'.encoding to the export\'s encoding')

    # -- formats --------------------------------------------------------------------------

    def _parquet(self, f, path, _):
        try:
            parquet = pq.ParquetFile(f)
        except (pa.ArrowException, OSError):  # Arrow's message may quote bytes of the file
            raise InputError(f'{path} cannot be read as Parquet (truncated or damaged?)'
                             ) from None
        yield _no_rows(parquet.schema_arrow), np.array([], dtype=np.int64)  # check columns
        # The footer is read first, so the file position says little: measure by rows.
        here = f.tell()
        size, total = f.seek(0, io.SEEK_END), max(1, parquet.metadata.num_rows)
        f.seek(here)
        done = 0
        self._progress.position = lambda: size * done // total
        for batch in _undamaged(parquet.iter_batches(batch_size=_BATCH_ROWS), path, 'Parquet',
                                lambda: done):
            done += batch.num_rows
            rows = np.arange(done - batch.num_rows + 1, done + 1)
            batch, rows, dead = self._invalid_utf8_rows(batch, rows, path)
            yield from dead
            yield batch, rows
        return done

    def _invalid_utf8_rows(self, batch, rows, path):
        """Split off rows whose text is not valid UTF-8 (Parquet does not check it, so a
        damaged or mis-encoded file would otherwise fail later, in casting)."""
        bad, fields = np.zeros(batch.num_rows, dtype=bool), {}
        for name, column in zip(batch.schema.names, batch.columns):
            if not pa.types.is_string(column.type):
                continue
            try:
                column.validate(full=True)
                continue
            except pa.ArrowInvalid:
                pass
            mask = np.array([v is not None and not _is_utf8(v)
                             for v in column.cast(pa.binary()).to_pylist()])
            fields[name] = mask
            bad |= mask
        if not bad.any():
            return batch, rows, []
        subject = next((c for c in self._table.subject_columns if c in batch.schema.names
                        and c not in fields), None)
        subjects = batch.column(subject).to_pylist() if subject else [None] * batch.num_rows
        dead = [DeadLetter(reason='malformed', stage='read', table=self._table.name,
                           source_file=path, row=int(rows[i]),
                           field=', '.join(n for n, m in fields.items() if m[i]),
                           problem='holds bytes that are not valid UTF-8',
                           subject=subjects[i], raw=None)
                for i in np.flatnonzero(bad)]
        return batch.filter(pa.array(~bad)), rows[~bad], dead

    def _csv(self, f, path, file_range):
        t = self._table
        decoded = DecodedStream(f, t.encoding, file_start=file_range.start == 0)
        text = io.BufferedReader(decoded, buffer_size=1 << 16)
        header_lines = 0
        if not t.header:
            columns = list(t.schema.field_names)
        elif file_range.start == 0:
            columns = self._header(text, path)
            header_lines = 1
        else:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
                columns = self._header(io.BufferedReader(DecodedStream(raw, t.encoding)), path)
        # Check the header against the schema even if no data row is readable.
        yield _no_rows(pa.schema([(c, pa.string()) for c in columns])), np.array([], np.int64)
        if text.peek(1) == b'':
            self._lines = 0
            return 0  # a header and no rows: a valid empty table (Arrow calls it an empty file)
        invalid = []
        offset = file_range.first_row - 1  # records before the range
        # The subject key is read from a row of the wrong width too, by its header position
        # (under its name or an alias): an erased customer's broken row must count as erased.
        subject = next((columns.index(c) for c in t.subject_columns if c in columns), None)
        shape = dict(width=len(columns), delimiter=t.delimiter, quote=t.quote, subject=subject)

        def on_invalid(row):
            invalid.append(row)
            return 'skip'

        broken_from = None  # the record where the first broken quote opened
        try:
            reader = pa_csv.open_csv(
                text,
                read_options=pa_csv.ReadOptions(column_names=columns, block_size=CSV_BLOCK_BYTES,
                                                use_threads=False),
                parse_options=pa_csv.ParseOptions(delimiter=t.delimiter, quote_char=t.quote,
                                                  newlines_in_values=True,
                                                  invalid_row_handler=on_invalid),
                convert_options=pa_csv.ConvertOptions(
                    column_types={c: pa.string() for c in columns}, strings_can_be_null=False,
                    quoted_strings_can_be_null=False))
            next_row = 1
            for batch in reader:
                # Number valid rows around the skipped ones so each keeps its record number.
                n = batch.num_rows
                skipped = np.array([r.number for r in invalid if r.number >= next_row],
                                   dtype=np.int64)
                numbers = np.arange(next_row, next_row + n + len(skipped), dtype=np.int64)
                numbers = numbers[~np.isin(numbers, skipped)][:n]
                next_row = int(numbers[-1]) + 1 if n else next_row
                broken_from = _first_broken_quote(batch, numbers, invalid, shape)
                if broken_from is not None:
                    keep = numbers < broken_from
                    if keep.any():
                        yield batch.filter(pa.array(keep)), numbers[keep] + offset
                    break
                yield batch, numbers + offset
        except pa.ArrowInvalid:
            # Arrow's message may quote the offending row, so it is not repeated here.
            raise InputError(f'{path} cannot be read as CSV (check tables.{t.name}.delimiter, '
                             f'quote and encoding)') from None
        if broken_from is not None:
            invalid = [r for r in invalid if r.number < broken_from]
        for r in invalid:
            yield self._wrong_width(path, r.number + offset, r.text, subject,
                                    r.expected_columns, r.actual_columns)
        if broken_from is None:
            self._lines = decoded.lines - header_lines
            return next_row - 1 + sum(1 for r in invalid if r.number >= next_row)
        return (yield from self._csv_from(path, file_range, columns, broken_from, offset,
                                          shape))

    def _csv_from(self, path, file_range, columns, first, offset, shape):
        """The range's records from record ``first`` on, read line by line so that a broken
        quote costs its own record only (transforms.read.csv_records)."""
        t = self._table
        width, subject, number = shape['width'], shape['subject'], first - 1
        values, numbers = [], []
        with open_range(file_range) as f:
            decoded = DecodedStream(f, t.encoding, file_start=file_range.start == 0)
            self._progress.position = f.tell
            text = io.TextIOWrapper(io.BufferedReader(decoded), encoding='utf-8', newline='')
            if file_range.start == 0 and t.header:
                text.readline()
            for record in csv_records(text, **shape):
                if record.number < first:
                    continue
                number = record.number
                if record.fields is None:
                    fields = split_fields(record.text, t.delimiter, t.quote)
                    yield DeadLetter(
                        reason='malformed', stage='read', table=t.name, source_file=path,
                        row=number + offset,
                        problem=broken_quote_problem(t.quote, record.swallowed),
                        subject=fields[subject] if subject is not None
                        and len(fields) > subject else None, raw={'text': record.text})
                elif len(record.fields) != width:
                    yield self._wrong_width(path, number + offset, record.text, subject,
                                            width, len(record.fields))
                else:
                    values.append(record.fields)
                    numbers.append(number + offset)
                    if len(values) == _TEXT_BATCH_ROWS:
                        yield _text_batch(columns, values), np.array(numbers, dtype=np.int64)
                        values, numbers = [], []
            if values:
                yield _text_batch(columns, values), np.array(numbers, dtype=np.int64)
            self._lines = decoded.lines - (file_range.start == 0 and t.header)
        return number

    def _wrong_width(self, path, row, text, subject, expected, found):
        t = self._table
        values = split_csv_line(text, t.delimiter, t.quote) or []
        return DeadLetter(
            reason='malformed', stage='read', table=t.name, source_file=path, row=row,
            problem=f'expected {expected} columns, found {found}',
            subject=values[subject] if subject is not None and len(values) > subject
            else None, raw={'text': text})

    def _header(self, text, path):
        raw = text.readline(_HEADER_MAX)
        if len(raw) == _HEADER_MAX and not raw.endswith(b'\n'):
            raise InputError(f'{path}: its first line is over {_HEADER_MAX >> 10} KiB without '
                             f'a line ending: no CSV header (lines ending in a lone CR? '
                             f'convert them to LF or CRLF)')
        line = raw.decode('utf-8')
        if REPLACEMENT in line:
            self._wrong_encoding(path)
        t = self._table
        if '\r' in line.rstrip('\r\n') and t.quote not in line:
            raise InputError(f'{path}: its lines end in a lone CR (an old Mac export): convert '
                             f'them to LF or CRLF')
        if split_csv_line(line, t.delimiter, t.quote, strict=True) is None:
            raise InputError(f'{path}: the header line cannot be split into columns at '
                             f'{t.delimiter!r} (an unterminated {t.quote!r} quote, or a line '
                             f'ending inside it?)')
        columns = split_line(line, self._table.delimiter, self._table.quote)
        problem = header_problem(columns, line, self._table, self._plan, path)
        if problem:
            raise InputError(problem)
        return columns

    def _jsonl(self, f, path, _):
        """One JSON object per line. Numbers keep their exact text (decimals stay exact)."""
        t = self._table
        decoded = DecodedStream(f, t.encoding)
        text = io.TextIOWrapper(io.BufferedReader(decoded), encoding='utf-8', newline='\n')
        records, numbers, count = [], [], 0
        for line_no, line in enumerate(text, 1):
            if not line.strip():
                continue  # a blank line is no record
            count += 1
            if count == 1 and _opens_an_array(line):
                raise InputError(f'{path} is a JSON array, not JSON Lines (one object per '
                                 f'line): convert it, e.g. jq -c ".[]" FILE > FILE.jsonl')
            record = _json_record(line)
            if record is None:
                yield DeadLetter(reason='malformed', stage='read', table=t.name,
                                 source_file=path, row=line_no,
                                 problem='not a JSON object on one line',
                                 raw={'text': line.rstrip('\n')})
                continue
            records.append(record)
            numbers.append(line_no)
            if len(records) == _TEXT_BATCH_ROWS:
                yield _batch_of_records(records, text_only=True), np.array(numbers)
                records, numbers = [], []
        if records:
            yield _batch_of_records(records, text_only=True), np.array(numbers)
        self._lines = decoded.lines
        return count

    def _avro(self, f, path, _):
        import fastavro
        try:
            reader = fastavro.reader(f)
        except Exception:  # fastavro's message may quote bytes of the file
            raise InputError(f'{path} is not an Avro object container file') from None
        records, first, n = [], 1, 0
        for n, record in enumerate(_undamaged(reader, path, 'Avro', lambda: n), 1):
            records.append(record)
            if len(records) == _TEXT_BATCH_ROWS:
                yield _batch_of_records(records, text_only=False), np.arange(first, n + 1)
                records, first = [], n + 1
        if records:
            yield _batch_of_records(records, text_only=False), np.arange(first, n + 1)
        return n


def _first_broken_quote(batch, numbers, invalid, shape) -> Optional[int]:
    """The number of the first record in ``batch`` (or among the rows of the wrong width
    reported with it) where a broken quote opened (transforms.read.csv_records), or None."""
    found = [r.number for r in invalid if '\n' in r.text]
    for name, column in zip(batch.schema.names, batch.columns):
        data = column.buffers()[2]
        if data is None or memoryview(data).tobytes().find(b'\n') < 0:
            continue  # the usual column: no value runs across lines (one memchr)
        lines = pc.fill_null(pc.match_substring(column, '\n'), False).to_numpy(
            zero_copy_only=False)
        for i in np.flatnonzero(lines):
            if holds_a_record(column[int(i)].as_py(), **shape):
                found.append(int(numbers[i]))
                break
    return min(found) if found else None


def _text_batch(columns, values) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([v[i] for v in values], pa.string()) for i in range(len(columns))],
        names=list(columns))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode('utf-8')
        return True
    except UnicodeDecodeError:
        return False


def _undamaged(items, path, fmt, done):
    """``items`` of a file being decoded; a damaged part of it (a bad page, a lost sync
    marker, a cut) ends the read with one line naming the file and how far it got."""
    iterator = iter(items)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001 - the decoder's own errors may quote the file's bytes
            raise InputError(f'{path} cannot be read as {fmt} after record {done():,} '
                             f'(truncated or damaged?)') from None
        yield item


def check_file(table, path: str) -> None:
    """What the reader would stop on at a file's start, found before a run reads any data:
    another format, an encoding mark, a header (CSV) or schema (Parquet, Avro) whose columns
    the table's schema does not classify. Raises InputError."""
    problem = start_problem(file_head(path), table, path)
    if problem:
        raise InputError(problem)
    columns = None
    if table.format == 'csv' and table.header:
        with FileSystems.open(path) as raw:
            text = io.BufferedReader(DecodedStream(raw, table.encoding), buffer_size=1 << 16)
            if text.peek(1):
                columns = _ReadBatchesFn(table)._header(text, path)
    elif table.format == 'parquet':
        with FileSystems.open(path) as raw:
            try:
                columns = pq.ParquetFile(raw).schema_arrow.names
            except (pa.ArrowException, OSError):
                raise InputError(f'{path} cannot be read as Parquet (truncated or damaged?)'
                                 ) from None
    if columns is not None:
        ColumnPlan(table).resolve(columns, path)


def _no_rows(schema):
    return pa.RecordBatch.from_pylist([], schema=schema)


def _opens_an_array(line: str) -> bool:
    """Whether a file's first line opens a JSON array written over many lines: ``[`` alone,
    or ``[{...},``. (A line that is a whole array is one malformed record.)"""
    text = line.strip().lstrip('\ufeff').strip()
    return text == '[' or (text.startswith('[') and text.endswith(','))


def _json_record(line):
    """The object on one line, or None: not JSON, not an object, nested deeper than any
    record (a RecursionError would stop the run), or holding a lone surrogate (text no file
    can hold, and no Arrow string)."""
    try:
        record = json.loads(line, parse_float=str, parse_int=str)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    if '\\u' in line and _SURROGATE.search(line):
        try:
            json.dumps(record, ensure_ascii=False).encode('utf-8')
        except UnicodeEncodeError:
            return None
    return record


_SURROGATE = re.compile(r'\\u[dD][89a-fA-F][0-9a-fA-F]{2}')


def _batch_of_records(records, *, text_only):
    """Columns from Python records. ``text_only``: every value as text (JSON Lines), so casting
    sees the exact digits; otherwise typed where the values allow (Avro)."""
    names = list(dict.fromkeys(k for r in records for k in r))
    columns = []
    for name in names:
        values = [r.get(name) for r in records]
        columns.append(text_array(values) if text_only else typed_array(values))
    return pa.RecordBatch.from_arrays(columns, names=names)


