"""Consent: decide once per customer from the registry and the erasure list, gate every table.

``ConsentDecisions`` reads the consent registry and the erasure list inside the pipeline and
decides every customer, one hash partition of the customers at a time, into the run's scratch
files (``transforms.common.scratch``); ``ConsentGate`` loads them once per worker process and
applies them to a table's batches with one lookup per distinct customer of a batch.
"""

import collections
import threading
from typing import Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from transforms.common import progress
from transforms.common.batches import holding_batches, row_dicts
from transforms.conform.casting import cast_column
from transforms.consent.rules import (VERDICT_CODE, VERDICTS, Decisions, FlagRun, SubjectCodes,
                                      decide_flags, default_decision, flag_run, merge_flags,
                                      refusal_problems, registry_flags)
from transforms.common.errors import InputError
from transforms.mask.methods import string_form
from transforms.read.ranges import FileRange, open_range, plan_ranges
from transforms.read.headers import split_csv_line
from transforms.common.reasons import DeadLetter
from transforms.common.scratch import SPILL_ROWS, Partitions, write_partitions
from transforms.common.sorted_keys import fixed_width, key_column, keys_of, partition_of, texts
from schemas import FieldSpec

__all__ = ['ConsentDecisions', 'ConsentGate', 'DecisionPart', 'ErasedSubjects',
           'forget_decisions', 'load_decisions', 'suppress_sensitive', 'write_decision_part']

REGISTRY_FIELDS = (
    FieldSpec('subject_id', 'string', False, 'personal'),
    FieldSpec('purpose', 'string', False, 'internal'),
    FieldSpec('granted', 'boolean', False, 'internal'),
    FieldSpec('granted_at', 'timestamp', True, 'internal'),
    FieldSpec('withdrawn_at', 'timestamp', True, 'internal'),
    FieldSpec('sensitive_consent', 'boolean', False, 'internal'),
    FieldSpec('cross_border_consent', 'boolean', False, 'internal'),
)
ERASURE_FIELDS = (
    FieldSpec('subject_id', 'string', False, 'personal'),
    FieldSpec('requested_at', 'timestamp', True, 'internal'),
)


class ConsentDecisions(beam.PTransform):
    """One ``DecisionPart`` per partition of the customers: the scratch file of their decision
    codes (``load_decisions`` reads them all back).

    A large registry is read in byte ranges by several workers (``workers``), each reducing its
    part to a few flags per customer, written to scratch by partition; each partition's flags
    are then merged and decided alone. ``scratch``: the run's ``transforms.common.scratch.Scratch``;
    ``parts``: how many partitions (``scratch.partitions_for`` the registry's size).
    """

    def __init__(self, consent, transfer, erased, scratch, *, parts=1, workers=1):
        """``erased``: the ``ErasedSubjects`` of ``consent``."""
        super().__init__()
        self._consent = consent
        self._transfer = transfer
        self._erased = erased
        self._scratch = scratch
        self._parts = parts
        self._workers = workers

    def expand(self, pbegin):
        purposes = self._transfer.legal_bases
        flags = (pbegin
                 | 'MatchRegistry' >> beam.Create([self._consent.registry])
                 | 'SplitRegistry' >> beam.FlatMap(_registry_ranges, self._workers)
                 | 'Spread' >> beam.Reshuffle()
                 | 'Flags' >> beam.FlatMap(_spill_range_flags, purposes, self._scratch,
                                           self._parts, self._consent.columns))
        return (pbegin | 'Partitions' >> Partitions(self._parts)) | 'Decide' >> beam.Map(
            _decide_partition, self._transfer, self._scratch, self._parts,
            beam.pvalue.AsList(flags), beam.pvalue.AsSingleton(self._erased))


class ErasedSubjects(beam.PTransform):
    """A single-element PCollection: the frozenset of subjects on the erasure list. Dead letters
    need only this, not every customer's decision (which at 10M customers is 110 MB a copy)."""

    def __init__(self, consent):
        super().__init__()
        self._consent = consent

    def expand(self, pbegin):
        return (pbegin
                | 'Start' >> beam.Create([None])
                | 'Read' >> beam.Map(_erased, self._consent.erasures, self._consent.columns))


def _erased(_, path, columns=()):
    return frozenset(s for t in read_consent_file(path, ERASURE_FIELDS, 'erasure list',
                                                  columns=columns)
                     for s in t.column('subject_id').to_pylist())


