"""The notification list (PIPL Art. 22): for the seller, whom to tell about the transfer.

A seller that transfers personal information in a merger must tell each customer the
recipient's name and contact. The list has one row per customer and table, by the seller's own
customer id:

- a table whose records about them moved: the categories of data that moved (a category moved
  when at least one of its values did: a customer without separate consent for sensitive data
  is not told their ID number moved), what the table delivered as their id (its pseudonym, for
  ``novation incident``), and the recipient's name and contact;
- a table whose records about them were refused: the reason.

``moved`` says whether anything about the customer moved, in any table. Customers who asked for
erasure are not listed: they are counted. The list is Parquet in Tink streaming AEAD under the
key role ``notice`` and goes to ``notice.path``, on the seller's side; the acquirer's manifest
gets its counts only.

The work is columnar throughout: each batch becomes one row per customer (the categories a
bitmask), customers are split into shards by a hash of their id, the shards wait in the run's
scratch files (``GroupInScratch``, not the runner's memory), and each shard is merged and
written with Arrow, so the step costs a few elements per batch, not one per customer.
"""

import functools

import apache_beam as beam
import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.keys.crypto import encrypting_stream, file_identity
from transforms.common.files import join
from transforms.keys.seal import write_sealed_json
from transforms.keys.keyring import cached_keyring
from transforms.mask.mask import KeyedBatchFn
from transforms.mask.methods import MaskContext, string_form
from transforms.write.sink import WriteEncryptedFiles
from transforms.common.scratch import GroupInScratch
from transforms.common.sorted_keys import split_table

__all__ = ['NOTICE_FILE', 'NOTICE_SCHEMA', 'NotificationList', 'moved_parts', 'notice_table']

NOTICE_FILE = 'notice.json'
NOTICE_SUFFIX = '.parquet.enc'
_CHUNK = 4 << 20
SHARDS = 16  # at least; more for a large input (NotificationList's ``shards``)
_PARTS = pa.schema([('subject', pa.string()), ('table', pa.string()),
                    ('delivered_as', pa.string()), ('mask', pa.int64())])
_REFUSED = pa.schema([('subject', pa.string()), ('table', pa.string()),
                      ('reason', pa.string())])
NOTICE_SCHEMA = pa.schema([
    ('customer_id', pa.string()), ('moved', pa.bool_()), ('table', pa.string()),
    ('categories', pa.string()), ('delivered_as', pa.string()), ('refused', pa.string()),
    ('recipient', pa.string()), ('recipient_contact', pa.string())])


def table_categories(table) -> list:
    """The categories a table delivers, in the order of their bits in a mask."""
    return sorted({r.field.category for r in table.rules if r.delivered and r.field.category})


def moved_parts(batch: pa.RecordBatch, table, keyed_ops) -> pa.Table:
    """(subject, table, delivered id, category mask) per row of a batch about to be masked:
    bit i is set when a value of the table's i-th category is there. A customer's rows are
    merged in their shard (most batches hold one row a customer: sorting them here would
    cost more than it saves)."""
    subjects = pc.fill_null(string_form(batch.column(table.subject_key)), '')
    mask = np.zeros(batch.num_rows, dtype=np.int64)
    for bit, category in enumerate(table_categories(table)):
        for rule in table.rules:
            if rule.delivered and rule.field.category == category:
                present = pc.is_valid(batch.column(rule.field.name))
                mask |= present.to_numpy(zero_copy_only=False).astype(np.int64) << bit
    return pa.table({'subject': subjects,
                     'table': pa.array([table.name] * batch.num_rows, pa.string()),
                     'delivered_as': _delivered_ids(table, keyed_ops, subjects),
                     'mask': mask}, schema=_PARTS)


def _delivered_ids(table, keyed_ops, subjects) -> pa.Array:
    """What the table delivers as each row's subject key (once per distinct subject)."""
    rule = table.rule(table.subject_key)
    if not rule.delivered:
        return pa.nulls(len(subjects), pa.string())
    distinct = pc.unique(subjects)
    delivered = pc.cast(rule.operator.apply(distinct, MaskContext(keyed_ops, distinct)),
                        pa.string())
    return delivered.take(pc.index_in(subjects, value_set=distinct))


def _merged(rows: pa.Table, table_name: str, delivered) -> pa.Table:
    """One row per subject of ``rows`` (subject, mask): the masks OR-ed together."""
    rows = rows.sort_by('subject')
    subjects = rows.column('subject').combine_chunks()
    masks = rows.column('mask').to_numpy()
    if not len(subjects):
        return _PARTS.empty_table()
    starts = np.flatnonzero(np.r_[True, pc.not_equal(subjects[1:], subjects[:-1])
                                  .to_numpy(zero_copy_only=False)])
    firsts = subjects.take(pa.array(starts))
    ids = pa.nulls(len(firsts), pa.string()) if delivered is None else \
        delivered[1].take(pc.index_in(firsts, value_set=delivered[0]))
    return pa.table({'subject': firsts, 'table': pa.array([table_name] * len(firsts)),
                     'delivered_as': ids,
                     'mask': np.bitwise_or.reduceat(masks, starts)}, schema=_PARTS)


