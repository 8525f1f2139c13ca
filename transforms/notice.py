"""The notification list (PIPL Art. 22): for the seller, whom to tell about the transfer.

A seller that transfers personal information in a merger must tell each customer the
recipient's name and contact. The list holds, per customer, by the seller's own customer id:

- moved: the tables and the categories of data that moved about them (a category moved when
  at least one of its values did: a customer without separate consent for sensitive data is
  not told their ID number moved), what each table delivered as their id (its pseudonym, for
  ``novation incident``), and the recipient's name and contact;
- not moved: why (the reasons of their refused records).

Customers who asked for erasure are not listed: they are counted. The list is JSON Lines in
Tink streaming AEAD under the key role ``notice`` and goes to ``notice.path``, on the seller's
side; the acquirer's manifest gets its counts only. Customers are split into shards by a hash of
their id; each shard is grouped with Arrow and written as one element, so the step costs a few
elements per batch, not one per customer.
"""

import json
import zlib

import apache_beam as beam
import google_crc32c
import pyarrow as pa
import pyarrow.compute as pc

from apache_beam.io.filesystems import FileSystems

from transforms.deadletter import EncryptedJsonLines
from transforms.files import join, write_json
from transforms.mask import KeyedBatchFn
from transforms.masking import MaskContext, string_form
from transforms.sink import WriteEncryptedFiles

__all__ = ['NOTICE_FILE', 'NotificationList', 'moved_parts', 'notice_records']

NOTICE_FILE = 'notice.json'
SHARDS = 64
_SEP = '\u241f'


def _shard_of(subjects) -> list:
    return [zlib.crc32(s.encode('utf-8')) % SHARDS for s in subjects]


def moved_parts(batch: pa.RecordBatch, table, keyed_ops) -> pa.Table:
    """(subject, table, delivered id, categories) per customer of a batch about to be masked:
    the categories are those with a value in at least one of the customer's rows."""
    subjects = string_form(batch.column(table.subject_key))
    distinct = pc.unique(subjects)
    rule = table.rule(table.subject_key)
    delivered = rule.operator.apply(distinct, MaskContext(keyed_ops, distinct)) \
        if rule.delivered else pa.nulls(len(distinct), pa.string())
    categories = sorted({r.field.category for r in table.rules
                         if r.delivered and r.field.category})
    columns = {'subject': subjects}
    for category in categories:
        fields = [r.field.name for r in table.rules if r.delivered and r.field.category ==
                  category]
        present = pc.is_valid(batch.column(fields[0]))
        for name in fields[1:]:
            present = pc.or_(present, pc.is_valid(batch.column(name)))
        columns[category] = present
    per_customer = pa.table(columns).group_by('subject', use_threads=False).aggregate(
        [(c, 'any') for c in categories])
    index = pc.index_in(per_customer.column('subject'), value_set=distinct)
    moved = [pc.if_else(per_customer.column(f'{c}_any'), pa.scalar(c),
                        pa.scalar(None, pa.string())) for c in categories]
    labels = (pc.binary_join_element_wise(*moved, _SEP, null_handling='skip') if moved
              else pa.array([''] * per_customer.num_rows))
    return pa.table({'subject': per_customer.column('subject'),
                     'table': pa.array([table.name] * per_customer.num_rows, pa.string()),
                     'delivered_as': pc.take(pc.cast(delivered, pa.string()), index),
                     'categories': labels})


def _by_shard(parts: pa.Table):
    shards = pa.array(_shard_of(parts.column('subject').to_pylist()), pa.int32())
    for shard in pc.unique(shards).to_pylist():
        yield shard, ('moved', parts.filter(pc.equal(shards, shard)))


def _refused(letter, erased):
    """(shard, ('refused', (subject, reason))) of a dead letter that names its customer."""
    if letter.subject is None:
        return
    subject = str(letter.subject)
    reason = 'erasure_requested' if subject in erased else letter.reason
    yield _shard_of([subject])[0], ('refused', (subject, reason, letter.table))


