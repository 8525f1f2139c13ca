"""A new user's mistakes, met as a user meets them: from the command line, the exit code and
the one line printed, with no traceback and no personal value."""

import os
import re

import pytest

from config.loader import parse_config
from tests.conftest import user_lines
from pipelines.cli import main
from transforms.common.errors import ConfigError
from transforms.commit.manifest import percent


def novation(capsys, *args):
    """(exit code, stdout, stderr lines other than the cleartext keyring's warning)."""
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, user_lines(err)


def one_error(code, err, *parts):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith('novation: error: '), err
    for part in parts:
        assert part in err[0], err
    assert 'Traceback' not in err[0]


# ---------------------------------------------------------------------------------------------
# Options


def test_an_option_neither_novation_nor_beam_knows_stops_the_run(capsys, tmp_path):
    code, _, err = novation(capsys, 'run', '--config', str(tmp_path / 'none.yaml'),
                            '--ouput', str(tmp_path / 'out'))
    one_error(code, err, 'unknown option --ouput', 'did you mean --output?')
    assert not (tmp_path / 'out').exists()


def test_a_stray_value_stops_the_run(capsys, tmp_path):
    code, _, err = novation(capsys, 'run', '--config', str(tmp_path / 'none.yaml'), 'extra')
    one_error(code, err, "unexpected argument 'extra'")


def test_a_demo_option_typo_stops_before_generating(capsys, tmp_path):
    code, _, err = novation(capsys, 'demo', '--workdir', str(tmp_path / 'w'), '--seeed', '3')
    one_error(code, err, 'unknown option --seeed', 'did you mean --seed?')
    assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('argv', [
    ['-v', 'run', '--config', 'CONFIG'],
    ['run', '-v', '--config', 'CONFIG'],
    ['run', '--config', 'CONFIG', '--verbose'],
])
def test_verbose_goes_before_or_after_the_command(capsys, tmp_path, argv):
    missing = str(tmp_path / 'none.yaml')
    code, _, err = novation(capsys, *[missing if a == 'CONFIG' else a for a in argv])
    one_error(code, err, f'cannot read config {missing}: no such file')


def test_detokenize_without_tokens_shows_its_own_usage(capsys, tmp_path):
    code, _, err = novation(capsys, 'detokenize', '--run', str(tmp_path), '--keys',
                            str(tmp_path), '--field', 'customers.national_id')
    assert code == 2
    assert err[0].startswith('usage: novation detokenize')
    assert err[-1] == 'novation detokenize: error: give tokens or --in FILE (not both)'


def test_demo_help_names_its_four_formats_and_its_seed(capsys):
    code, out, _ = novation(capsys, 'demo', '--help')
    assert code == 0
    text = ' '.join(out.split())
    for part in ('GBK CSV', 'Parquet', 'JSON Lines', 'Avro', 'default 20261123'):
        assert part in text
    assert 'fixed' not in text


# ---------------------------------------------------------------------------------------------
# Config


CONFIG_HEAD = '''transfer:
  seller: S
  acquirer: A
'''


@pytest.mark.parametrize('text, key, lines', [
    (CONFIG_HEAD + 'tables:\n  customers: {path: a.csv}\n  customers: {path: b.csv}\n',
     'customers', (5, 6)),
    (CONFIG_HEAD + '  seller: T\n', 'seller', (2, 4)),
    ('{output: 1, output: 2}\n', 'output', (1, 1)),
])
def test_a_key_given_twice_is_an_error_naming_it_and_both_lines(text, key, lines):
    with pytest.raises(ConfigError) as e:
        parse_config(text, 'transfer.yaml', '.')
    assert str(e.value) == (f'transfer.yaml: key {key!r} is given twice, at lines {lines[0]} '
                            f'and {lines[1]}; keep one')


@pytest.mark.parametrize('share, text', [
    (0.0001, '0.01%'), (0.05, '5%'), (0.0537, '5.37%'), (0.12345, '12.3%'), (1.0, '100%'),
    (0.0, '0%'),
])
def test_shares_print_with_their_significant_digits(share, text):
    assert percent(share) == text


# ---------------------------------------------------------------------------------------------
# Output locations, checked before any data is read


@pytest.mark.parametrize('where, why', [
    ('/proc/novation-out', 'cannot create or write files under /proc'),
    ('FILE/out', 'is a file, not a directory'),
])
def test_an_output_that_cannot_be_written_is_one_line_before_reading(
        capsys, demo_copy, tmp_path, where, why):
    _, config, _ = demo_copy
    (tmp_path / 'FILE').write_text('not a directory')
    where = where.replace('FILE', str(tmp_path / 'FILE'))
    code, _, err = novation(capsys, 'run', '--config', config, '--output', where)
    one_error(code, err, f'--output: {where} cannot be written', why)
    edit = open(config, encoding='utf-8').read().replace('path: out', f'path: {where}')
    open(config, 'w', encoding='utf-8').write(edit)
    code, _, err = novation(capsys, 'run', '--config', config)
    one_error(code, err, f'{config}: output.path: {where} cannot be written', why)
    code, _, err = novation(capsys, 'run', '--config', config, '--output', str(tmp_path / 'o'),
                            f'--temp_location={where}')
    one_error(code, err, f'scratch files (--temp_location): {where} cannot be written', why)
    assert not (tmp_path / 'o').exists() or not os.listdir(tmp_path / 'o')


