"""The audit log: a hash chain that any edit, removal or reordering breaks, written by runs,
reviews, sign-offs, replays and key rotations, and checked against the manifests."""

import json
import os
import threading

import pytest

from pipelines.cli import main
from transforms.common.errors import NovationError
from transforms.commit.audit import AUDIT_DIR, append_event, read_log, verify_log


def _log(tmp_path, n=4):
    out = str(tmp_path / 'out')
    for i in range(n):
        append_event(out, 'reviewed', run_id=f'r{i}', decision='hold', dead_letters=i, by='A')
    return out


def _record_path(out, seq):
    return os.path.join(out, AUDIT_DIR, f'{seq:08d}.json')


def test_an_intact_chain_verifies(tmp_path):
    out = _log(tmp_path)
    records = read_log(out)
    assert [r['seq'] for r in records] == [1, 2, 3, 4]
    assert records[0]['prev_sha256'] is None
    assert all(b['prev_sha256'] == a['sha256'] for a, b in zip(records, records[1:]))
    assert verify_log(out)['problems'] == []


@pytest.mark.parametrize('tamper, expected', [
    (lambda out: _edit(out, 2, dead_letters=99), 'record 2 (reviewed): its content does not match'),
    (lambda out: _edit(out, 2, dead_letters=99, rehash=True),
     'record 3: does not follow the record before it'),
    (lambda out: os.remove(_record_path(out, 2)), 'expected number 2'),
    (lambda out: _swap(out, 2, 3), 'does not follow the record before it'),
    (lambda out: open(_record_path(out, 3), 'w').write('{'), 'is not valid JSON'),
    (lambda out: open(_record_path(out, 3), 'w').write('[1, 2]'), 'is not a JSON object'),
    (lambda out: append_event(out, 'run_committed', manifest_sha256='0' * 64),
     'record 5 (run_committed): names no run'),
])
def test_any_change_to_the_log_breaks_it(tmp_path, tamper, expected):
    out = _log(tmp_path)
    tamper(out)
    problems = verify_log(out)['problems']
    assert any(expected in p for p in problems), problems


def _edit(out, seq, rehash=False, **changes):
    from transforms.commit.audit import record_sha256
    path = _record_path(out, seq)
    record = json.load(open(path, encoding='utf-8'))
    record.update(changes)
    if rehash:
        record['sha256'] = record_sha256(record)
    json.dump(record, open(path, 'w', encoding='utf-8'))


def _swap(out, a, b):
    pa_, pb = _record_path(out, a), _record_path(out, b)
    da, db = open(pa_).read(), open(pb).read()
    open(pa_, 'w').write(db)
    open(pb, 'w').write(da)