# How the registry is laid out, in the terms transforms.read.tables.plan_ranges reads.
_REGISTRY_LAYOUT = collections.namedtuple('CsvLayout', 'format encoding delimiter quote header')(
    'csv', 'utf-8', ',', '"', True)


def _registry_ranges(path, workers):
    try:
        [metadata] = FileSystems.match([path])[0].metadata_list
    except ValueError:
        raise InputError(f'cannot read consent registry {path}') from None
    return plan_ranges(metadata, _REGISTRY_LAYOUT, workers)


def _spill_range_flags(file_range, purposes, scratch, parts, columns=()):
    """A range of the registry as ``FlagRun``s written to scratch by partition, up to
    SPILL_ROWS registry rows at a time: ``[(partition, path)]``."""
    runs, rows, written = [], 0, []
    for batch in read_consent_file(file_range.path, REGISTRY_FIELDS, 'consent registry',
                                   file_range, columns=columns):
        runs.append(flag_run(registry_flags(batch, purposes), purposes))
        rows += batch.num_rows
        progress.count('registry', 'consent', batch.num_rows)
        if rows >= SPILL_ROWS:
            written += _write_flags(scratch, parts, merge_flags(runs, purposes))
            runs, rows = [], 0
    if runs:
        written += _write_flags(scratch, parts, merge_flags(runs, purposes))
    progress.flush()
    return written


def _write_flags(scratch, parts, run):
    flags = np.ascontiguousarray(run.flags).view(f'S{run.flags.shape[1]}').ravel()
    return write_partitions(scratch, 'flags', parts, run.subjects, {'flags': flags})


def _read_flags(scratch, path) -> FlagRun:
    read = scratch.read(path)
    flags = keys_of(read.column('flags'))
    return FlagRun(keys_of(read.column('key')),
                   flags.view(np.bool_).reshape(len(flags), flags.dtype.itemsize))


# One partition's decisions in scratch (``partition`` of ``parts``), and the code of a customer
# the registry does not know.
DecisionPart = collections.namedtuple('DecisionPart', 'partition parts path default')


def _decide_partition(partition, transfer, scratch, parts, flags, erased):
    purposes = transfer.legal_bases
    runs = [_read_flags(scratch, path) for p, path in flags if p == partition]
    erased_keys = fixed_width(pa.array(sorted(erased), pa.string()))
    erased_here = texts(erased_keys[partition_of(erased_keys, parts) == partition])
    kwargs = dict(purposes=purposes, cross_border=transfer.cross_border)
    codes = decide_flags(runs, erased_here, **kwargs)
    return write_decision_part(scratch, partition, parts, codes,
                               VERDICT_CODE[default_decision(**kwargs)])


def write_decision_part(scratch, partition, parts, codes: SubjectCodes, default) -> DecisionPart:
    """Write one partition's decisions (every customer in it must be in that partition)."""
    path = scratch.write(f'decisions-{partition}', pa.table({
        'key': key_column(codes.keys), 'code': pa.array(codes.codes, pa.int8())}))
    return DecisionPart(partition, parts, path, default)


_LOADED = {}
_LOADED_LOCK = threading.Lock()


def load_decisions(scratch, parts) -> Decisions:
    """The ``Decisions`` of all ``DecisionPart``s, read once per worker process (every table's
    gate shares them)."""
    parts = tuple(sorted(parts))
    if not parts or [p.partition for p in parts] != list(range(parts[0].parts)):
        # A bug, never a user error: a gate with part of the decisions would misjudge customers.
        raise RuntimeError(f'consent decisions incomplete: partitions '
                           f'{[p.partition for p in parts]} of {parts[0].parts if parts else "?"}')
    with _LOADED_LOCK:
        if parts not in _LOADED:
            _LOADED.clear()  # a process serves one run at a time
            tables = [scratch.read(p.path) for p in parts]
            _LOADED[parts] = Decisions(
                [SubjectCodes.from_sorted(keys_of(t.column('key')),
                                          t.column('code').to_numpy()) for t in tables],
                parts[0].default)
        return _LOADED[parts]


def forget_decisions() -> None:
    """Drop the decisions this process loaded (the run is over)."""
    with _LOADED_LOCK:
        _LOADED.clear()


