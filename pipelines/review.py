"""Compliance review of a run's dead letters: ``novation review`` and ``novation signoff``.

``novation review RUN_DIR --keys DIR [filters]`` decrypts the dead letters (with the
``deadletter`` key only) and shows those the filters select as a table in the terminal, or
writes them as CSV or JSON Lines for the operator's own tools. With ``--decide replay|discard|
hold`` it records a decision for that group (a reason, a table, a field, a source file) in the
run's ``review.json``: who, when, the note, and how many dead letters it covers. ``novation
signoff RUN_DIR --by NAME`` records a sign-off with the time and the sha256 of the run's
manifest and config. An erased customer's dead letter never has a raw row (none was kept), so
no filter can show one.

A stream (``OUT/<stream id>``) is reviewed alike: its dead letters are those of every epoch,
each with its ``epoch`` (a filter too), its review file is the stream's own ``review.json``,
and a sign-off covers its cut-over (the sha256 of ``cutover.json``) or, while it runs, the
epochs so far (the sha256 of the last epoch's manifest, which the chain ties to the others).
"""

import csv
import datetime
import hashlib
import io
import json
import os
import posixpath
import unicodedata
from typing import Dict, List, Optional

from pipelines.decrypt import (is_stream, load_manifest, read_deadletters, read_stream_table,
                               stream_epochs)
from transforms.commit.audit import append_event
from transforms.common.errors import NovationError
from transforms.common.files import exists, join, read_bytes, write_json
from transforms.commit.manifest import MANIFEST_FILE

__all__ = ['DECISIONS', 'REVIEW_FILE', 'decide', 'format_table', 'load_review', 'matches',
           'replay_decisions', 'reviewed', 'save_review', 'select', 'signoff']

REVIEW_FILE = 'review.json'
DECISIONS = ('replay', 'discard', 'hold')
FILTERS = ('table', 'reason', 'field', 'source_file', 'epoch')
COLUMNS = ('table', 'source_file', 'row', 'reason', 'field', 'problem', 'value', 'subject_id')
STREAM_COLUMNS = ('epoch',) + COLUMNS


def select(run_dir: str, keys: str, group: Dict[str, Optional[str]]) -> List[dict]:
    """The dead letters of ``run_dir`` (a batch run or a stream) that match ``group`` (None:
    any), decrypted; each with ``value``, the raw value of its field (None when none was
    kept)."""
    stream = is_stream(run_dir)
    if stream:
        known = sorted({name for m in stream_epochs(run_dir, keys, group.get('epoch'))
                        for name in m['tables']})

        def read(name):
            return read_stream_table(run_dir, keys=keys, table=name, deadletter=True,
                                     epoch=group.get('epoch'))[0]
    else:
        if group.get('epoch') is not None:
            raise NovationError(f'--epoch: {run_dir} is a batch run; --epoch selects a '
                                f'stream\'s epoch')
        known = list(load_manifest(run_dir, keys)['tables'])

        def read(name):
            return read_deadletters(run_dir, keys=keys, table=name)
    tables = [group['table']] if group.get('table') else known
    for name in tables:
        if name not in known:
            raise NovationError(f'--table {name}: not a table of this '
                                f'{"stream" if stream else "run"}; tables: '
                                f'{", ".join(known) or "none with changes yet"}')
    out = []
    for name in tables:
        for record in read(name):
            if matches(record, group):
                raw = record.get('raw')
                value = raw.get(record['field']) if isinstance(raw, dict) and \
                    record.get('field') in raw else None
                out.append({**record, 'value': value})
    return out


def matches(record: dict, group: Dict[str, Optional[str]]) -> bool:
    """Whether a dead letter belongs to ``group`` (a filter left None matches any); a source
    file matches by its name, as the report shows it, or by its whole path."""
    for key in FILTERS:
        wanted, value = group.get(key), record.get(key)
        if wanted is None or value == wanted:
            continue
        if key != 'source_file' or os.path.basename(value or '') != wanted:
            return False
    return True


