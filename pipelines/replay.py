"""``novation replay``: move the dead letters a review marked ``replay``, through the same path.

The dead letters the review's ``replay`` decisions select are read from the run's encrypted
dead-letter files by the workers themselves (their raw rows are never written in clear, nor put
into the job's graph) and go through the batch's own conform, dedup, consent, mask and write
steps (``build_pipeline`` with this source in place of the exports), with the config and the
consent registry as they are now: a withdrawal since the first run wins. The replay is a new
run directory, with the same keys and so the same pseudonyms, whose manifest names the run it
replays (``replay_of``). Each dead letter has a stable, keyed id; the original run's
``review.json`` records the ids each replay consumed, so replaying again moves nothing twice.
Conservation holds across the two runs: the dead letters replayed = the replay's rows written +
its own dead letters.
"""

import datetime
import io
import json
from typing import List, Optional

import apache_beam as beam
import pyarrow as pa

from pipelines.decrypt import load_manifest
from pipelines.review import load_review, matches, replay_decisions, save_review, select
from transforms.keys.crypto import cached_keyed_ops, file_identity
from transforms.common.batches import ROW, SOURCE, holding_batches
from transforms.write.delivered import deadletter_lines
from transforms.common.errors import ConfigError, NovationError
from transforms.common.files import join, read_bytes
from transforms.keys.keyring import cached_keyring
from transforms.read.tables import ReadTable, SourceFacts
from transforms.read.columns import text_array

__all__ = ['ReplayDeadLetters', 'dead_letter_id', 'plan_replay', 'record_replay']


def dead_letter_id(ops, record: dict) -> str:
    """A dead letter's stable id: keyed, so it says nothing of the row."""
    return ops.pseudonym('novation-deadletter',
                         f'{record["table"]}|{record["source_file"]}|{record["row"]}')


def plan_replay(run_dir: str, config, only: Optional[List[int]] = None) -> dict:
    """What to replay, checked before any data moves: {table: set of dead-letter ids}, the
    decisions used, and the original manifest. Raises NovationError in one line."""
    manifest = load_manifest(run_dir, config.output.keys)
    review = load_review(run_dir, manifest['run_id'])
    in_force = replay_decisions(run_dir, review, only)
    keys = config.output.keys
    ops = cached_keyed_ops(keys)
    ring = cached_keyring(keys, ('pseudonym',))
    if ring.key_ids()['pseudonym']['primary'] != manifest['keys']['pseudonym']['primary']:
        raise ConfigError(f'{config.source}: output.keys: another pseudonym key than the run '
                          f'{manifest["run_id"]} used; a replay must keep its pseudonyms')
    tables = {t.name: t for t in config.tables}
    consumed = {i for r in review.get('replays', []) for i in r['consumed']}
    selected = {}
    letters = select(run_dir, keys, {})  # decrypted once, whatever the decisions
    for _, decision in in_force:
        for record in (r for r in letters if matches(r, decision['group'])):
            name = record['table']
            if name not in tables:
                raise ConfigError(f'{config.source}: tables: no table {name!r}, which the '
                                  f'replayed dead letters belong to')
            fields = {f['name'] for f in manifest['tables'][name]['fields']}
            if fields != set(tables[name].schema.field_names):
                raise ConfigError(f'{config.source}: tables.{name}: its fields are not the '
                                  f'run\'s ({manifest["run_id"]}); replay with a config whose '
                                  f'schema matches the run\'s')
            if record['reason'] == 'duplicate_key' and tables[name].keep_duplicates == 'latest':
                raise NovationError(f'{name}: its duplicate_key dead letters cannot be replayed: '
                                    f'the table keeps the latest copy of a key, which the run '
                                    f'delivered, so a replay would move the key twice')
            if record['raw'] is None:
                continue  # an erased customer's, or a row withheld whole: nothing was kept
            identity = dead_letter_id(ops, record)
            if identity not in consumed:
                selected.setdefault(name, set()).add(identity)
    if not selected:
        raise NovationError(f'{run_dir}: the dead letters marked for replay were replayed '
                            f'already (or kept no raw row); nothing to replay')
    return {'manifest': manifest, 'selected': selected,
            'decisions': [n for n, _ in in_force]}


