"""The audit log: an append-only, hash-chained record of what was done, in the output root.

One JSON file per event under ``OUT/audit/`` (``00000001.json``, ...), each holding the sha256
of the one before (``prev_sha256``) and its own (``sha256``, over its canonical JSON without
that key). Events: a run started (config and plan hashes, key ids), committed (the manifest's
sha256), aborted; a review decision, a sign-off, a replay; keys rotated; leftovers cleaned; a stream
started (config and plan hashes, key ids, the snapshot it continues), cut over (the sha256 of its
cut-over manifest, which names every epoch's) or aborted; each epoch a stream commits (the sha256 of
its manifest). Editing, removing or reordering a record breaks the chain; a run's manifest (and a
stream's epoch and cut-over manifests) name the record of its start, so removing the newest records
shows too. No personal data: ids, hashes, counts and the names of the staff who decided.

One file per record, because object stores (gs://) cannot append; a local record is created
exclusively, so two runs appending at once take different numbers (on gs:// two writers in the
same instant could still both take one: the check would then report the fork).
"""

import base64
import datetime
import hashlib
import itertools
import json
import os
import random
import secrets
import time

from transforms.common.errors import NovationError
from transforms.common.files import filesystems, has_scheme, join, read_bytes

__all__ = ['AUDIT_DIR', 'append_event', 'read_log', 'record_sha256', 'recorded_epochs',
           'verify_log']

AUDIT_DIR = 'audit'
EVENTS = ('run_started', 'run_committed', 'run_aborted', 'reviewed', 'signed_off', 'replayed',
          'keys_rotated', 'cleaned', 'stream_started', 'epoch_committed', 'stream_cut_over',
          'stream_aborted', 'backfill_landed')
_PATIENCE = 60.0  # seconds a writer keeps trying for the next number before giving up


def canonical(record: dict) -> bytes:
    body = {k: v for k, v in record.items() if k not in ('sha256', 'seal')}
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(',', ':')).encode()


def record_sha256(record: dict) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def _name(seq: int) -> str:
    return f'{seq:08d}.json'


def read_log(out_dir: str) -> list:
    """Every record of the log, in file order (their numbers)."""
    pattern = join(out_dir, AUDIT_DIR, '*.json')
    paths = sorted(m.path for m in filesystems().match([pattern])[0].metadata_list)
    records = []
    for path in paths:
        try:
            records.append(json.loads(read_bytes(path, what='audit record').decode('utf-8')))
        except (ValueError, UnicodeDecodeError):
            records.append({'unreadable': os.path.basename(path)})
    return records


_SEAL_FORMAT = 'novation-audit/1'


def _sealed(record: dict) -> bytes:
    return f'{_SEAL_FORMAT}\n{record["sha256"]}'.encode('utf-8')


def _signer(keys):
    """The manifest key's signer of the keyring at ``keys`` and its key id, or None: a shared
    keyring holds only the public half, and its records are not sealed."""
    if not keys:
        return None
    from transforms.keys.keyring import cached_keyring
    from transforms.keys.seal import SEAL_ROLE
    from tink import signature
    try:
        keyring = cached_keyring(keys, (SEAL_ROLE,))
        if not keyring.can_sign(SEAL_ROLE):
            return None
        return (keyring.primitive(SEAL_ROLE, signature.PublicKeySign),
                keyring.key_ids()[SEAL_ROLE]['primary'])
    except NovationError:
        return None