def notice_records(items, recipient: str, contact: str) -> tuple:
    """(JSON lines, counts) of one shard's customers from its ('moved', table) and
    ('refused', (subject, reason, table)) items (pure)."""
    moved, refused = {}, {}
    for kind, value in items:
        if kind == 'moved':
            for row in value.to_pylist():
                tables = moved.setdefault(row['subject'], {})
                entry = tables.setdefault(row['table'], {'categories': set(),
                                                         'delivered_as': row['delivered_as']})
                entry['categories'] |= set(filter(None, row['categories'].split(_SEP)))
        else:
            subject, reason, table = value
            refused.setdefault(subject, {}).setdefault(reason, set()).add(table)
    counts = {'moved': 0, 'not_moved': 0, 'erased_not_listed': 0, 'not_moved_by_reason': {}}
    lines = []
    for subject in sorted(set(moved) | set(refused)):
        reasons = refused.get(subject, {})
        if 'erasure_requested' in reasons:
            counts['erased_not_listed'] += 1
            continue
        record = {'customer_id': subject, 'moved': subject in moved}
        if subject in moved:
            counts['moved'] += 1
            record.update(recipient=recipient, recipient_contact=contact, tables={
                t: {'categories': sorted(e['categories']), 'delivered_as': e['delivered_as']}
                for t, e in sorted(moved[subject].items())})
        else:
            counts['not_moved'] += 1
            for reason in reasons:
                counts['not_moved_by_reason'][reason] = \
                    counts['not_moved_by_reason'].get(reason, 0) + 1
        if reasons:
            record['refused'] = {r: sorted(t) for r, t in sorted(reasons.items())}
        lines.append(json.dumps(record, ensure_ascii=False).encode('utf-8'))
    return lines, counts


def _moved_by_shard(batch, table, keyed_ops):
    if batch.num_rows:
        yield from _by_shard(moved_parts(batch, table, keyed_ops))


def _merge_counts(counts):
    total = {'moved': 0, 'not_moved': 0, 'erased_not_listed': 0, 'not_moved_by_reason': {}}
    for c in counts:
        for key in ('moved', 'not_moved', 'erased_not_listed'):
            total[key] += c[key]
        for reason, n in c['not_moved_by_reason'].items():
            by_reason = total['not_moved_by_reason']
            by_reason[reason] = by_reason.get(reason, 0) + n
    total['not_moved_by_reason'] = dict(sorted(total['not_moved_by_reason'].items()))
    return total


class NotificationList(beam.PTransform):
    """Takes {'admitted TABLE': batches about to be masked, 'refused N': dead letters} and
    the erased subjects (a singleton); writes the encrypted list under
    ``notice.path/<run_id>`` and outputs its summary (counts) once written."""

    def __init__(self, config, run, erased):
        super().__init__()
        self._config = config
        self._run = run
        self._erased = erased

    def expand(self, inputs):
        keys = self._run['keys_path']
        parts = []
        for key, pcoll in sorted(inputs.items()):
            kind, name = key.split(' ', 1)
            if kind == 'admitted':
                parts.append(pcoll | f'Moved[{name}]' >> beam.ParDo(
                    KeyedBatchFn(_moved_by_shard, self._config.table(name), keys)))
            else:
                parts.append(pcoll | f'Refused[{name}]' >> beam.FlatMap(
                    _refused, beam.pvalue.AsSingleton(self._erased)))
        t = self._config.transfer
        shards = (parts
                  | 'AllParts' >> beam.Flatten()
                  | 'ByShard' >> beam.GroupByKey()
                  | 'Records' >> beam.Map(lambda kv: notice_records(kv[1], t.acquirer,
                                                                    t.acquirer_contact)))
        notice_dir = join(self._config.notice.path, self._run['run_id'])
        files = (shards
                 | 'Lines' >> beam.FlatMap(lambda r: [b'\n'.join(r[0])] if r[0] else [])
                 | 'Write' >> WriteEncryptedFiles(notice_dir, self._run['run_id'], 'notice',
                                                  'customers',
                                                  EncryptedJsonLines(keys, role='notice')))
        counts = shards | 'Counts' >> beam.Map(lambda r: r[1]) | 'AllCounts' >> \
            beam.combiners.ToList()
        return (files.pipeline
                | 'Once' >> beam.Create([None])
                | 'Summary' >> beam.Map(_write_summary, notice_dir, self._run['run_id'],
                                        beam.pvalue.AsList(files),
                                        beam.pvalue.AsSingleton(counts)))


def _write_summary(_, notice_dir, run_id, files, counts):
    """``notice.json`` next to the list: its counts and files (size, crc32c); returns the
    counts, which the run's manifest takes (no customer id)."""
    from transforms.manifest import relative_path
    summary = _merge_counts(counts)
    listed = []
    for path in sorted(files):
        with FileSystems.open(path) as f:
            data = f.read()
        listed.append({'path': relative_path(notice_dir, path), 'bytes': len(data),
                       'crc32c': google_crc32c.Checksum(data).digest().hex()})
    write_json(notice_dir, NOTICE_FILE, {'run_id': run_id, 'key_role': 'notice', **summary,
                                         'files': listed})
    return summary