class ReplayDeadLetters(beam.PTransform):
    """The selected dead letters of one table, read in the worker from the original run's
    encrypted files, as ``ReadTable`` outputs them: text batches with provenance, and a
    ``SourceFacts`` per source file (no dead letters of its own)."""

    def __init__(self, table, run_dir: str, manifest: dict, ids, keys_path: str):
        super().__init__()
        self._fn = _ReplayFn(table, run_dir, manifest['run_id'], frozenset(ids or ()),
                             keys_path)
        self._files = [f['path'] for f in manifest['tables'][table.name]['deadletter_files']
                       ] if ids else []  # a table with nothing to replay reads nothing

    def expand(self, pbegin):
        read = (pbegin
                | 'Files' >> beam.Create(self._files)
                | 'Decrypt' >> beam.ParDo(self._fn).with_outputs(
                    ReadTable.DEAD, ReadTable.SOURCES, main=ReadTable.ROWS))
        holding_batches(read[ReadTable.ROWS])
        return read


class _ReplayFn(beam.DoFn):
    def __init__(self, table, run_dir, run_id, ids, keys_path):
        self._table = table
        self._run_dir = run_dir
        self._run_id = run_id
        self._ids = ids
        self._keys_path = keys_path
        self._keyring = self._ops = None

    def setup(self):
        self._keyring = cached_keyring(self._keys_path, ('deadletter',))
        self._ops = cached_keyed_ops(self._keys_path)

    def process(self, path):
        data = read_bytes(join(self._run_dir, path), what='dead-letter file')
        records = [r for r in map(json.loads, deadletter_lines(
            io.BytesIO(data), self._keyring, file_identity(self._run_id, path)))
            if r['raw'] is not None and dead_letter_id(self._ops, r) in self._ids]
        if not records:
            return
        names = list(self._table.schema.field_names)
        columns = [text_array([r['raw'].get(name) for r in records]) for name in names]
        sources = pa.array([r['source_file'] for r in records], pa.string())
        lines = pa.array([r['row'] for r in records], pa.int64())
        yield pa.RecordBatch.from_arrays(columns + [sources.dictionary_encode(), lines],
                                         names=names + [SOURCE, ROW])
        counts = {}
        for r in records:
            counts[r['source_file']] = counts.get(r['source_file'], 0) + 1
        for source, n in sorted(counts.items()):
            yield beam.pvalue.TaggedOutput(ReadTable.SOURCES,
                                           SourceFacts(self._table.name, source, n, [], []))


def record_replay(run_dir: str, plan: dict, result, keys: str = None) -> dict:
    """Record in the original run's review file what the replay consumed, once its manifest
    proves conservation across the two runs; returns the entry."""
    replayed = sum(len(ids) for ids in plan['selected'].values())
    totals = result.manifest['totals']
    again = sum(totals['dead_letters'].values())
    if totals['rows_read'] != replayed or totals['rows_read'] != totals['rows_written'] + again:
        raise NovationError(f'{result.run_dir}: the replay read {totals["rows_read"]} of '
                            f'{replayed} dead letters replayed; conservation across the runs '
                            f'does not hold')
    review = load_review(run_dir, plan['manifest']['run_id'])
    entry = {'run_id': result.manifest['run_id'], 'at': datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec='seconds'), 'decisions': plan['decisions'],
        'dead_letters_replayed': replayed, 'rows_written': totals['rows_written'],
        'dead_letters_again': again,
        'consumed': sorted(i for ids in plan['selected'].values() for i in ids)}
    review.setdefault('replays', []).append(entry)
    save_review(run_dir, review)
    from pipelines.review import output_root
    from transforms.commit.audit import append_event
    append_event(output_root(result.run_dir), 'replayed', keys=keys, run_id=entry['run_id'],
                 replay_of=plan['manifest']['run_id'], decisions=plan['decisions'],
                 dead_letters_replayed=replayed, rows_written=totals['rows_written'])
    return entry
