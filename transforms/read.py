"""Read: a table's seller files, streamed as Arrow record batches with provenance."""

import csv
import logging
import time

import apache_beam as beam
from apache_beam.io import fileio
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from transforms.batches import with_provenance
from transforms.errors import InputError
from transforms.reasons import DeadLetter

__all__ = ['ReadTable']

_CSV_BLOCK_BYTES = 4 << 20
_PARQUET_BATCH_ROWS = 65_536
_PROGRESS = logging.getLogger('novation.progress')
PROGRESS_SECONDS = 10.0


def first_undecodable_byte(path: str, encoding: str) -> int:
    """File offset of the first byte sequence that ``encoding`` cannot decode (-1: none)."""
    import codecs
    from apache_beam.io.filesystems import FileSystems
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with FileSystems.open(path) as f:
        while True:
            chunk = f.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                # e.start counts from the bytes the decoder held back plus this chunk
                pending = len(e.object) - len(chunk)
                return offset - pending + e.start
            if not chunk:
                return -1
            offset += len(chunk)


class _Progress:
    """Logs rows read from one file at most every PROGRESS_SECONDS (no per-row cost)."""

    def __init__(self, table, path):
        self._what = f'{table}: {path}'
        self._started = self._last = time.monotonic()
        self.rows = 0

    def add(self, rows):
        self.rows += rows
        now = time.monotonic()
        if now - self._last >= PROGRESS_SECONDS:
            self._last = now
            elapsed = now - self._started
            _PROGRESS.info('%s: %s rows read in %.0f s (%s rows/s)', self._what,
                           f'{self.rows:,}', elapsed, f'{self.rows / elapsed:,.0f}')


class ReadTable(beam.PTransform):
    """Read every file matching a table's path.

    Outputs (tags): ``rows`` record batches of the file's columns (text for CSV, as stored for
    Parquet) plus provenance; ``dead`` rows that cannot even be split into columns;
    ``sources`` one ``(table, path, rows_read)`` per file.
    """
    ROWS = 'rows'
    DEAD = 'dead'
    SOURCES = 'sources'

    def __init__(self, table):
        super().__init__()
        self._table = table

    def expand(self, pbegin):
        return (pbegin
                | 'Match' >> fileio.MatchFiles(self._table.path)
                | 'Spread' >> beam.Reshuffle()
                | 'Open' >> fileio.ReadMatches()
                | 'ReadBatches' >> beam.ParDo(_ReadBatchesFn(self._table)).with_outputs(
                    self.DEAD, self.SOURCES, main=self.ROWS))


class _ReadBatchesFn(beam.DoFn):
    def __init__(self, table):
        self._table = table

    def process(self, readable_file):
        path = readable_file.metadata.path
        with readable_file.open() as f:
            if self._table.format == 'csv':
                rows_read = yield from self._csv(f, path)
            else:
                rows_read = yield from self._parquet(f, path)
        yield beam.pvalue.TaggedOutput(ReadTable.SOURCES, (self._table.name, path, rows_read))

    def _check_columns(self, names, path):
        expected = self._table.schema.field_names
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f'missing column(s) {", ".join(missing)}')
            if extra:
                parts.append(f'column(s) not in the schema (unclassified): {", ".join(extra)}')
            raise InputError(f'{path} does not match schema {self._table.schema.source}: '
                             f'{"; ".join(parts)}')

    def _parquet(self, f, path):
        parquet = pq.ParquetFile(f)
        self._check_columns(parquet.schema_arrow.names, path)
        first = 1
        progress = _Progress(self._table.name, path)
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS,
                                          columns=list(self._table.schema.field_names)):
            n = batch.num_rows
            yield with_provenance(batch, path, np.arange(first, first + n))
            first += n
            progress.add(n)
        return first - 1

    def _csv(self, f, path):
        invalid = []

        def on_invalid(row):
            invalid.append(row)
            return 'skip'

        names = self._table.schema.field_names
        # UTF-8 too goes through Python's codec ('utf-8-sig' also drops a BOM): Arrow's own UTF-8
        # path would report undecodable bytes as an unraisable traceback, not an error.
        encoding = 'utf-8-sig' if self._table.encoding == 'utf-8' else self._table.encoding
        try:
            reader = pa_csv.open_csv(
                f,
                read_options=pa_csv.ReadOptions(encoding=encoding,
                                                 block_size=_CSV_BLOCK_BYTES, use_threads=False),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True,
                                                  invalid_row_handler=on_invalid),
                convert_options=pa_csv.ConvertOptions(
                    column_types={n: pa.string() for n in names}, strings_can_be_null=False,
                    quoted_strings_can_be_null=False))
            self._check_columns(reader.schema.names, path)
            next_row = 1
            progress = _Progress(self._table.name, path)
            for batch in reader:
                # Number valid rows around the skipped ones so each keeps its record number.
                skipped = {r.number - 1 for r in invalid}
                numbers = []
                while len(numbers) < batch.num_rows:
                    if next_row not in skipped:
                        numbers.append(next_row)
                    next_row += 1
                yield with_provenance(batch.select(list(names)), path, np.array(numbers))
                progress.add(batch.num_rows)
        except UnicodeDecodeError:
            offset = first_undecodable_byte(path, encoding)
            raise InputError(f'{path} is not valid {self._table.encoding}: the first bad byte '
                             f'sequence is at byte offset {offset}; set tables.'
                             f'{self._table.name}.encoding to the export\'s encoding') from None
        except pa.ArrowInvalid:
            # Arrow's message may quote the offending row, so it is not repeated here.
            raise InputError(f'{path} cannot be read as CSV (check the delimiter, quoting and '
                             f'encoding of tables.{self._table.name})') from None
        subject_index = names.index(self._table.subject_key)
        for r in invalid:
            values = next(csv.reader([r.text]), [])
            yield beam.pvalue.TaggedOutput(ReadTable.DEAD, DeadLetter(
                reason='malformed', stage='read', table=self._table.name, source_file=path,
                row=r.number - 1, problem=f'expected {r.expected_columns} columns, found '
                                          f'{r.actual_columns}',
                subject=values[subject_index] if len(values) > subject_index else None,
                raw={'text': r.text}))
        return next_row - 1 + sum(1 for r in invalid if r.number - 1 >= next_row)