def test_reading_a_run_with_a_wrong_keyring_path_says_which_keyring_to_give(
        capsys, demo_run, tmp_path):
    _, _, result = demo_run
    code, _, err = novation(capsys, 'decrypt', result.run_dir, '--keys', str(tmp_path / 'nokeys'),
                            '--table', 'customers', '--out', str(tmp_path / 'c.csv'))
    one_error(code, err, f'no keyring at {tmp_path / "nokeys"}',
              'the keyring the run was written with')
    assert 'keys init' not in err[0]


# ---------------------------------------------------------------------------------------------
# Exports that are not what the config says, met from `novation run`


def replace_export(workdir, name, content):
    path = os.path.join(workdir, 'exports', name)
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(content(data, workdir))


def drop_last_column(data, _):
    lines = data.decode('gbk').splitlines()
    return ''.join(line.rsplit(',', 1)[0] + '\n' for line in lines).encode('gbk')


@pytest.mark.parametrize('name, content, message', [
    ('customers.csv', lambda d, w: open(os.path.join(w, 'exports', 'contracts.parquet'),
                                        'rb').read(),
     'customers.csv is a parquet file, not csv: set tables.customers.format: parquet'),
    ('customers.csv', lambda d, w: b'\xef\xbb\xbf' + d.decode('gbk').encode('utf-8'),
     'customers.csv starts with a UTF-8 byte-order mark, so it is UTF-8, not gbk'),
    ('customers.csv', lambda d, w: d.replace(b',', b';'),
     "the header splits into the columns of"),
    ('customers.csv', lambda d, w: d.split(b'\n', 1)[1],
     'the first line names none of the columns'),
    ('customers.csv', lambda d, w: b'', 'customers.csv is empty (0 bytes)'),
])
def test_an_export_that_is_not_what_the_config_says_is_named_for_what_it_is(
        capsys, demo_copy, name, content, message):
    workdir, config, planted = demo_copy
    replace_export(workdir, name, content)
    code, out, err = novation(capsys, 'run', '--config', config)
    one_error(code, err, message)
    for values in planted.secrets.values():  # never a value of the file
        assert not any(v in err[0] for v in values[:50])
    assert out == ''


def test_exports_without_rows_are_empty_tables_and_a_missing_column_is_named(
        capsys, demo_copy):
    workdir, config, _ = demo_copy
    replace_export(workdir, 'customers.csv',
                   lambda d, w: drop_last_column(d, w).split(b'\n', 1)[0] + b'\n')
    replace_export(workdir, 'repayments.jsonl', lambda d, w: b'')
    code, out, _ = novation(capsys, 'run', '--config', config)
    assert code == 0
    assert '  fields missing from the export (delivered as nulls): customers: remarks' in out
    assert re.search(r'  customers +0 +0  none', out), out
    assert re.search(r'  repayments +0 +0  none', out), out


@pytest.mark.parametrize('error, line', [
    (OSError(28, 'No space left on device', '/srv/out/x.parquet'),
     'novation: error: /srv/out/x.parquet: the disk is full: free space there, or point the '
     'run elsewhere'),
    (PermissionError(13, 'Permission denied', '/srv/out/audit/00000002.json'),
     'novation: error: /srv/out/audit/00000002.json: permission denied'),
])
def test_an_environment_error_is_one_line(capsys, monkeypatch, error, line):
    import pipelines.decrypt

    def full_disk(*args, **kwargs):
        raise error
    monkeypatch.setattr(pipelines.decrypt, 'decrypt_table', full_disk)
    code, _, err = novation(capsys, 'decrypt', 'RUN', '--keys', 'K', '--table', 't', '--out',
                            'x.csv')
    assert (code, err) == (2, [line])


def test_a_workers_os_error_is_found_in_beams_text():
    from pipelines.launch import unwrap_error
    wrapped = RuntimeError("Traceback ...\nOSError: [Errno 28] No space left on device: "
                           "'/tmp/novation-r/part' [while running 'Write']")
    assert str(unwrap_error(wrapped)) == ('/tmp/novation-r/part: the disk is full: free space '
                                          'there, or point the run elsewhere')


def test_help_loads_neither_beam_nor_tink_nor_arrow():
    """``novation --help`` and every subcommand's help answer at once: no Beam, Tink or Arrow
    import until a command needs it."""
    import subprocess
    import sys
    from tests.conftest import ROOT
    code = '\n'.join([
        'import contextlib, io, sys',
        'from pipelines.cli import main',
        "for argv in (['--help'], ['run', '--help'], ['stream', '--help'], ['replay', '--help'],",
        "             ['backfill', '--help'], ['review', '--help'], ['decrypt', '--help']):",
        '    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):',
        '        main(argv)',
        "print(sorted(m for m in ('apache_beam', 'tink', 'pyarrow') if m in sys.modules))"])
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == '[]'
