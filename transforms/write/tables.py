"""Write: delivered batches as encrypted Parquet or Avro (``output.format``).

Parquet uses Parquet Modular Encryption: AES_GCM_V1 (never CTR), fresh 256-bit data keys per
file, encrypted footer, each column under the master key of its classification (``data.*``) or
its own key (``column.NAME``, masking method ``encrypt``). Avro is a standard object container
file (deflate codec) inside Tink streaming AEAD (``data.avro``). Both are bound to the file's
identity (see ``transforms.keys.crypto``) and written through ``transforms.write.sink``.
"""

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.common import metrics, progress
from transforms.common.batches import SOURCE, holding_batches, strip_provenance
from transforms.keys.crypto import encrypting_stream, pme_encryption_properties
from transforms.keys.keyring import cached_keyring
from transforms.keys.roles import column_keys
from transforms.write.sink import WriteEncryptedFiles

__all__ = ['AVRO_CODEC', 'ParquetFiles', 'WriteTable', 'avro_schema']

AVRO_CODEC = 'deflate'


class WriteTable(beam.PTransform):
    """Write a table's delivered batches; outputs ``files`` (final paths) and ``written``
    (``((table, source), rows)`` counts, for the manifest's per-source conservation)."""
    FILES = 'files'
    WRITTEN = 'written'

    def __init__(self, table, output_format, run, keys_path):
        super().__init__()
        self._table = table
        file_format = (_AvroFiles(table, keys_path) if output_format == 'avro'
                       else ParquetFiles(table, keys_path))
        self._write = WriteEncryptedFiles(run.run_dir, run.run_id, 'data', table.name,
                                          file_format)

    def expand(self, batches):
        counted = batches | 'Count' >> beam.ParDo(_CountBySourceFn(self._table.name)) \
            .with_outputs(self.WRITTEN, main='rows')
        files = holding_batches(counted.rows) | 'Files' >> self._write
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
        progress.count('written', self._table_name, batch.num_rows)
        metrics.count(self._table_name, 'rows_written', batch.num_rows)
        yield strip_provenance(batch)

    def finish_bundle(self):
        progress.flush()


class ParquetFiles:
    """Encrypted Parquet files of ``table``'s delivered schema; ``extra`` fields (e.g. a
    stream's op and position) follow it, each under the key role given with it."""
    suffix = '.parquet'

    def __init__(self, table, keys_path, *, extra=()):
        self._schema = pa.schema(list(table.delivered_schema) + [f for f, _ in extra])
        self._column_keys = column_keys(table)
        for field, role in extra:
            self._column_keys.setdefault(role, []).append(field.name)
        self._roles = sorted({'data.footer', *self._column_keys})
        self._keys_path = keys_path

    @property
    def roles(self):
        """The key roles a file needs."""
        return self._roles

    def open(self, handle, identity):
        keyring = cached_keyring(self._keys_path, self._roles)
        writer = pq.ParquetWriter(
            handle, self._schema, compression='zstd',
            encryption_properties=pme_encryption_properties(keyring, self._column_keys,
                                                            identity))
        return handle, writer

    def write(self, state, batch):
        state[1].write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=self._schema))

    def close(self, state):
        handle, writer = state
        writer.close()
        handle.close()


# ---------------------------------------------------------------------------------------------
# Avro


def avro_type_of(arrow_type):
    """The Avro type of an Arrow type (a ValueError for types Avro output never has)."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return 'string'
    if pa.types.is_boolean(arrow_type):
        return 'boolean'
    if pa.types.is_integer(arrow_type):
        return 'long' if arrow_type.bit_width > 32 else 'int'
    if pa.types.is_floating(arrow_type):
        return 'double' if arrow_type.bit_width > 32 else 'float'
    if pa.types.is_decimal(arrow_type):
        return {'type': 'bytes', 'logicalType': 'decimal', 'precision': arrow_type.precision,
                'scale': arrow_type.scale}
    if pa.types.is_date(arrow_type):
        return {'type': 'int', 'logicalType': 'date'}
    if pa.types.is_timestamp(arrow_type):
        return {'type': 'long', 'logicalType': 'timestamp-micros'}
    raise ValueError(f'no Avro type for {arrow_type}')


def avro_schema(table) -> dict:
    """The delivered schema as Avro: masked types, every field nullable, and each field's
    classification and masking method recorded as attributes."""
    fields = []
    for rule in table.rules:
        if not rule.delivered:
            continue
        avro_type = avro_type_of(rule.operator.output_type())
        field = {'name': rule.field.name, 'type': ['null', avro_type],
                 'default': None, 'classification': rule.field.classification,
                 'masking': rule.operator.name}
        if rule.field.doc:
            field['doc'] = rule.field.doc
        fields.append(field)
    return {'type': 'record', 'name': table.name, 'namespace': 'novation.delivered',
            'doc': f'{table.name} as delivered by Novation', 'fields': fields}


class _AvroFiles:
    suffix = '.avro.enc'

    def __init__(self, table, keys_path):
        self._schema = fastavro.parse_schema(avro_schema(table))
        self._keys_path = keys_path

    def open(self, handle, identity):
        keyring = cached_keyring(self._keys_path, ('data.avro',))
        stream = encrypting_stream(keyring, 'data.avro', handle, identity)
        return stream, fastavro.write.Writer(stream, self._schema, codec=AVRO_CODEC)

    def write(self, state, batch):
        writer = state[1]
        for record in batch.to_pylist():
            writer.write(record)

    def close(self, state):
        stream, writer = state
        writer.flush()
        stream.close()  # closes the underlying file too