# Columns no rule reads: a file without them is read with them null.
OPTIONAL_COLUMNS = frozenset({'granted_at'})


def _header(path) -> Tuple[list, bool]:
    """The file's column names, and whether anything follows its header line."""
    with FileSystems.open(path) as f:
        line = f.readline(1 << 20)
        rows = bool(f.read(1 << 16).strip())
    return split_csv_line(line.decode('utf-8-sig', 'replace')) or [], rows


def consent_file_problem(path, fields, what, columns=(), *, rows_needed=False) -> Optional[str]:
    """What keeps ``path`` from being read as ``what`` (its header lacks a column, or it has
    no rows where ``rows_needed``), or None: found before a run reads any data. Never quotes
    the file's first line (it may be a customer's row)."""
    theirs = dict(columns)
    try:
        header, rows = _header(path)
    except OSError as e:
        return f'{what} {path} cannot be read ({e.strerror or type(e).__name__})'
    if not header:
        return f'{what} {path} is empty: it needs a header line naming its columns'
    needed = [theirs.get(f.name, f.name) for f in fields if f.name not in OPTIONAL_COLUMNS]
    missing = [name for name in needed if name not in header]
    if missing:
        renamed = ', '.join(f'{n} (consent.columns.{ours})' for ours, n in theirs.items()
                            if n in missing)
        return (f'{what} {path} lacks the column(s) {", ".join(missing)}; it needs '
                f'{", ".join(needed)}' + (f'; renamed: {renamed}' if renamed else
                                          '; set consent.columns if it names them otherwise'))
    if rows_needed and not rows:
        return (f'{what} {path} has a header and no rows: no customer could move (export the '
                f'registry with its rows)')
    return None


def read_consent_file(path, fields, what, file_range=None, columns=()):
    """Tables of a UTF-8 CSV with the given columns, batch by batch; any bad value is an error
    naming its row (fail closed). ``file_range``: only that part of the file
    (transforms.read.tables.FileRange). ``columns``: (our name, the file's) for columns the file
    names otherwise (consent.columns); the tables use our names. A column of
    ``OPTIONAL_COLUMNS`` the file lacks is null."""
    file_range = file_range or FileRange(path)
    theirs = dict(columns)
    header = _header(path)[0]
    absent = {f.name for f in fields if f.name in OPTIONAL_COLUMNS
              and theirs.get(f.name, f.name) not in header}
    fields_read = [f for f in fields if f.name not in absent]
    names = [theirs.get(f.name, f.name) for f in fields_read]
    columns = None
    if file_range.start:  # a later range: the header is at the start of the file
        columns = header
    with open_range(file_range) as f:
        try:
            reader = pa_csv.open_csv(f, read_options=pa_csv.ReadOptions(block_size=16 << 20,
                                                                        column_names=columns),
                                     convert_options=pa_csv.ConvertOptions(
                                         column_types={n: pa.string() for n in names},
                                         include_columns=names))
        except (pa.ArrowInvalid, KeyError) as e:
            if 'CSV parse error' in str(e):  # Arrow's message quotes the row: not shown
                raise InputError(f'{what} {path}: not a valid CSV in its first rows (a row '
                                 f'with another number of columns, or a broken quote)') from None
            raise InputError(f'{what} {path}: needs the columns {", ".join(names)}') from None
        except OSError:
            raise InputError(f'cannot read {what} {path}') from None
        seen = file_range.first_row - 1
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError):  # Arrow's message quotes the row: not shown
                raise InputError(f'{what} {path}: not a valid CSV after row {seen} (a row '
                                 f'with another number of columns, or a broken quote)'
                                 ) from None
            batch = batch.rename_columns([f.name for f in fields_read])
            for name in absent:
                batch = batch.append_column(name, pa.nulls(batch.num_rows, pa.string()))
            yield _checked(batch.select([f.name for f in fields]), fields, path, what, seen,
                           theirs)
            seen += batch.num_rows


def _checked(batch, fields, path, what, seen, theirs) -> pa.Table:
    columns = []
    for field in fields:
        result = cast_column(batch.column(field.name), field)
        nulls = pc.sum(pc.is_null(result.values)).as_py() if not field.nullable else 0
        if result.bad is not None or nulls:
            row = int(np.flatnonzero(
                result.bad.to_numpy(zero_copy_only=False) if result.bad is not None
                else pc.is_null(result.values).to_numpy(zero_copy_only=False))[0]) + 1
            raise InputError(f'{what} {path}: row {seen + row}, column '
                             f'{theirs.get(field.name, field.name)}: expected {result.expected}')
        columns.append(result.values)
    return pa.table(columns, names=[f.name for f in fields])