def _refused(letter, erased):
    """A refusal that names its customer, as a row (subject, table, reason)."""
    if letter.subject is None:
        return
    subject = str(letter.subject)
    yield subject, letter.table, 'erasure_requested' if subject in erased else letter.reason


def _refused_by_shard(rows, shards):
    """A bundle's refusals as (shard, ('refused', table)) items."""
    t = pa.Table.from_pylist([dict(zip(_REFUSED.names, r)) for r in rows], schema=_REFUSED)
    for shard, part in split_table(t, 'subject', shards):
        yield shard, ('refused', part)


def notice_table(items, categories: dict, recipient: str, contact: str) -> tuple:
    """(the list's rows, counts) for one shard from its ('moved', parts) and ('refused', rows)
    items (pure). ``categories``: table -> its categories in bit order."""
    moved = [v for k, v in items if k == 'moved']
    refused = [v for k, v in items if k == 'refused']
    moved = pa.concat_tables(moved) if moved else _PARTS.empty_table()
    refused = pa.concat_tables(refused) if refused else _REFUSED.empty_table()
    refused = refused.group_by(['subject', 'table', 'reason'], use_threads=False).aggregate(
        []).sort_by([('subject', 'ascending'), ('table', 'ascending'), ('reason', 'ascending')])
    erased = pc.unique(refused.filter(pc.equal(refused.column('reason'),
                                               'erasure_requested')).column('subject'))
    moved = moved.filter(pc.invert(pc.is_in(moved.column('subject'), value_set=erased)))
    refused = refused.filter(pc.invert(pc.is_in(refused.column('subject'), value_set=erased)))
    per_table = []
    for name in sorted(set(moved.column('table').to_pylist())):
        part = moved.filter(pc.equal(moved.column('table'), name))
        merged = _merged(part.select(['subject', 'mask']), name,
                         (part.column('subject'), part.column('delivered_as')))
        per_table.append(merged.set_column(3, 'mask', _labels(
            merged.column('mask'), categories[name])).rename_columns(
            ['subject', 'table', 'delivered_as', 'categories']))
    moved_rows = pa.concat_tables(per_table) if per_table else pa.table(
        {'subject': pa.array([], pa.string()), 'table': pa.array([], pa.string()),
         'delivered_as': pa.array([], pa.string()), 'categories': pa.array([], pa.string())})
    moved_subjects = pc.unique(moved_rows.column('subject'))
    reasons = refused.group_by(['subject', 'table'], use_threads=False).aggregate(
        [('reason', 'list')])
    # grouped in their sorted order (use_threads=False keeps it), so each list is sorted
    reasons = reasons.set_column(2, 'refused', pc.binary_join(reasons.column('reason_list'),
                                                              ', '))
    rows = moved_rows.join(reasons, ['subject', 'table'], join_type='full outer')
    n = rows.num_rows
    moved_flag = pc.is_in(rows.column('subject'), value_set=moved_subjects)
    out = pa.table({
        'customer_id': rows.column('subject'), 'moved': moved_flag,
        'table': rows.column('table'), 'categories': rows.column('categories'),
        'delivered_as': rows.column('delivered_as'), 'refused': rows.column('refused'),
        'recipient': pc.if_else(pc.is_valid(rows.column('categories')),
                                pa.scalar(recipient), pa.scalar(None, pa.string())),
        'recipient_contact': pc.if_else(pc.is_valid(rows.column('categories')),
                                        pa.scalar(contact), pa.scalar(None, pa.string())),
    }, schema=NOTICE_SCHEMA).sort_by([('customer_id', 'ascending'), ('table', 'ascending')])
    not_moved = refused.filter(pc.invert(pc.is_in(refused.column('subject'),
                                                  value_set=moved_subjects)))
    by_reason = not_moved.group_by('reason').aggregate([('subject', 'count_distinct')])
    counts = {'moved': len(moved_subjects),
              'not_moved': len(pc.unique(not_moved.column('subject'))),
              'erased_not_listed': len(erased),
              'not_moved_by_reason': dict(zip(by_reason.column('reason').to_pylist(),
                                              by_reason.column('subject_count_distinct')
                                              .to_pylist())),
              'rows': n}
    return out, counts


def _labels(masks, names) -> pa.Array:
    """Each category mask as the names of its categories, joined by ', '."""
    masks = masks.to_numpy() if hasattr(masks, 'to_numpy') else np.asarray(masks)
    distinct, index = np.unique(masks, return_inverse=True)
    texts = [', '.join(name for bit, name in enumerate(names) if int(m) >> bit & 1)
             for m in distinct]
    return pa.array(texts, pa.string()).take(pa.array(index))


