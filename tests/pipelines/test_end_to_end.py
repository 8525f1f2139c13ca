"""`run(argv)` / `novation` end to end on temporary directories, outputs read back."""

import csv
import decimal
import json
import os
import re
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import DEMO_CUSTOMERS, keyring_without, user_lines, with_manifest_key_of
from pipelines.decrypt import read_deadletters, read_table
from pipelines.migrate import run
from transforms.keys.crypto import keyed_ops
from transforms.keys.admin import init_keyring
from transforms.keys.keyring import load_keyring
from transforms.common.errors import KeyringError, NovationError


def output_files(run_dir):
    for root, _, names in os.walk(run_dir):
        for name in names:
            yield os.path.join(root, name)


def test_manifest_shape_and_conservation(demo_run):
    workdir, planted, result = demo_run
    m = result.manifest
    from transforms.commit.manifest_schema import check
    assert check(m, 'the demo run\'s manifest') is m  # the shape docs/ publishes
    assert os.path.basename(result.run_dir) == m['run_id']
    copies = sum(1 for r in planted.bad_rows['customers'].values() if r == 'duplicate_key')
    assert copies and m['tables']['customers']['rows_read'] == DEMO_CUSTOMERS + copies
    assert m['tables']['contracts']['rows_read'] == planted.contracts
    for name, t in m['tables'].items():
        assert t['rows_read'] == t['rows_written'] + sum(t['dead_letters'].values())
        assert t['rows_written'] == sum(f['rows'] for f in t['files'])
        for f in t['files'] + t['deadletter_files']:
            assert set(f) == {'path', 'rows', 'bytes', 'crc32c', 'keys'}
            assert set(f['keys']) <= set(m['keys'])
            assert all(m['keys'][r]['primary'] == i for r, i in f['keys'].items())
            assert os.path.getsize(os.path.join(result.run_dir, f['path'])) == f['bytes']
    assert sorted(s['table'] for s in m['sources']) == sorted(m['tables'])
    assert set(m['tables']) == {'customers', 'contracts', 'repayments', 'collection_calls'}
    for s in m['sources']:
        assert s['rows_read'] == s['rows_written'] + sum(s['dead_letters'].values())
    # key ids only: every value in "keys" is an id, never material
    for role, info in m['keys'].items():
        assert isinstance(info['primary'], int) and all(isinstance(k, int) for k in info['keys'])


def test_no_personal_value_in_any_output_byte(demo_run):
    workdir, planted, result = demo_run
    blobs = {path: open(path, 'rb').read() for path in output_files(result.run_dir)}
    assert any(p.endswith('manifest.json') for p in blobs)
    digits = re.compile(rb'\d{11,19}X?')
    secrets = {k: {v.encode('utf-8') for v in vs} for k, vs in planted.secrets.items()}
    numeric = secrets['national_id'] | secrets['mobile'] | secrets['bank_card']
    for path, data in blobs.items():
        for run_ in digits.findall(data):
            windows = {run_[i:i + n] for n in (11, 16, 18) for i in range(len(run_) - n + 1)}
            assert not windows & numeric, f'a personal number appears in {path}'
        for kind in ('email', 'name'):
            leaked = [v for v in secrets[kind] if v in data]
            assert not leaked, f'{len(leaked)} {kind} values appear in {path}'


