"""Progress: counters in every process, one display in the launcher, for the whole run."""

import io
import json
import logging
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import progress as display
from pipelines.cli import main
from pipelines.demo_data import generate
from pipelines.progress import ProgressConsole, estimate_seconds, progress_line
from tests.read.test_dirty_exports import make_table, read_file
from transforms.common import progress


@pytest.mark.parametrize('read, finished, elapsed, left', [
    (0.0, 0.0, 10, None),      # nothing done: no estimate
    (0.5, 0.0, 1, None),       # too early to tell
    (0.5, 0.0, 10, 40.0),      # half read (20% of the work) in 10 s: 40 s more
    (1.0, 0.5, 14, 6.0),       # read, half written (70%) in 14 s
    (1.0, 1.0, 20, 0.0),       # done
    (1.5, 1.2, 20, 0.0),       # compressed input reads past its size: capped
])
def test_the_estimate_weighs_reading_and_writing(read, finished, elapsed, left):
    got = estimate_seconds(read, finished, elapsed)
    assert got == left if left is None else got == pytest.approx(left)


@pytest.mark.parametrize('stage, totals, elapsed, line', [
    ('starting the pipeline', {}, 3.2, 'starting the pipeline, 3 s'),
    ('reading', {'read': 50_000, 'bytes': 250, 'dead': 10}, 10,
     'reading (25% of the input read); 10 s, about 90 s left; 50,000 rows read, 0 written, '
     '10 dead letters; 5,000 rows/s'),
    ('masking and writing', {'read': 200_000, 'bytes': 1000, 'written': 190_000, 'dead': 9000},
     20, 'masking and writing; 20 s, almost done; 200,000 rows read, 190,000 written, 9,000 '
         'dead letters; 10,000 rows/s'),
])
def test_the_progress_line(stage, totals, elapsed, line):
    assert progress_line(stage, totals, 1000, elapsed) == line


def report(process, **counts):
    return progress.MARKER + json.dumps({'process': process, 'counts': [
        [kind, 'customers', n] for kind, n in counts.items()]})


def record(message):
    return logging.LogRecord('novation', logging.INFO, __file__, 1, message, None, None)


def test_the_console_sums_the_latest_report_of_every_process_and_prints_none():
    out = io.StringIO()
    console = ProgressConsole(out, live=False)
    console.setFormatter(logging.Formatter('novation: %(message)s'))
    console.emit(record(progress.MARKER + json.dumps({'stage': 'starting the pipeline',
                                                      'input_bytes': 1000})))
    assert console.line().startswith('starting the pipeline, ')
    console.emit(record(report('a', read=100, bytes=100)))
    console.emit(record(report('b', read=50, bytes=50)))
    console.emit(record(report('a', read=300, bytes=300)))  # a later report replaces the first
    line = console.line()
    assert line.startswith('reading (35% of the input read); ')
    assert '350 rows read, 0 written, 0 dead letters' in line
    console.emit(record(report('b', read=50, bytes=50, written=40)))
    assert console.line().startswith('masking and writing (35% of the input read); ')
    assert console.line().startswith('masking and writing')  # nothing moved: the stage stays
    assert out.getvalue() == ''  # reports are figures for the display, not log lines
    console.emit(record('warning: something'))
    assert out.getvalue() == 'novation: warning: something\n'


def test_a_log_line_is_printed_above_the_live_line():
    out = io.StringIO()
    console = ProgressConsole(out, live=True)
    console.setFormatter(logging.Formatter('novation: %(message)s'))
    console._shown = 'reading; 3 s'
    console.emit(record('warning: something'))
    assert out.getvalue() == '\r\x1b[Knovation: warning: something\nnovation: reading; 3 s'
    console.stop()
    assert out.getvalue().endswith('\r\x1b[K')


def test_counting_is_off_unless_the_launcher_asks(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger='novation.progress.report')
    monkeypatch.delenv(progress.ENABLE, raising=False)
    progress.count('read', 'customers', 5)
    progress.flush()
    assert not caplog.records
    monkeypatch.setenv(progress.ENABLE, '1')
    progress.reset()
    monkeypatch.setitem(progress._STATE, 'sent', 0.0)
    progress.count('read', 'customers', 5, nbytes=70)
    progress.count('read', 'customers', 2)  # within REPORT_SECONDS: no report yet
    progress.flush()
    sent = [json.loads(r.getMessage()[len(progress.MARKER):]) for r in caplog.records]
    assert [sorted(map(tuple, s['counts'])) for s in sent] == [
        [('bytes', 'customers', 70), ('read', 'customers', 5)],
        [('bytes', 'customers', 70), ('read', 'customers', 7)]]


@pytest.mark.parametrize('fmt', ['csv', 'jsonl', 'parquet'])
def test_reading_counts_every_row_and_byte_of_a_file_and_no_value(
        tmp_path, monkeypatch, caplog, fmt):
    table = make_table(str(tmp_path), fmt)
    rows = [{'rid': f'R{i}ж', 'note': f'备注ж{i}'} for i in range(5000)]
    if fmt == 'parquet':
        pq.write_table(pa.Table.from_pylist(rows), table.path, row_group_size=1000)
    else:
        with open(table.path, 'w', encoding='utf-8') as f:
            f.write('rid,note\n' + ''.join(f'{r["rid"]},{r["note"]}\n' for r in rows)
                    if fmt == 'csv' else ''.join(json.dumps(r) + '\n' for r in rows))
    monkeypatch.setenv(progress.ENABLE, '1')
    monkeypatch.setattr(progress, 'REPORT_SECONDS', 0.0)
    progress.reset()
    caplog.set_level(logging.INFO, logger='novation.progress.report')
    assert read_file(table)[2] == 5000
    last = json.loads(caplog.records[-1].getMessage()[len(progress.MARKER):])
    counts = {(kind, t): n for kind, t, n in last['counts']}
    assert counts[('read', 't')] == 5000
    assert counts[('bytes', 't')] == os.path.getsize(table.path)
    assert 'ж' not in caplog.text and 'R1' not in caplog.text


def test_the_demo_generator_says_each_step(tmp_path):
    steps = []
    generate(str(tmp_path), customers=50, seed=1, on_step=steps.append)
    assert steps == ['name and address pools', '50 customers (GBK CSV)', 'contracts (Parquet)',
                     'repayments (JSON Lines)', 'collection calls (Avro)',
                     'the consent registry and the erasure list']


@pytest.mark.parametrize('workers', [
    [], ['--direct_num_workers', '2', '--direct_running_mode', 'multi_processing']])
def test_a_run_logs_progress_lines_for_the_whole_run(demo_copy, capsys, monkeypatch, workers):
    _, config, _ = demo_copy
    monkeypatch.setattr(display, 'LOG_SECONDS', 0.25)
    monkeypatch.setattr(progress, 'REPORT_SECONDS', 0.0)
    assert main(['run', '--config', config] + workers) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith('novation: progress: ')]
    assert lines, err
    figures = [tuple(int(n.replace(',', '')) for n in re.search(
        r'([\d,]+) rows read, ([\d,]+) written, ([\d,]+) dead letters', line).groups())
        for line in lines if 'rows read' in line]
    assert figures and figures == sorted(figures)  # counts only grow
    read = int(re.search(r'([\d,]+) rows read', out).group(1).replace(',', ''))
    written = int(re.search(r'([\d,]+) written', out).group(1).replace(',', ''))
    assert figures[-1][0] <= read and figures[-1][1] <= written
    assert any(f[1] for f in figures), lines  # writing was seen, not only reading
    assert not [line for line in err.splitlines() if progress.MARKER in line]