def append_event(out_dir: str, event: str, *, keys: str = None, **facts) -> dict:
    """Append one record to the log in ``out_dir``; returns it (with its sha256). With
    ``keys`` (a keyring holding the manifest key's private half) the record is sealed: its
    sha256, which covers the chain before it, is signed, so no earlier record can be edited
    and the chain recomputed without the key."""
    assert event in EVENTS, event
    signer = _signer(keys)
    deadline = time.monotonic() + _PATIENCE
    for attempt in itertools.count():
        if attempt and time.monotonic() > deadline:
            break
        if attempt:  # lost a race for the number: let the others finish before reading again
            time.sleep(random.uniform(0, min(0.05, 0.002 * attempt)))
        log = read_log(out_dir)
        last = log[-1] if log else None
        seq = (last.get('seq', len(log)) if last else 0) + 1
        record = {'seq': seq, 'at': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'), 'event': event, **facts,
            'prev_sha256': last.get('sha256') if last else None}
        record['sha256'] = record_sha256(record)
        if signer is not None:
            sign, key_id = signer
            record['seal'] = {'key_id': key_id, 'signature': base64.b64encode(
                sign.sign(_sealed(record))).decode('ascii')}
        data = json.dumps(record, ensure_ascii=False, indent=1).encode('utf-8') + b'\n'
        if _create(join(out_dir, AUDIT_DIR), _name(seq), data):
            return record
    raise NovationError(f'cannot append to the audit log in {out_dir}: other writers took '
                        f'its next numbers for {_PATIENCE:.0f} s')


def _create(directory: str, name: str, data: bytes) -> bool:
    """Create ``directory/name`` holding ``data``, unless it exists; False if it does."""
    path = join(directory, name)
    if not has_scheme(directory):
        # written whole under another name, then linked into place: a reader never sees half
        # a record, and the link fails if another writer took the number
        os.makedirs(directory, exist_ok=True)
        temp = f'{path}.{secrets.token_hex(6)}.tmp'
        with open(temp, 'xb') as f:
            f.write(data)
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        finally:
            os.remove(temp)
        return True
    if filesystems().exists(path):
        return False
    with filesystems().create(path) as f:
        f.write(data)
    return True


def verify_log(out_dir: str, keyring=None) -> dict:
    """Check the chain, every committed run's manifest and every stream's cut-over manifest
    against it; with ``keyring`` (the public half of the manifest key suffices), every seal.

    Returns {'records', 'runs', 'streams', 'problems': [...], 'anchored': the number of the
    newest sealed record (0: none; None: seals not checked), 'unanchored': the events after
    it}; no problem means the log is intact.
    """
    log = read_log(out_dir)
    problems = []
    anchored = None if keyring is None else 0
    prev = None
    started, committed, cut_over, epochs = {}, {}, {}, {}
    for i, record in enumerate(log, 1):
        if not isinstance(record, dict):
            problems.append(f'record {i} is not a JSON object')
            prev = None
            continue
        if 'unreadable' in record:
            problems.append(f'record {record["unreadable"]} is not valid JSON')
            prev = None
            continue
        where = f'record {record.get("seq", "?")}'
        if record.get('seq') != i:
            problems.append(f'{where}: expected number {i} (a record was removed or added)')
        if record.get('sha256') != record_sha256(record):
            problems.append(f'{where} ({record.get("event")}): its content does not match its '
                            f'sha256 (edited)')
        if record.get('prev_sha256') != prev:
            problems.append(f'{where}: does not follow the record before it (the chain is '
                            f'broken)')
        prev = record.get('sha256')
        if keyring is not None and 'seal' in record:
            if _seal_holds(keyring, record):
                anchored = i
            else:
                problems.append(f'{where} ({record.get("event")}): its seal does not match '
                                f'(edited, or sealed with another keyring\'s manifest key)')
        named = record.get('run_id') or record.get('stream_id')
        if record.get('event') in _NAMES_A_RUN and not isinstance(named, str):
            problems.append(f'{where} ({record.get("event")}): names no run')
            continue
        if record.get('event') in ('run_started', 'stream_started'):
            started[record.get('sha256')] = record.get('run_id') or record.get('stream_id')
        if record.get('event') == 'run_committed':
            committed[record.get('run_id')] = record.get('manifest_sha256')
        if record.get('event') == 'epoch_committed':
            epochs.setdefault(record.get('stream_id'), {})[record.get('epoch')] = \
                record.get('manifest_sha256')
        if record.get('event') == 'stream_cut_over':  # a cut-over is final: one a stream
            if record.get('stream_id') in cut_over:
                problems.append(f'{where}: stream {record.get("stream_id")} cut over a second '
                                f'time (a cut-over is final)')
            cut_over[record.get('stream_id')] = record.get('cutover_sha256')
    problems += _check_recorded(out_dir, committed, started, 'manifest.json', 'run')
    problems += _check_recorded(out_dir, cut_over, started, 'cutover.json', 'stream')
    problems += _check_epochs(out_dir, epochs)
    unanchored = [] if anchored is None else [
        r.get('event', '?') if isinstance(r, dict) else '?' for r in log[anchored:]]
    return {'records': len(log), 'runs': len(committed), 'streams': len(cut_over),
            'problems': problems, 'anchored': anchored, 'unanchored': unanchored}