def test_writers_appending_at_once_keep_one_chain(tmp_path):
    out = str(tmp_path / 'out')
    threads = [threading.Thread(target=lambda i=i: [append_event(
        out, 'reviewed', run_id=f'w{i}', n=j) for j in range(10)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_log(out)) == 40
    assert verify_log(out)['problems'] == []


@pytest.mark.slow
def test_runs_reviews_and_signoffs_are_recorded_and_checked_against_manifests(demo_copy,
                                                                              capsys):
    workdir, config, _ = demo_copy
    out, keys = os.path.join(workdir, 'out'), os.path.join(workdir, 'keys')
    assert main(['run', '--config', config, '--run-id', 'audited']) == 0
    run_dir = os.path.join(out, 'audited')
    assert main(['review', run_dir, '--keys', keys, '--reason', 'malformed', '--decide', 'hold',
                 '--by', 'Officer Wang', '--note', 'call the seller: 张三 13812345678']) == 0
    assert main(['signoff', run_dir, '--keys', keys, '--by', 'Officer Wang']) == 0
    assert main(['keys', 'rotate', keys, '--audit', out]) == 0
    capsys.readouterr()
    events = [r['event'] for r in read_log(out)]
    assert events == ['run_started', 'run_committed', 'reviewed', 'signed_off', 'keys_rotated']
    text = ''.join(open(os.path.join(out, AUDIT_DIR, f)).read()
                   for f in os.listdir(os.path.join(out, AUDIT_DIR)))
    assert '13812345678' not in text and '张三' not in text  # the note stays out of the log
    manifest = json.load(open(os.path.join(run_dir, 'manifest.json'), encoding='utf-8'))
    assert manifest['audit_started_sha256'] == read_log(out)[0]['sha256']
    assert main(['audit', 'verify', out]) == 0
    assert 'intact (5 records' in capsys.readouterr().out
    # a changed manifest, and a log cut back to before the run, are both found
    path = os.path.join(run_dir, 'manifest.json')
    original = open(path, 'rb').read()
    open(path, 'wb').write(original.replace(b'"rows_read"', b'"rows_read" ', 1))
    assert main(['audit', 'verify', out]) == 1
    assert 'manifest.json is not the one recorded' in capsys.readouterr().out
    open(path, 'wb').write(original)
    for seq in range(1, 6):
        os.remove(_record_path(out, seq))
    problems = verify_log(out)['problems']
    assert 'run audited: has a manifest.json but no record of it in the log' in problems
    assert 'run audited: the record of its start is missing from the log' in problems


def test_an_aborted_run_is_recorded(tmp_path):
    out = str(tmp_path / 'out')
    append_event(out, 'run_started', run_id='x')
    append_event(out, 'run_aborted', run_id='x', why='table t: 3 of 10 rows are malformed')
    assert [r['event'] for r in read_log(out)] == ['run_started', 'run_aborted']


def test_sealed_records_anchor_the_chain_under_the_manifest_key(tmp_path, keys_dir):
    """A record written with the manifest key's private half is sealed; with the chain
    recomputed after an edit the seal fails, and records after the newest seal are named."""
    from transforms.keys.keyring import load_keyring
    from transforms.keys.admin import share_keyring
    from transforms.commit.audit import record_sha256
    out = str(tmp_path / 'out')
    append_event(out, 'run_started', keys=keys_dir, run_id='r1')
    append_event(out, 'reviewed', keys=keys_dir, run_id='r1', decision='hold', by='A')
    shared = share_keyring(keys_dir, str(tmp_path / 'shared'), ['deadletter']).path
    append_event(out, 'signed_off', keys=shared, run_id='r1', by='B')  # no private half
    assert [('seal' in r) for r in read_log(out)] == [True, True, False]
    public = load_keyring(shared, warn=False)
    result = verify_log(out, public)
    assert result['problems'] == [] and result['anchored'] == 2
    assert result['unanchored'] == ['signed_off']
    # an edited sealed record, with the chain recomputed from it on
    path = _record_path(out, 1)
    record = json.load(open(path, encoding='utf-8'))
    record['run_id'] = 'r0'
    record['sha256'] = record_sha256(record)
    json.dump(record, open(path, 'w', encoding='utf-8'))
    for seq in (2, 3):
        following = json.load(open(_record_path(out, seq), encoding='utf-8'))
        following['prev_sha256'] = record['sha256']
        following['sha256'] = record_sha256(following)
        json.dump(following, open(_record_path(out, seq), 'w', encoding='utf-8'))
        record = following
    assert verify_log(out)['problems'] == []  # without the key the chain looks whole
    problems = verify_log(out, public)['problems']
    assert problems == ['record 1 (run_started): its seal does not match (edited, or sealed '
                        'with another keyring\'s manifest key)',
                        'record 2 (reviewed): its seal does not match (edited, or sealed with '
                        'another keyring\'s manifest key)']


def test_audit_verify_with_keys_says_how_far_the_seals_reach(tmp_path, keys_dir, capsys):
    out = str(tmp_path / 'out')
    append_event(out, 'run_started', keys=keys_dir, run_id='r1')
    append_event(out, 'cleaned', runs=[], removed=0, bytes=0)
    assert main(['audit', 'verify', out, '--keys', keys_dir]) == 0
    text = capsys.readouterr().out
    assert 'sealed under the manifest key up to record 1' in text and '(cleaned)' in text
    assert main(['audit', 'verify', out]) == 0
    assert 'seals not checked' in capsys.readouterr().out


def test_a_second_cut_over_of_one_stream_is_a_break(tmp_path):
    out = str(tmp_path / 'out')
    append_event(out, 'stream_started', stream_id='s1')
    append_event(out, 'stream_cut_over', stream_id='s1', cutover_sha256='0' * 64, epochs=1)
    append_event(out, 'stream_cut_over', stream_id='s1', cutover_sha256='1' * 64, epochs=2)
    assert 'record 3: stream s1 cut over a second time (a cut-over is final)' in \
        verify_log(out)['problems']


def test_a_new_stream_must_say_what_it_is_to_one_over_the_same_changes(tmp_path):
    from pipelines.stream import check_stream_link
    out = str(tmp_path / 'out')
    append_event(out, 'stream_started', stream_id='s1', snapshot_run_id='r1',
                 config_sha256='c')
    check_stream_link(out, 's2', 'r2', 'c')  # another snapshot: nothing in common
    with pytest.raises(NovationError, match='stream.s. s1 already carry the changes after '
                                            'snapshot r1'):
        check_stream_link(out, 's2', 'r1', 'c')
    with pytest.raises(NovationError, match='has not cut over; resume it'):
        check_stream_link(out, 's2', 'r1', 'c', continues='s1')
    check_stream_link(out, 's2', 'r1', 'c', replaces='s1')
    append_event(out, 'stream_cut_over', stream_id='s1', cutover_sha256='0' * 64, epochs=1)
    check_stream_link(out, 's2', 'r1', 'c', continues='s1')
    append_event(out, 'stream_started', stream_id='s3', config_sha256='c')
    with pytest.raises(NovationError, match='after the same config and feeds'):
        check_stream_link(out, 's4', None, 'c')


def _epoch(out, stream, number, text):
    import hashlib
    directory = os.path.join(out, stream, 'epochs', f'{number:06d}')
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, 'manifest.json'), 'w').write(text)
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize('tamper, expected', [
    (lambda out: __import__('shutil').rmtree(os.path.join(out, 's1', 'epochs', '000002')),
     'stream s1: epoch 2 is gone (the log records its commit)'),
    (lambda out: _epoch(out, 's1', 2, '{"epoch": 2, "other": true}'),
     'stream s1: epoch 2 is not the one recorded (replaced or changed)'),
    (lambda out: _epoch(out, 's1', 3, '{"epoch": 3}'),
     'stream s1: epoch 3 is not in the log (added)'),
])
def test_epochs_deleted_replaced_or_added_break_the_log(tmp_path, tamper, expected):
    out = str(tmp_path / 'out')
    append_event(out, 'stream_started', stream_id='s1')
    for n in (1, 2):
        append_event(out, 'epoch_committed', stream_id='s1', epoch=n,
                     manifest_sha256=_epoch(out, 's1', n, f'{{"epoch": {n}}}'))
    assert verify_log(out)['problems'] == []
    tamper(out)
    assert expected in verify_log(out)['problems']