def format_table(records: List[dict], limit: int = 50) -> str:
    """The records as a plain text table for the terminal (the first ``limit``); a stream's
    with their epoch first."""
    columns = STREAM_COLUMNS if any('epoch' in r for r in records) else COLUMNS
    rows = [[_cell(k, r.get(k)) for k in columns] for r in records[:limit]]
    widths = [min(40, max([len(c)] + [display_width(row[i]) for row in rows]))
              for i, c in enumerate(columns)]
    lines = ['  '.join(display_pad(c, w) for c, w in zip(columns, widths))]
    lines += ['  '.join(display_pad(cell, w) for cell, w in zip(row, widths)) for row in rows]
    if len(records) > limit:
        lines.append(f'... and {len(records) - limit:,} more (--out FILE writes them all)')
    return '\n'.join(lines)


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in 'WF' else 1 for c in text)


def display_pad(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal columns, then padded to it."""
    out, used = '', 0
    for c in text:
        w = display_width(c)
        if used + w > width:
            break
        out, used = out + c, used + w
    return out + ' ' * (width - used)


def _cell(key, value) -> str:
    if key == 'source_file' and value:
        return os.path.basename(value)
    if key == 'value' and value is None:
        return '(not kept)'
    return '' if value is None else str(value)


def write_records(records: List[dict], out: str) -> None:
    """The records as CSV (``raw`` as JSON text) or JSON Lines, by ``out``'s extension."""
    if out.endswith('.jsonl'):
        data = ''.join(json.dumps(r, ensure_ascii=False, default=str) + '\n' for r in records)
    elif out.endswith('.csv'):
        buffer = io.StringIO()
        columns = STREAM_COLUMNS if any('epoch' in r for r in records) else COLUMNS
        writer = csv.DictWriter(buffer, fieldnames=list(columns) + ['stage', 'raw'],
                                extrasaction='ignore')
        writer.writeheader()
        for r in records:
            writer.writerow({**r, 'raw': None if r.get('raw') is None else
                             json.dumps(r['raw'], ensure_ascii=False, default=str)})
        data = buffer.getvalue()
    else:
        raise NovationError(f'--out {out}: the extension must be .csv or .jsonl')
    with open(out, 'w', encoding='utf-8', newline='') as f:
        f.write(data)


def load_review(run_dir: str, run_id: str) -> dict:
    """The run's review file (a new, empty one for run ``run_id`` if it has none)."""
    path = join(run_dir, REVIEW_FILE)
    if not exists(path):
        return {'format': 'novation-review/1', 'run_id': run_id,
                'decisions': [], 'signoffs': []}
    try:
        return json.loads(read_bytes(path, what='review file').decode('utf-8'))
    except ValueError:
        raise NovationError(f'{path} is not a review file (not JSON)') from None


def save_review(run_dir: str, review: dict) -> None:
    write_json(run_dir, REVIEW_FILE, review)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def decide(run_dir: str, keys: str, group: Dict[str, Optional[str]], decision: str, *,
           by: str, note: Optional[str] = None) -> dict:
    """Record ``decision`` for the dead letters ``group`` selects; returns the entry.

    A later decision on the same group replaces the earlier one (the file keeps both, the
    earlier marked as replaced), so the review shows who changed what and when."""
    if decision not in DECISIONS:
        raise NovationError(f'--decide {decision!r}: allowed: {", ".join(DECISIONS)}')
    if decision == 'discard' and not (note or '').strip():
        raise NovationError('--decide discard needs a --note saying why the dead letters are '
                            'discarded')
    if not by.strip():
        raise NovationError('--by: give the name of who decides')
    records = select(run_dir, keys, group)
    if not records:
        raise NovationError('no dead letter matches these filters: nothing to decide')
    run_id = reviewed(run_dir, keys)['run_id']
    review = load_review(run_dir, run_id)
    # a decision's group names every filter (an epoch only when one was given, so a batch
    # run's review reads as before)
    key = {k: group.get(k) for k in FILTERS if k != 'epoch' or group.get(k) is not None}
    for entry in review['decisions']:
        if entry['group'] == key and entry.get('replaced_at') is None:
            entry['replaced_at'] = _now()
    entry = {'group': key, 'decision': decision, 'note': note, 'by': by, 'at': _now(),
             'dead_letters': len(records), 'replaced_at': None}
    review['decisions'].append(entry)
    save_review(run_dir, review)
    append_event(output_root(run_dir), 'reviewed', keys=keys, run_id=run_id,
                 decision=decision, group=key, dead_letters=len(records), by=by,
                 with_note=bool(note))  # the note is free text: not copied into the log
    return entry


def reviewed(run_dir: str, keys: str) -> dict:
    """What a review and a sign-off of ``run_dir`` are made on, its seals checked: the run id,
    the sha256 of the record that vouches for the whole (a batch run's manifest; a stream's
    cutover.json, or its last epoch's manifest while it runs), the config's sha256, and for a
    stream how many epochs it covers."""
    if not is_stream(run_dir):
        manifest = load_manifest(run_dir, keys)
        return {'run_id': manifest['run_id'], 'config_sha256': manifest['config_sha256'],
                'manifest_sha256': hashlib.sha256(read_bytes(
                    join(run_dir, MANIFEST_FILE), what='manifest')).hexdigest()}
    from transforms.stream.chain import CUTOVER_FILE, EPOCH_MANIFEST, epoch_dir
    manifests = stream_epochs(run_dir, keys)  # every seal, the chain and the cut-over checked
    if not manifests:
        raise NovationError(f'{run_dir}: the stream has committed no epoch yet: nothing to '
                            f'review')
    last = manifests[-1]
    cut_over = exists(join(run_dir, CUTOVER_FILE))
    vouching = join(run_dir, CUTOVER_FILE) if cut_over else \
        join(epoch_dir(run_dir, last['epoch']), EPOCH_MANIFEST)
    return {'run_id': last['run_id'], 'config_sha256': last.get('config_sha256'),
            'manifest_sha256': hashlib.sha256(read_bytes(vouching, what='manifest')).hexdigest(),
            'epochs': len(manifests), 'cut_over': cut_over}


def replay_decisions(run_dir: str, review: dict, only=None) -> list:
    """The replay decisions in force in ``review`` as (number, decision), 1 the first (or
    those numbered ``only``); raises NovationError when there is none."""
    in_force = [(n, d) for n, d in enumerate(review['decisions'], 1)
                if d.get('replaced_at') is None and d['decision'] == 'replay']
    if only:
        unknown = sorted(set(only) - {n for n, _ in in_force})
        if unknown:
            raise NovationError(f'--only {",".join(map(str, unknown))}: not a replay decision '
                                f'in force in {run_dir}/{REVIEW_FILE}')
        in_force = [(n, d) for n, d in in_force if n in only]
    if not in_force:
        raise NovationError(f'{run_dir}: no dead letters are marked for replay (novation '
                            f'review --decide replay)')
    return in_force


def signoff(run_dir: str, *, keys: str, by: str) -> dict:
    """Record a sign-off of the review of a run or a stream: who, when, the sha256 of the
    record it was made on (``reviewed``) and the config's (as the manifest records it: the
    config and its schemas)."""
    if not by.strip():
        raise NovationError('--by: give the name of who signs off')
    facts = reviewed(run_dir, keys)  # the seals checked: a sign-off of the real record
    review = load_review(run_dir, facts['run_id'])
    entry = {'by': by, 'at': _now(), 'manifest_sha256': facts['manifest_sha256'],
             'config_sha256': facts['config_sha256'],
             'decisions': sum(1 for d in review['decisions'] if d.get('replaced_at') is None)}
    if 'epochs' in facts:  # a stream: what the sign-off covers
        entry.update(epochs=facts['epochs'], cut_over=facts['cut_over'])
    review['signoffs'].append(entry)
    save_review(run_dir, review)
    append_event(output_root(run_dir), 'signed_off', keys=keys, run_id=facts['run_id'],
                 by=by, manifest_sha256=entry['manifest_sha256'],
                 decisions=entry['decisions'],
                 **({'epochs': facts['epochs']} if 'epochs' in facts else {}))
    return entry


def output_root(run_dir: str) -> str:
    """The output root a run directory is in: where its audit log is."""
    return posixpath.dirname(run_dir.rstrip('/')) or '.'