def test_delivered_values_are_masked_and_join(demo_run):
    workdir, planted, result = demo_run
    keys = os.path.join(workdir, 'keys')
    customers = read_table(result.run_dir, keys=keys, table='customers')[0].to_pylist()
    contracts = read_table(result.run_dir, keys=keys, table='contracts')[0].to_pylist()
    names = set(planted.secrets['name'])
    ids = set(planted.secrets['national_id'])
    for c in customers:
        assert re.fullmatch(r'[0-9a-f]{32}', c['customer_id'])
        assert re.fullmatch(r'[0-9a-f]{32}', c['email'])
        assert c['name'] not in names and re.fullmatch(r'\w\*+', c['name'])
        assert re.fullmatch(r'1\d\d\*{4}\d{4}', c['mobile'])
        assert c['national_id'] is None or (c['national_id'] not in ids and
                                            re.fullmatch(r'[A-Za-z0-9_-]{40,}',
                                                         c['national_id']))
        assert re.fullmatch(r'(19|20)\d\d', c['birth_date'])
        assert c['monthly_income'] is None or isinstance(c['monthly_income'], decimal.Decimal)
        assert c['remarks'] is None
        assert 'login_password_hash' not in c
    for k in contracts:
        assert re.fullmatch(r'\w\w\*{5}', k['vehicle_plate'])
    # the pseudonymous customer_id still joins contracts to customers
    customer_ids = {c['customer_id'] for c in customers}
    joined = [k for k in contracts if k['customer_id'] in customer_ids]
    assert len(joined) > 0.9 * len(contracts)


def test_each_planted_case_lands_under_its_reason(demo_run):
    workdir, planted, result = demo_run
    keys = os.path.join(workdir, 'keys')
    ops = keyed_ops(load_keyring(keys))

    def pseudonym(customer):
        return ops.pseudonym('customer_id', customer)

    letters = read_deadletters(result.run_dir, keys=keys, table='customers')
    by_subject = {}
    for d in letters:
        by_subject.setdefault(d['subject_id'], set()).add(d['reason'])
    for reason in ('erasure_requested', 'consent_withdrawn', 'no_consent',
                   'no_cross_border_consent'):
        for customer in getattr(planted, reason):
            assert by_subject.get(pseudonym(customer)) == {reason}, (reason, customer)
    rows = {(d['row'], d['reason']) for d in letters if d['stage'] != 'consent'}
    assert rows == {(r, reason) for r, reason in planted.bad_rows['customers'].items()}
    erased = [d for d in letters if d['reason'] == 'erasure_requested']
    assert erased and all(d['raw'] is None for d in erased)
    kept = [d['raw'] for d in letters if d['raw'] is not None]
    assert kept and not any('login_password_hash' in raw for raw in kept)
    for table in ('contracts', 'repayments', 'collection_calls'):
        found = {(d['row'], d['reason']) for d in read_deadletters(
            result.run_dir, keys=keys, table=table) if d['stage'] != 'consent'}
        assert found == set(planted.bad_rows[table].items()), table
        assert planted.bad_rows[table], table
    assert result.manifest['tables']['customers']['sensitive_suppressed_rows'] == len(
        planted.no_sensitive_consent - {c for c in planted.no_sensitive_consent
                                        if pseudonym(c) in by_subject})


def test_dead_letters_need_the_deadletter_key(demo_run, tmp_path):
    workdir, planted, result = demo_run
    keys = os.path.join(workdir, 'keys')
    # a keyring that names a data key as its dead-letter key is refused as such
    forged = str(tmp_path / 'forged')
    shutil.copytree(keys, forged)
    ring = json.load(open(os.path.join(forged, 'keyring.json')))
    ring['keysets']['deadletter'] = ring['keysets']['data.personal']
    json.dump(ring, open(os.path.join(forged, 'keyring.json'), 'w'))
    with pytest.raises(KeyringError, match="role 'deadletter' is not of the kind this role needs"):
        read_deadletters(result.run_dir, keys=forged, table='customers')
    # another keyring's dead-letter key does not open them either
    other = str(tmp_path / 'other')
    init_keyring(other)
    with pytest.raises(NovationError, match='which keyring .* does not hold'):
        read_deadletters(result.run_dir, keys=other, table='customers')
    with_manifest_key_of(keys, other)  # it trusts the manifest, and still opens nothing
    with pytest.raises(NovationError, match='cannot be decrypted with the deadletter key'):
        read_deadletters(result.run_dir, keys=other, table='customers')
    with pytest.raises(NovationError, match='cannot be decrypted with the keys in'):
        read_table(result.run_dir, keys=other, table='customers')