def test_a_restart_goes_on_only_from_the_epochs_the_log_records(tmp_path):
    from pipelines.stream import check_last_epoch
    from transforms.stream.chain import Committed
    out = str(tmp_path / 'out')
    shas = {n: _epoch(out, 's1', n, f'{{"epoch": {n}}}') for n in (1, 2)}
    for n, sha in shas.items():
        append_event(out, 'epoch_committed', stream_id='s1', epoch=n, manifest_sha256=sha)
    check_last_epoch(out, 'S', 's1', Committed(2, shas[2], frozenset(), frozenset()))
    with pytest.raises(NovationError, match='epoch 2 was committed .* and is gone'):
        check_last_epoch(out, 'S', 's1', Committed(1, shas[1], frozenset(), frozenset()))
    with pytest.raises(NovationError, match='epoch 2 is not the one the audit log records'):
        check_last_epoch(out, 'S', 's1', Committed(2, '0' * 64, frozenset(), frozenset()))


def test_an_epoch_whose_record_a_kill_cut_off_is_recorded_on_restart(tmp_path):
    from pipelines.stream import check_last_epoch
    from transforms.stream.chain import Committed
    out = str(tmp_path / 'out')
    first = _epoch(out, 's1', 1, '{"epoch": 1}')
    append_event(out, 'epoch_committed', stream_id='s1', epoch=1, manifest_sha256=first)
    second = _epoch(out, 's1', 2, '{"epoch": 2}')  # sealed and chained, then killed
    assert 'stream s1: epoch 2 is not in the log (added)' in verify_log(out)['problems']
    check_last_epoch(out, 'S', 's1', Committed(2, second, frozenset(), frozenset()))
    assert read_log(out)[-1]['recorded_on_restart'] is True
    assert verify_log(out)['problems'] == []
