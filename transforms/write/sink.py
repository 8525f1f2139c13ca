"""Write encrypted files whose names, and the encryption bound to them, are fixed when written.

Each bundle writes one file under a temporary directory of the run, named
``part-<16 hex>.<suffix>``; its final place ``<kind>/<table>/part-<16 hex>.<suffix>`` is known
from the start, so its encryption can be bound to it (see ``transforms.keys.crypto.file_identity``).
One finalize step, after every bundle is committed, renames the files into place, writes one
empty file if there were no values (readers then still find the schema), and removes the
temporary directory with any file a failed bundle left behind. A crashed run therefore leaves no
half-written file under a final name.
"""

import secrets

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from transforms.keys.crypto import file_identity
from transforms.common.files import join

__all__ = ['WriteEncryptedFiles']


class WriteEncryptedFiles(beam.PTransform):
    """Values -> encrypted files under ``run_dir/kind/table``; outputs the final paths.

    ``file_format`` has ``suffix``, ``open(handle, identity)`` returning a writer state,
    ``write(state, value)`` and ``close(state)`` (which closes ``handle``). The input may be a
    tuple of PCollections: each is written where it is produced (no Flatten, which a local
    runner would hold in memory) and one finalize step places all their files.
    """

    def __init__(self, run_dir, run_id, kind, table_name, file_format):
        super().__init__()
        self._places = _Places(run_dir, run_id, kind, table_name, file_format.suffix)
        self._format = file_format

    def expand(self, values):
        branches = values if isinstance(values, tuple) else (values,)
        written = [branch | f'WriteShards{i if len(branches) > 1 else ""}' >> beam.ParDo(
            _WriteShardsFn(self._places, self._format)) for i, branch in enumerate(branches)]
        written = written[0] if len(written) == 1 else written | 'Written' >> beam.Flatten()
        return (branches[0].pipeline
                | 'Once' >> beam.Create([None])
                | 'Finalize' >> beam.FlatMap(_finalize, self._places, self._format,
                                             beam.pvalue.AsList(written)))


class _Places:
    """Where one table's files of one kind go, and what each is bound to."""

    def __init__(self, run_dir, run_id, kind, table_name, suffix):
        self.run_id = run_id
        self.relative_dir = f'{kind}/{table_name}'
        self.final_dir = join(run_dir, kind, table_name)
        self.temp_dir = join(run_dir, f'.temp-{kind}-{table_name}')
        self.suffix = suffix

    def new_file(self):
        """(temporary path, final path, identity) of a new file."""
        name = f'part-{secrets.token_hex(8)}{self.suffix}'
        return (join(self.temp_dir, name), join(self.final_dir, name),
                file_identity(self.run_id, f'{self.relative_dir}/{name}'))


def _open_file(places, file_format):
    """(temporary path, final path, writer state) of a new file, open for writing."""
    temp, final, identity = places.new_file()
    return temp, final, file_format.open(FileSystems.create(temp), identity)


def _write_empty_file(places, file_format):
    temp, final, state = _open_file(places, file_format)
    file_format.close(state)
    return temp, final


class _WriteShardsFn(beam.DoFn):
    def __init__(self, places, file_format):
        self._places = places
        self._format = file_format
        self._open = None

    def start_bundle(self):
        self._open = None

    def process(self, value):
        if self._open is None:
            self._open = _open_file(self._places, self._format)
        self._format.write(self._open[2], value)

    def finish_bundle(self):
        if self._open is not None:
            temp, final, state = self._open
            self._open = None
            self._format.close(state)
            yield GlobalWindows.windowed_value((temp, final))


def _finalize(_, places, file_format, written):
    written = list(written) or [_write_empty_file(places, file_format)]
    if not FileSystems.exists(places.final_dir):
        FileSystems.mkdirs(places.final_dir)
    # Idempotent: a retried finalize finds some files already in place.
    pending = [(t, f) for t, f in written if not FileSystems.exists(f)]
    if pending:
        FileSystems.rename([t for t, _ in pending], [f for _, f in pending])
    leftovers = FileSystems.match([join(places.temp_dir, '*')])[0].metadata_list
    if leftovers:
        FileSystems.delete([m.path for m in leftovers])
    if FileSystems.exists(places.temp_dir):
        FileSystems.delete([places.temp_dir])
    return sorted(f for _, f in written)