class ConsentGate(beam.PTransform):
    """Refuse rows of customers who may not move; suppress sensitive fields without consent.

    Outputs: ``rows`` (allowed batches), ``dead`` (refusals), ``suppressed`` one
    ``(table, rows)`` count per batch of rows whose sensitive fields were nulled.
    """
    ROWS = 'rows'
    DEAD = 'dead'
    SUPPRESSED = 'suppressed'

    def __init__(self, table, decisions, scratch, transfer):
        """``decisions``: the ``ConsentDecisions``, in ``scratch``, for ``transfer``."""
        super().__init__()
        self._table = table
        self._decisions = decisions
        self._scratch = scratch
        self._problems = refusal_problems(transfer.legal_bases, transfer.destination_region)

    def expand(self, batches):
        gated = batches | 'Gate' >> beam.ParDo(
            _GateFn(self._table, self._scratch, self._problems),
            beam.pvalue.AsList(self._decisions)).with_outputs(
                self.DEAD, self.SUPPRESSED, main=self.ROWS)
        holding_batches(gated[self.ROWS])
        return gated


def gate_batch(batch: pa.RecordBatch, table, decisions: Decisions, problems: dict):
    """(allowed batch with sensitive fields suppressed, suppressed count, [DeadLetter]).

    ``problems``: each refusal reason's ``refusal_problems`` text; a refused row's dead letter
    names the subject key as its field."""
    encoded = pc.dictionary_encode(string_form(batch.column(table.subject_key)))
    verdicts = [VERDICTS[code] for code in decisions.lookup(encoded.dictionary).tolist()]
    reasons = pa.array([v.reason for v in verdicts], type=pa.string()).take(encoded.indices)
    sensitive_ok = pa.array([v.sensitive_ok for v in verdicts], type=pa.bool_()).take(
        encoded.indices)
    refused = pc.is_valid(reasons).to_numpy(zero_copy_only=False)
    dead = []
    if refused.any():
        indices = np.flatnonzero(refused)
        reason_of = reasons.to_pylist()
        for i, (source, row, raw) in zip(indices, row_dicts(batch, indices)):
            reason = reason_of[i]
            dead.append(DeadLetter(
                reason=reason, stage='consent', table=table.name, source_file=source, row=row,
                field=table.subject_key, problem=problems[reason],
                subject=str(raw[table.subject_key]),
                raw=None if reason == 'erasure_requested' else raw))
        keep = pa.array(~refused)
        batch, sensitive_ok = batch.filter(keep), sensitive_ok.filter(keep)
    batch, suppressed = suppress_sensitive(batch, table, sensitive_ok)
    return batch, suppressed, dead


def suppress_sensitive(batch: pa.RecordBatch, table, sensitive_ok: pa.Array):
    """(``batch`` with every sensitive field nulled where ``sensitive_ok`` is false, how many
    rows that was): the customer may move, but gave no separate consent (PIPL Art. 29)."""
    suppressed = 0
    if table.sensitive_fields and batch.num_rows:
        suppressed = batch.num_rows - pc.sum(sensitive_ok).as_py()
        if suppressed:
            columns = list(batch.columns)
            for name in table.sensitive_fields:
                i = batch.schema.get_field_index(name)
                columns[i] = pc.if_else(sensitive_ok, columns[i],
                                        pa.scalar(None, columns[i].type))
            batch = pa.RecordBatch.from_arrays(columns, schema=batch.schema)
    return batch, suppressed


class _GateFn(beam.DoFn):
    def __init__(self, table, scratch, problems):
        self._table = table
        self._scratch = scratch
        self._problems = problems

    def process(self, batch, parts):
        allowed, suppressed, dead = gate_batch(batch, self._table,
                                               load_decisions(self._scratch, parts),
                                               self._problems)
        if allowed.num_rows:
            yield allowed
        if suppressed:
            yield beam.pvalue.TaggedOutput(ConsentGate.SUPPRESSED,
                                           (self._table.name, suppressed))
        for letter in dead:
            yield beam.pvalue.TaggedOutput(ConsentGate.DEAD, letter)