def _seal_holds(keyring, record) -> bool:
    from transforms.keys.seal import SEAL_ROLE
    seal = record.get('seal')
    try:
        signed = base64.b64decode(seal['signature'], validate=True)
        keyring.primitive(SEAL_ROLE).verify(signed, _sealed(record))
        return record.get('sha256') == record_sha256(record)
    except Exception:  # noqa: BLE001 - a malformed seal or a failed check: not a seal
        return False


def recorded_epochs(out_dir: str, stream_id: str) -> dict:
    """{epoch number: its manifest's sha256} of a stream, as the log records their commits."""
    return {r.get('epoch'): r.get('manifest_sha256') for r in read_log(out_dir)
            if isinstance(r, dict) and r.get('event') == 'epoch_committed'
            and r.get('stream_id') == stream_id}


def _check_epochs(out_dir, recorded) -> list:
    """Each recorded epoch of each stream is there, unchanged, and no other epoch is (for
    streams whose epochs the log records)."""
    problems = []
    for stream, numbers in sorted(recorded.items(), key=lambda kv: str(kv[0])):
        for number, sha256 in sorted(numbers.items(), key=lambda kv: str(kv[0])):
            path = join(out_dir, str(stream), 'epochs', f'{number:06d}', 'manifest.json') \
                if isinstance(number, int) else None
            if path is None or not filesystems().exists(path):
                problems.append(f'stream {stream}: epoch {number} is gone (the log records '
                                f'its commit)')
            elif hashlib.sha256(read_bytes(path, what='epoch manifest')).hexdigest() != sha256:
                problems.append(f'stream {stream}: epoch {number} is not the one recorded '
                                f'(replaced or changed)')
        on_disk = filesystems().match([join(out_dir, str(stream), 'epochs', '*',
                                          'manifest.json')])[0].metadata_list
        for m in on_disk:
            name = m.path.replace('\\', '/').rstrip('/').split('/')[-2]
            if name.isdigit() and int(name) not in numbers:
                problems.append(f'stream {stream}: epoch {int(name)} is not in the log (added)')
    return problems


_NAMES_A_RUN = ('run_started', 'run_committed', 'run_aborted', 'stream_started',
                'epoch_committed', 'stream_cut_over')


def _check_recorded(out_dir, recorded, started, name, what) -> list:
    """Problems of the ``name`` files (manifest.json of runs, cutover.json of streams) in
    ``out_dir``: each recorded one must be there unchanged (``recorded``: id -> sha256), each
    one there must be recorded, and the record of its start must be in the log."""
    problems = []
    for run_id, sha256 in sorted(recorded.items()):
        path = join(out_dir, run_id, name)
        if not filesystems().exists(path):
            problems.append(f'{what} {run_id}: its {name} is gone')
        elif hashlib.sha256(read_bytes(path, what=name)).hexdigest() != sha256:
            problems.append(f'{what} {run_id}: {name} is not the one recorded (changed)')
    for m in filesystems().match([join(out_dir, '*', name)])[0].metadata_list:
        run_id = m.path.replace('\\', '/').rstrip('/').split('/')[-2]
        try:
            doc = json.loads(read_bytes(m.path, what=name).decode('utf-8'))
        except (ValueError, UnicodeDecodeError):
            problems.append(f'{what} {run_id}: {name} is not valid JSON')
            continue
        if run_id not in recorded:
            problems.append(f'{what} {run_id}: has a {name} but no record of it in the log')
        anchor = doc.get('audit_started_sha256') if isinstance(doc, dict) else None
        if anchor and anchor not in started:
            problems.append(f'{what} {run_id}: the record of its start is missing from the log')
    return problems