class EncryptedParquet:
    """One Parquet file of the list's rows (a row group per shard written), in Tink streaming
    AEAD under the ``notice`` key, encrypted as it is written (a list of millions of customers
    never sits whole in memory)."""
    suffix = NOTICE_SUFFIX
    roles = ('notice',)

    def __init__(self, keys_path):
        self._keys_path = keys_path

    def open(self, handle, identity):
        keyring = cached_keyring(self._keys_path, self.roles)
        stream = encrypting_stream(keyring, 'notice', handle, identity)
        return stream, pq.ParquetWriter(pa.PythonFile(stream, mode='w'), NOTICE_SCHEMA,
                                        compression='zstd')

    def write(self, state, table):
        state[1].write_table(table)

    def close(self, state):
        stream, writer = state
        writer.close()
        stream.close()


def _merge_counts(counts):
    total = {'moved': 0, 'not_moved': 0, 'erased_not_listed': 0, 'rows': 0,
             'not_moved_by_reason': {}}
    for c in counts:
        for key in ('moved', 'not_moved', 'erased_not_listed', 'rows'):
            total[key] += c[key]
        for reason, n in c['not_moved_by_reason'].items():
            by_reason = total['not_moved_by_reason']
            by_reason[reason] = by_reason.get(reason, 0) + n
    total['not_moved_by_reason'] = dict(sorted(total['not_moved_by_reason'].items()))
    return total


def _moved_by_shard(batch, table, keyed_ops, shards):
    if batch.num_rows:
        for shard, part in split_table(moved_parts(batch, table, keyed_ops), 'subject', shards):
            yield shard, ('moved', part)


class NotificationList(beam.PTransform):
    """Takes {'admitted TABLE': batches about to be masked, 'refused N': dead letters} and
    the erased subjects (a singleton); writes the encrypted list under
    ``notice.path/<run_id>`` and outputs its counts once written. ``scratch``: the run's
    ``transforms.common.scratch.Scratch``, where the shards wait to be merged; ``shards``:
    how many (memory follows a shard, so a large input takes more)."""

    def __init__(self, config, run, erased, scratch, shards=SHARDS):
        super().__init__()
        self._config = config
        self._run = run
        self._erased = erased
        self._scratch = scratch
        self._shards = max(SHARDS, shards)

    def expand(self, inputs):
        keys = self._run.keys_path
        parts = []
        for key, pcoll in sorted(inputs.items()):
            kind, name = key.split(' ', 1)
            if kind == 'admitted':
                parts.append(pcoll | f'Moved[{name}]' >> beam.ParDo(
                    KeyedBatchFn(functools.partial(_moved_by_shard, shards=self._shards),
                                 self._config.table(name), keys)))
            else:
                parts.append(pcoll
                             | f'Refused[{name}]' >> beam.FlatMap(
                                 _refused, beam.pvalue.AsSingleton(self._erased))
                             | f'RefusedBatches[{name}]' >> beam.BatchElements(
                                 min_batch_size=1000, max_batch_size=50_000)
                             | f'RefusedShards[{name}]' >> beam.FlatMap(_refused_by_shard,
                                                                        self._shards))
        t = self._config.transfer
        categories = {table.name: table_categories(table) for table in self._config.tables}
        shards = (tuple(parts)
                  | 'ByShard' >> GroupInScratch(self._scratch, 'notice', self._shards)
                  | 'Rows' >> beam.Map(lambda kv: notice_table(
                      kv[1], categories, t.acquirer, t.acquirer_contact)))
        notice_dir = join(self._config.notice.path, self._run.run_id)
        files = (shards
                 | 'Tables' >> beam.FlatMap(lambda r: [r[0]] if r[0].num_rows else [])
                 | 'Write' >> WriteEncryptedFiles(notice_dir, self._run.run_id, 'notice',
                                                  'customers', EncryptedParquet(keys)))
        counts = shards | 'Counts' >> beam.Map(lambda r: r[1]) | 'AllCounts' >> \
            beam.combiners.ToList()
        return (files.pipeline
                | 'Once' >> beam.Create([None])
                | 'Summary' >> beam.Map(_write_summary, notice_dir, self._run,
                                        beam.pvalue.AsList(files),
                                        beam.pvalue.AsSingleton(counts)))


def _write_summary(_, notice_dir, run, files, counts):
    """``notice.json`` next to the list, sealed: its counts and files (size, crc32c); returns
    the counts, which the run's manifest takes (no customer id)."""
    run_id = run.run_id
    from transforms.commit.manifest import relative_path
    summary = _merge_counts(counts)
    listed = []
    for path in sorted(files):
        checksum, size = google_crc32c.Checksum(), 0
        with FileSystems.open(path) as f:  # a chunk at a time: a list may be GBs
            for chunk in iter(lambda: f.read(_CHUNK), b''):
                checksum.update(chunk)
                size += len(chunk)
        listed.append({'path': relative_path(notice_dir, path), 'bytes': size,
                       'crc32c': checksum.digest().hex()})
    write_sealed_json(notice_dir, NOTICE_FILE,
                      {'run_id': run_id, 'key_role': 'notice',
                       'format': 'Parquet in Tink streaming AEAD AES256_GCM_HKDF_1MB (notice)',
                       **summary, 'files': listed},
                      run.keys_path, file_identity(run_id, NOTICE_FILE))
    return {k: v for k, v in summary.items() if k != 'rows'}
