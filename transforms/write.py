"""Write: delivered batches as Parquet with Parquet Modular Encryption, through a Beam file sink.

Files are written under temporary names and renamed when the write is finalized (Beam's
``FileBasedSink``), so a crashed run leaves no half-written file under a final name. Encryption:
AES_GCM_V1 (never CTR), 256-bit data keys, encrypted footer, one master key per classification
(see ``transforms.crypto``).
"""

import apache_beam as beam
from apache_beam.io import filebasedsink, iobase
from apache_beam.io.filesystem import CompressionTypes
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.batches import SOURCE, strip_provenance
from transforms.crypto import DATA_ROLES, cached_keyring, data_role, pme_encryption_properties
from transforms.files import join

__all__ = ['WriteTable', 'column_keys']

SHARD_TEMPLATE = '-SSSSS-of-NNNNN'


def column_keys(table) -> dict:
    """PME master key role -> delivered columns under it (by classification)."""
    keys = {}
    for rule in table.rules:
        if rule.delivered:
            keys.setdefault(data_role(rule.field.classification), []).append(rule.field.name)
    return keys


class WriteTable(beam.PTransform):
    """Write a table's delivered batches; outputs ``files`` (final paths) and ``written``
    (``((table, source), rows)`` counts, for the manifest's per-source conservation)."""
    FILES = 'files'
    WRITTEN = 'written'

    def __init__(self, table, run_dir, keys_path):
        super().__init__()
        self._table = table
        self._sink = _EncryptedParquetSink(
            join(run_dir, 'data', table.name, 'part'), table.delivered_schema,
            column_keys(table), keys_path)

    def expand(self, batches):
        counted = batches | 'Count' >> beam.ParDo(_CountBySourceFn(self._table.name)) \
            .with_outputs(self.WRITTEN, main='rows')
        files = counted.rows | 'Parquet' >> iobase.Write(self._sink)
        return {self.FILES: files, self.WRITTEN: counted[self.WRITTEN]}


class _CountBySourceFn(beam.DoFn):
    def __init__(self, table_name):
        self._table_name = table_name

    def process(self, batch):
        counts = pc.value_counts(batch.column(SOURCE).dictionary_decode()
                                 if pa.types.is_dictionary(batch.schema.field(SOURCE).type)
                                 else batch.column(SOURCE))
        for item in counts.to_pylist():
            yield beam.pvalue.TaggedOutput(WriteTable.WRITTEN,
                                           ((self._table_name, item['values']), item['counts']))
        yield strip_provenance(batch)


class _EncryptedParquetSink(filebasedsink.FileBasedSink):
    def __init__(self, prefix, schema, keys_by_role, keys_path):
        super().__init__(prefix, coder=None, file_name_suffix='.parquet', num_shards=0,
                         shard_name_template=SHARD_TEMPLATE,
                         mime_type='application/vnd.apache.parquet',
                         compression_type=CompressionTypes.UNCOMPRESSED)
        self._schema = schema
        self._keys_by_role = keys_by_role
        self._keys_path = keys_path

    def open(self, temp_path):
        handle = super().open(temp_path)
        keyring = cached_keyring(self._keys_path, DATA_ROLES)
        writer = pq.ParquetWriter(
            handle, self._schema, compression='zstd',
            encryption_properties=pme_encryption_properties(keyring, self._keys_by_role))
        return _OpenParquet(handle, writer)

    def write_record(self, file_handle, value):
        file_handle.writer.write_batch(
            pa.RecordBatch.from_arrays(value.columns, schema=self._schema))

    def close(self, file_handle):
        file_handle.writer.close()
        file_handle.handle.close()


class _OpenParquet:
    def __init__(self, handle, writer):
        self.handle = handle
        self.writer = writer
