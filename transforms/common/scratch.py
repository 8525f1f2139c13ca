"""Scratch: state kept per key, and rows waiting for it, parked on disk between stages.

Only two things grow with the customer book rather than with a batch: the consent decisions
(one per customer) and the duplicate check's keys (one per row). Gathered whole, they would sit
in one process, and on the local runner also in the runner that passes them between stages.
Instead each step writes its part to the run's scratch directory, split by a hash of the key
into ``parts`` partitions, and a later step reads one partition at a time: memory follows the
size of a partition, not of the customer book. The rows of a table with a primary key wait
here too (``BatchFile``, ``Scratch.read_batches``) until its duplicated keys are known.

Scratch files hold customer data, ids and consent outcomes, so each is encrypted with the
keyring's dead-letter key (Tink streaming AEAD, the run and file name as associated data), and
all are deleted when the run ends.
"""

import math
import os
import uuid
from typing import Dict, Iterator, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from transforms.keys.crypto import decrypting_stream, encrypting_stream
from transforms.common.files import has_scheme
from transforms.keys.keyring import cached_keyring
from transforms.common.sorted_keys import key_column, split_by_partition

__all__ = ['PARTITION_BYTES', 'SPILL_ROWS', 'BatchFile', 'GroupInScratch', 'Partitions', 'Scratch',
           'partitions_for', 'write_partitions']

ROLE = 'deadletter'
# Input bytes per partition: a partition's keys and facts are then a few MB to a few tens of MB.
PARTITION_BYTES = 64 << 20
MAX_PARTITIONS = 256
# Rows of state a step gathers before it writes them: bounds its memory to tens of MB.
SPILL_ROWS = 1 << 20
# Bytes of tables GroupInScratch holds in a worker before it writes them.
SPILL_BYTES = 8 << 20


def partitions_for(input_bytes: int) -> int:
    """How many partitions the state of an input of this size is split into."""
    return max(1, min(MAX_PARTITIONS, math.ceil(input_bytes / PARTITION_BYTES)))


def write_partitions(scratch: 'Scratch', prefix: str, parts: int, keys: np.ndarray,
                     columns: Optional[Dict[str, object]] = None) -> List[Tuple[int, str]]:
    """Write sorted fixed-width ``keys`` and the ``columns`` beside them (NumPy fixed-width or
    Arrow arrays) to scratch, one file per non-empty partition (``sorted_keys.partition_of``);
    returns ``[(partition, path)]``."""
    order, bounds = split_by_partition(keys, parts)
    written = []
    for p in range(parts):
        at = order[bounds[p]:bounds[p + 1]]
        if not len(at):
            continue
        table = {'key': key_column(keys[at])}
        for name, values in (columns or {}).items():
            table[name] = key_column(values[at]) if isinstance(values, np.ndarray) \
                else values.take(pa.array(at))
        written.append((p, scratch.write(f'{prefix}-{p}', pa.table(table))))
    return written


class Partitions(beam.PTransform):
    """The partition numbers 0 .. parts - 1, spread over the workers when there are several."""

    def __init__(self, parts: int):
        super().__init__()
        self._parts = parts

    def expand(self, pbegin):
        numbers = pbegin | 'Numbers' >> beam.Create(range(self._parts))
        if self._parts > 1:
            numbers |= 'Spread' >> beam.Reshuffle()
        return numbers


class GroupInScratch(beam.PTransform):
    """A GroupByKey of Arrow tables by a small shard number, through the run's scratch files.

    Takes a PCollection, or a tuple of them, of ``(shard, (kind, table))`` items with ``shard`` in
    0 .. shards - 1; outputs ``(shard, [(kind, table), ...])`` for each shard that has any.
    The local runner holds a GroupByKey's data in memory until the next stage has read it all,
    and a Flatten of PCollections made in different stages passes through it too. Here each
    input is written to scratch by the stage that made it (at most SPILL_BYTES held), only
    the files' paths are grouped by shard, and each shard is read back alone. Tables of one
    kind may differ in columns: they are concatenated with the missing columns null.
    ``combine(kind, table)``, if given, reduces what a worker holds of a shard before it is
    written (a combiner: its output must be an input it accepts again).
    """

    def __init__(self, scratch: 'Scratch', prefix: str, shards: int, combine=None):
        super().__init__()
        self._scratch = scratch
        self._prefix = prefix
        self._shards = shards
        self._combine = combine

    def expand(self, inputs):
        inputs = (inputs,) if isinstance(inputs, beam.pvalue.PCollection) else inputs
        spilled = tuple(items | f'Spill{i}' >> beam.ParDo(_SpillShardsFn(
                            self._scratch, self._prefix, self._combine))
                        for i, items in enumerate(inputs)) | 'Spilled' >> beam.Flatten()
        return (spilled
                | 'ByShard' >> beam.GroupByKey()
                | 'Gather' >> beam.Map(_gathered, self._scratch))


