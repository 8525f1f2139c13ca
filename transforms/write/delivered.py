"""Open delivered files: the one place that knows how each kind of output file is encrypted.

Used by the manifest step (which reads every file back) and by ``novation decrypt``. Every
function takes the file's identity (``<run id>/<path in the run>``); a file opened under any
other identity fails.
"""

from typing import Iterator

import fastavro
import pyarrow.parquet as pq

from transforms.keys.crypto import decrypting_stream, pme_decryption_properties
from transforms.write.deadletter import DEADLETTER_SUFFIX

__all__ = ['avro_records', 'count_rows', 'deadletter_lines', 'file_kind', 'parquet_file']


def file_kind(path: str) -> str:
    """parquet, avro or deadletter, from the file name."""
    if path.endswith('.parquet'):
        return 'parquet'
    if path.endswith('.avro.enc'):
        return 'avro'
    if path.endswith(DEADLETTER_SUFFIX):
        return 'deadletter'
    raise ValueError(f'not a delivered file name: {path}')


def parquet_file(source, keyring, identity) -> pq.ParquetFile:
    return pq.ParquetFile(source, decryption_properties=pme_decryption_properties(keyring,
                                                                                  identity))


def avro_records(source, keyring, identity):
    """(writer schema, record iterator) of a delivered Avro file."""
    reader = fastavro.reader(decrypting_stream(keyring, 'data.avro', source, identity))
    return reader.writer_schema, reader


def deadletter_lines(source, keyring, identity) -> Iterator[bytes]:
    stream = decrypting_stream(keyring, 'deadletter', source, identity)
    for line in stream:
        if line.strip():
            yield line


def count_rows(kind: str, source, keyring, identity) -> int:
    """Rows in a delivered file. Streams are read whole, which authenticates every byte; a
    Parquet file's count comes from its footer, authenticated under the footer key."""
    if kind == 'parquet':
        return parquet_file(source, keyring, identity).metadata.num_rows
    if kind == 'avro':
        return sum(1 for _ in avro_records(source, keyring, identity)[1])
    return sum(1 for _ in deadletter_lines(source, keyring, identity))