def test_a_changed_file_is_caught_by_the_manifest(demo_run, tmp_path):
    workdir, _, result = demo_run
    copy = str(tmp_path / 'run')
    shutil.copytree(result.run_dir, copy)
    entry = result.manifest['tables']['customers']['files'][0]
    path = os.path.join(copy, entry['path'])
    data = bytearray(open(path, 'rb').read())
    data[100] ^= 1
    open(path, 'wb').write(bytes(data))
    with pytest.raises(NovationError, match='does not match the manifest'):
        read_table(copy, keys=os.path.join(workdir, 'keys'), table='customers')


def test_every_run_gets_a_new_directory(demo_copy):
    workdir, config, _ = demo_copy
    first = run(['--config', config])
    second = run(['--config', config])
    assert first.run_dir != second.run_dir
    assert first.manifest['tables']['customers']['rows_read'] >= 200
    with pytest.raises(NovationError, match='already exists'):
        run(['--config', config, '--run-id', first.manifest['run_id']])


def edit(path, old, new):
    text = open(path, encoding='utf-8').read()
    assert old in text
    open(path, 'w', encoding='utf-8').write(text.replace(old, new))


def novation(*args, cwd=None):
    return subprocess.run([sys.executable, '-m', 'pipelines.cli', *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def drop_column(path, name):
    rows = list(csv.reader(open(path, encoding='utf-8', newline='')))
    at = rows[0].index(name)
    with open(path, 'w', encoding='utf-8', newline='') as f:
        csv.writer(f).writerows([r[:at] + r[at + 1:] for r in rows])


def keep_lines(path, n):
    lines = open(path, encoding='utf-8').readlines()[:n]
    open(path, 'w', encoding='utf-8').writelines(lines)


def shared_keyring(keys):
    """The run's keyring replaced by one shared from it (an acquirer's: no sealing key)."""
    from transforms.keys.admin import share_keyring
    full = keys + '-full'
    os.rename(keys, full)
    share_keyring(full, keys, ['data.personal'])


def replace_with(path, make):
    os.remove(path)
    make(path)


def problems(stderr: str) -> list:
    """stderr lines other than the cleartext keyring's warning and progress."""
    return user_lines(stderr)


@pytest.mark.parametrize('setup, message', [
    (lambda w: os.remove(os.path.join(w, 'keys', 'keyring.json')), 'no keyring at'),
    (lambda w: os.remove(os.path.join(w, 'keys', 'token.cleartext.json')),
     'cannot read token keyset'),
    (lambda w: os.remove(os.path.join(w, 'exports', 'customers.csv')),
     'tables.customers.path: no file matches'),
    (lambda w: os.remove(os.path.join(w, 'exports', 'erasure_requests.csv')),
     'consent.erasures: no such file'),
    (lambda w: open(os.path.join(w, 'demo.yaml'), 'a').write('\nextra: 1\n'),
     'unknown key(s) extra'),
    # found before any data is read, not after
    (lambda w: drop_column(os.path.join(w, 'exports', 'consent_registry.csv'), 'purpose'),
     'consent.registry: consent registry'),
    (lambda w: keep_lines(os.path.join(w, 'exports', 'consent_registry.csv'), 1),
     'has a header and no rows'),
    (lambda w: replace_with(os.path.join(w, 'exports', 'customers.csv'), os.mkdir),
     'customers.csv is a directory'),
    (lambda w: replace_with(os.path.join(w, 'exports', 'customers.csv'), os.mkfifo),
     'customers.csv is not a regular file'),
    (lambda w: replace_with(os.path.join(w, 'exports', 'erasure_requests.csv'), os.mkfifo),
     'erasure_requests.csv is not a regular file'),
    (lambda w: open(os.path.join(w, 'out'), 'w').close(), 'is a file, not a directory'),
    (lambda w: shared_keyring(os.path.join(w, 'keys')), 'holds only the public half'),
    (lambda w: os.makedirs(os.path.join(w, 'out')) or open(
        os.path.join(w, 'out', 'audit'), 'w').close(), 'the audit log: '),
])
def test_bad_input_gives_one_line_and_no_traceback(demo_copy, setup, message):
    workdir, config, _ = demo_copy
    setup(workdir)
    proc = novation('run', '--config', config)
    assert proc.returncode == 2
    lines = problems(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith('novation: error: ') and message in lines[0]
    assert 'Traceback' not in proc.stderr
    out = os.path.join(workdir, 'out')  # failed before any output
    assert not os.path.isdir(out) or os.listdir(out) in ([], ['audit'])


def test_an_input_file_with_unclassified_columns_is_refused(demo_copy):
    workdir, config, _ = demo_copy
    path = os.path.join(workdir, 'exports', 'contracts.parquet')
    table = pq.read_table(path)
    pq.write_table(table.append_column('wechat_id', table.column('contract_id')), path)
    proc = novation('run', '--config', config)
    assert proc.returncode == 2, proc.stderr
    assert 'column(s) not in the schema (unclassified): wechat_id' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not os.path.exists(os.path.join(workdir, 'out'))  # found before any data was read


def test_an_export_in_another_encoding_is_a_clear_error(demo_copy):
    workdir, config, _ = demo_copy
    edit(config, 'encoding: gbk', 'encoding: utf-8')
    proc = novation('run', '--config', config)
    assert proc.returncode == 2, proc.stderr
    assert 'customers.csv' in proc.stderr and 'tables.customers' in proc.stderr
    assert 'Traceback' not in proc.stderr and len(problems(proc.stderr)) == 1


def test_dead_letter_limit_aborts_without_a_manifest(demo_copy, tmp_path):
    workdir, config, _ = demo_copy
    edit(config, 'max_ratio: 0.05', 'max_ratio: 0.001')
    temp = tmp_path / 'temp'
    temp.mkdir()
    proc = novation('run', '--config', config, f'--temp_location={temp}')
    assert proc.returncode == 3, proc.stderr
    assert os.listdir(temp) == []  # the aborted run's scratch files are gone too
    assert problems(proc.stderr)[0].startswith('novation: aborted: table customers:')
    assert 'Traceback' not in proc.stderr
    runs = [d for d in os.listdir(os.path.join(workdir, 'out')) if d != 'audit']
    assert len(runs) == 1
    assert not os.path.exists(os.path.join(workdir, 'out', runs[0], 'manifest.json'))
    from transforms.commit.audit import read_log
    (started, aborted) = read_log(os.path.join(workdir, 'out'))
    assert (started['event'], aborted['event']) == ('run_started', 'run_aborted')
    assert aborted['run_id'] == runs[0] and 'deadletter.max_ratio' in aborted['why']


def test_a_run_parks_its_state_in_scratch_and_removes_it(demo_copy, tmp_path, monkeypatch):
    from transforms.common.scratch import Scratch
    _, config, _ = demo_copy
    removed = []
    remove = Scratch.remove

    def listing_remove(self):
        removed.append((self.directory, sorted(os.listdir(self.directory))))
        remove(self)

    monkeypatch.setattr(Scratch, 'remove', listing_remove)
    temp = tmp_path / 'temp'
    temp.mkdir()
    result = run(['--config', config, f'--temp_location={temp}'])
    [(directory, names)] = removed
    assert directory == os.path.join(temp, 'novation-' + result.manifest['run_id'])
    # key facts and parked rows of the three tables with a primary key, consent flags,
    # consent decisions, the risk's classes and the notification list's shards
    assert {name.split('-')[0] for name in names} == {'keys', 'rows', 'flags', 'decisions',
                                                      'risk', 'notice'}
    assert {name.split('-')[1] for name in names if name.startswith('risk-')} == {'classes'}
    assert {name.split('-')[1] for name in names if name.startswith('rows-')} == {
        'contracts', 'customers', 'repayments'}
    assert os.listdir(temp) == []


def test_demo_command_prints_the_run_directory_last(tmp_path):
    proc = novation('demo', '--workdir', str(tmp_path / 'w'), '--customers', '300')
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert os.path.exists(os.path.join(last, 'manifest.json'))
    assert 'rows read' in proc.stdout
    # clean logs: no runner fallback; only the warning that the demo keyring is in clear
    assert problems(proc.stderr) == [] and 'stored in clear' in proc.stderr, proc.stderr
    out = tmp_path / 'customers.csv'
    proc = novation('decrypt', last, '--keys', str(tmp_path / 'w' / 'keys'), '--table',
                    'customers', '--out', str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding='utf-8').startswith('"customer_id"')


def test_a_table_spread_over_several_files_is_counted_per_file(demo_copy):
    workdir, config, planted = demo_copy
    source = os.path.join(workdir, 'exports', 'contracts.parquet')
    table = pq.read_table(source)
    os.remove(source)
    os.makedirs(os.path.join(workdir, 'exports', 'contracts'))
    half = table.num_rows // 2
    for i, part in enumerate((table.slice(0, half), table.slice(half))):
        pq.write_table(part, os.path.join(workdir, 'exports', 'contracts', f'part-{i}.parquet'))
    edit(config, 'exports/contracts.parquet', 'exports/contracts/part-*.parquet')
    manifest = run(['--config', config]).manifest
    parts = [s for s in manifest['sources'] if s['table'] == 'contracts']
    assert [os.path.basename(s['path']) for s in parts] == ['part-0.parquet', 'part-1.parquet']
    assert [s['rows_read'] for s in parts] == [half, table.num_rows - half]
    for s in parts:
        assert s['rows_read'] == s['rows_written'] + sum(s['dead_letters'].values())
    bad = planted.bad_rows['contracts']
    letters = read_deadletters(os.path.join(workdir, 'out', manifest['run_id']),
                               keys=os.path.join(workdir, 'keys'), table='contracts')
    rows = {(os.path.basename(d['source_file']), d['row']) for d in letters
            if d['stage'] == 'conform'}
    assert rows == {('part-0.parquet', r) if r <= half else ('part-1.parquet', r - half)
                    for r in bad}


def test_detokenize_reverses_tokens_for_key_holders_only(demo_run, tmp_path):
    workdir, planted, result = demo_run
    keys = os.path.join(workdir, 'keys')
    customers, _ = read_table(result.run_dir, keys=keys, table='customers')
    tokens = [t for t in customers.column('national_id').to_pylist() if t][:3]
    proc = novation('detokenize', '--run', result.run_dir, '--keys', keys,
                    '--field', 'customers.national_id', *tokens, 'not-a-token')
    assert proc.returncode == 1  # one token was not valid
    pairs = [line.split('\t') for line in proc.stdout.splitlines()]
    assert [p[0] for p in pairs] == tokens + ['not-a-token']
    assert all(v in planted.secrets['national_id'] for _, v in pairs[:3]) and pairs[3][1] == ''
    assert '1 token(s) are not valid' in proc.stderr
    listing = tmp_path / 'tokens.txt'
    listing.write_text('\n'.join(tokens) + '\n')
    out = tmp_path / 'values.csv'
    proc = novation('detokenize', '--run', result.run_dir, '--keys', keys,
                    '--field', 'customers.national_id', '--in', str(listing), '--out', str(out))
    assert proc.returncode == 0 and '3 of 3 tokens' in proc.stdout, proc.stderr
    assert out.read_text().splitlines()[1:] == [f'{t},{v}' for t, v in pairs[:3]]
    proc = novation('detokenize', '--run', result.run_dir, '--keys', keys,
                    '--field', 'customers.customer_id', 'abc')
    assert proc.returncode == 2 and 'hash is one-way' in proc.stderr
    other = with_manifest_key_of(keys, init_keyring(str(tmp_path / 'other')).path)
    proc = novation('detokenize', '--run', result.run_dir, '--keys', other,
                    '--field', 'customers.national_id', tokens[0])
    assert proc.returncode == 1 and proc.stdout == f'{tokens[0]}\t\n'  # another key: nothing


def test_without_a_column_key_every_other_column_still_reads(demo_run, tmp_path):
    workdir, _, result = demo_run
    keys = keyring_without(os.path.join(workdir, 'keys'), str(tmp_path / 'analyst'),
                           'column.customers.monthly_income')
    table, withheld = read_table(result.run_dir, keys=keys, table='customers')
    assert withheld == {'monthly_income': 'column.customers.monthly_income'}
    assert 'monthly_income' not in table.schema.names
    assert table.num_rows == result.manifest['tables']['customers']['rows_written']
    full, _ = read_table(result.run_dir, keys=os.path.join(workdir, 'keys'), table='customers')
    assert table.equals(full.drop_columns(['monthly_income']))
    out = tmp_path / 'c.csv'
    proc = novation('decrypt', result.run_dir, '--keys', keys, '--table', 'customers',
                    '--out', str(out))
    assert proc.returncode == 0, proc.stderr
    assert 'withheld: monthly_income (under column.customers.monthly_income' in proc.stdout


def test_decrypting_with_another_keyring_is_one_clear_line(demo_run, tmp_path):
    workdir, _, result = demo_run
    other = str(tmp_path / 'other')
    init_keyring(other, columns=['customers.monthly_income'])
    proc = novation('decrypt', result.run_dir, '--keys', other, '--table', 'contracts',
                    '--out', str(tmp_path / 'x.csv'))
    assert proc.returncode == 2
    [line] = problems(proc.stderr)  # its manifest key does not check the run's seal
    assert line.startswith('novation: error: ') and 'does not hold' in line
    assert 'use the keyring the run was written with' in line
    with_manifest_key_of(os.path.join(workdir, 'keys'), other)
    proc = novation('decrypt', result.run_dir, '--keys', other, '--table', 'contracts',
                    '--out', str(tmp_path / 'x.csv'))
    assert proc.returncode == 2
    [line] = problems(proc.stderr)  # the manifest is trusted; its data keys are foreign
    assert line.startswith('novation: error: data/contracts/part-') and \
        'cannot be decrypted with the keys in' in line
    assert not (tmp_path / 'x.csv').exists()


def test_avro_and_parquet_deliver_the_same_rows(demo_copy):
    workdir, config, _ = demo_copy
    edit(config, 'customers.monthly_income: encrypt', 'customers.monthly_income: '
                                                      '{method: generalize, bucket: 5000}')
    as_parquet = run(['--config', config])
    edit(config, 'format: parquet\n  keys:', 'format: avro\n  keys:')  # output.format
    as_avro = run(['--config', config])
    keys = os.path.join(workdir, 'keys')
    for name, t in as_avro.manifest['tables'].items():
        assert t['format'] == 'avro' and all(f['path'].endswith('.avro.enc') for f in t['files'])
        assert all(set(f['keys']) == {'data.avro'} for f in t['files'])
        parquet_rows, _ = read_table(as_parquet.run_dir, keys=keys, table=name)
        avro_rows, _ = read_table(as_avro.run_dir, keys=keys, table=name)
        assert avro_rows.num_rows == t['rows_written'] > 0
        key = lambda r: json.dumps(r, sort_keys=True, default=str)  # noqa: E731
        assert sorted(avro_rows.to_pylist(), key=key) == \
            sorted(parquet_rows.to_pylist(), key=key), name
    from pipelines.verify import verify_run
    checked = verify_run(as_avro.run_dir, keys)
    assert not checked['problems'] and checked['files_ok'] == checked['files'] > 4
    # a keyring trusting the manifest but holding another data.avro key: one line, no Tink
    # traceback
    other = with_manifest_key_of(keys, init_keyring(os.path.join(workdir, 'other')).path)
    with pytest.raises(NovationError, match='cannot be decrypted with the keys in'):
        read_table(as_avro.run_dir, keys=other, table='customers')


def test_consent_columns_read_a_sellers_own_registry_names(demo_copy):
    """The same run, with the registry and erasure list under the seller's own column names
    and consent.columns mapping them, refuses and admits the same customers."""
    from pipelines.migrate import run as run_
    workdir, config, _ = demo_copy
    before = run_(['--config', config, '--run-id', 'names-ours']).manifest
    exports = os.path.join(workdir, 'exports')
    for name, old, new in [('consent_registry.csv', 'subject_id,', 'customer_id,'),
                           ('consent_registry.csv', 'sensitive_consent', 'separate_sensitive'),
                           ('erasure_requests.csv', 'subject_id,', 'customer_id,')]:
        path = os.path.join(exports, name)
        text = open(path, encoding='utf-8').read()
        header, rest = text.split('\n', 1)
        open(path, 'w', encoding='utf-8').write(header.replace(old, new) + '\n' + rest)
    text = open(config, encoding='utf-8').read().replace(
        'consent:\n', 'consent:\n  columns: {subject_id: customer_id, '
                      'sensitive_consent: separate_sensitive}\n', 1)
    open(config, 'w', encoding='utf-8').write(text)
    after = run_(['--config', config, '--run-id', 'names-theirs']).manifest
    assert after['totals'] == before['totals']
    assert after['tables']['customers']['dead_letters'] == \
        before['tables']['customers']['dead_letters']


def test_a_stray_quote_in_an_export_costs_one_record_and_hides_none(demo_copy):
    """One quote opening the last (free-text) field of record 101 of customers.csv: without
    recovery it would take in every record after it as one remark."""
    workdir, config, _ = demo_copy
    path = os.path.join(workdir, 'exports', 'customers.csv')
    data = open(path, 'rb').read()
    newline = '\r\n' if b'\r\n' in data else '\n'
    lines = data.decode('gbk').split(newline)
    records = [line for line in lines[1:] if line]
    assert all('"' not in line for line in records)  # no quoted value the count could miss
    fields = records[100].split(',')
    fields[-1] = '"' + fields[-1]
    records[100] = ','.join(fields)
    open(path, 'wb').write(newline.join([lines[0]] + records + ['']).encode('gbk'))
    result = run(['--config', config])
    customers = result.manifest['tables']['customers']
    assert customers['rows_read'] == len(records)
    source = next(s for s in result.manifest['sources'] if s['table'] == 'customers')
    assert source['lines'] == source['rows_read'] == len(records)
    broken = [d for d in customers['dead_letter_detail'] if 'quote' in d['problem']]
    assert [(d['reason'], d['count'], d['first_rows']) for d in broken] == \
        [('malformed', 1, [101])]
    from pipelines.verify import verify_run
    assert not verify_run(result.run_dir, os.path.join(workdir, 'keys'))['problems']
    rows, _ = read_table(result.run_dir, keys=os.path.join(workdir, 'keys'), table='customers')
    assert not [v for v in rows.column('remarks').to_pylist() if v and '\n' in v]


def test_the_runners_counters_show_what_the_manifest_counts(demo_run):
    """Beam counters (the Dataflow console's view) agree with the manifest, table by table."""
    from apache_beam.metrics.metric import MetricsFilter
    from transforms.common.metrics import NAMESPACE
    _, _, result = demo_run
    found = {}
    for counter in result.pipeline_result.metrics().query(
            MetricsFilter().with_namespace(NAMESPACE))['counters']:
        found[counter.key.metric.name] = found.get(counter.key.metric.name, 0) + counter.committed
    expected = {}
    for name, t in result.manifest['tables'].items():
        expected[f'{name}/rows_read'] = t['rows_read']
        expected[f'{name}/rows_written'] = t['rows_written']
        expected.update({f'{name}/dead_letters/{r}': n for r, n in t['dead_letters'].items()})
    assert {k: v for k, v in found.items() if v} == {k: v for k, v in expected.items() if v}