class _SpillShardsFn(beam.DoFn):
    """Tables gathered by (shard, kind) and written to scratch once SPILL_BYTES are held and
    at the end of a bundle; outputs ``(shard, (kind, path))``."""

    def __init__(self, scratch, prefix, combine=None):
        self._scratch = scratch
        self._prefix = prefix
        self._combine = combine
        self._held, self._bytes = {}, 0

    def start_bundle(self):
        self._held, self._bytes = {}, 0

    def process(self, item):
        shard, (kind, table) = item
        self._held.setdefault((shard, kind), []).append(table)
        self._bytes += table.nbytes
        if self._bytes >= SPILL_BYTES:
            yield from self._spill()

    def finish_bundle(self):
        for written in self._spill():
            yield GlobalWindows.windowed_value(written)

    def _spill(self):
        held, self._held, self._bytes = self._held, {}, 0
        return [(shard, (kind, self._scratch.write(f'{self._prefix}-{shard}',
                                                   self._combined(kind, tables))))
                for (shard, kind), tables in sorted(held.items())]

    def _combined(self, kind, tables):
        table = pa.concat_tables(tables, promote_options='default')
        return table if self._combine is None else self._combine(kind, table)


def _gathered(kv, scratch):
    # The stage before (the main one) leaves freed memory cached by the allocator: give it
    # back before a shard is merged whole.
    pa.default_memory_pool().release_unused()
    shard, files = kv
    return shard, [(kind, scratch.read(path)) for kind, path in sorted(files)]


class BatchFile:
    """A scratch file being written: an Arrow IPC stream (LZ4-compressed: it may hold whole
    tables) inside Tink streaming AEAD."""

    def __init__(self, path: str, schema: pa.Schema, stream):
        self.path = path
        self.schema = schema
        self.rows = 0
        self._stream = stream
        self._writer = pa.ipc.new_stream(pa.PythonFile(stream, mode='w'), schema,
                                         options=pa.ipc.IpcWriteOptions(compression='lz4'))

    def write(self, data) -> None:
        """Append a record batch or table."""
        self._writer.write(data)
        self.rows += data.num_rows

    def close(self) -> str:
        """Finish the file; returns its path."""
        self._writer.close()
        self._stream.close()
        return self.path


class Scratch:
    """The run's scratch directory: encrypted Arrow tables written by one step, read by another.

    Picklable (a directory, a keyring path and the run id); the key is loaded in each worker.
    """

    def __init__(self, directory: str, keys_path: str, run_id: str):
        self.directory = directory
        self._keys_path = keys_path
        self._run_id = run_id

    def _identity(self, path: str) -> str:
        return f'novation scratch {self._run_id}/{path.rsplit("/", 1)[-1]}'

    def _keyring(self):
        return cached_keyring(self._keys_path, (ROLE,))

    def write(self, prefix: str, table: pa.Table) -> str:
        """Write ``table`` to a new file named after ``prefix``; returns its path."""
        batches = self.batch_file(prefix, table.schema)
        batches.write(table)
        return batches.close()

    def batch_file(self, prefix: str, schema: pa.Schema) -> 'BatchFile':
        """A new file named after ``prefix``, written a batch at a time."""
        path = FileSystems.join(self.directory, f'{prefix}-{uuid.uuid4().hex}.arrows')
        return BatchFile(path, schema, encrypting_stream(
            self._keyring(), ROLE, FileSystems.create(path), self._identity(path)))

    def read(self, path: str) -> pa.Table:
        """The table of a file ``write`` wrote; raises if its bytes were changed."""
        with FileSystems.open(path) as f:
            data = decrypting_stream(self._keyring(), ROLE, f, self._identity(path)).read()
        return pa.ipc.open_stream(data).read_all()

    def read_batches(self, path: str) -> Iterator[pa.RecordBatch]:
        """The batches of a file, one at a time (memory follows a batch, not the file); raises
        if its bytes were changed."""
        with FileSystems.open(path) as f:
            stream = decrypting_stream(self._keyring(), ROLE, f, self._identity(path))
            yield from pa.ipc.open_stream(pa.PythonFile(stream, mode='r'))

    def remove(self) -> None:
        """Delete every scratch file and the directory (the run committed, or failed locally).
        Object stores have no directories: there, the files are the directory."""
        files = [m.path for m in FileSystems.match(
            [FileSystems.join(self.directory, '*')])[0].metadata_list]
        if files:
            FileSystems.delete(files)
        if not has_scheme(self.directory) and os.path.isdir(self.directory):
            os.rmdir(self.directory)
