"""The throughput benchmark runs end to end at a smoke size (figures, not a timing assertion)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # the benchmark runs three pipelines


def test_the_benchmark_prints_every_figure_and_a_json_last_line(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.throughput', '--customers', '2000',
                           '--runs', '1', '--workdir', str(tmp_path)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures['rows'] >= 2000
    for key in ('novation_rows_per_s', 'baseline_rows_per_s', 'ceiling_rows_per_s',
                'novation_peak_rss_mb'):
        assert figures[key] > 0, key
    table = '\n'.join(lines)
    for stage in ('novation', 'baseline', 'ceiling'):
        assert f'\n  {stage} ' in table
    assert 'novation / baseline:' in table and 'novation / ceiling:' in table


def test_the_baselines_per_value_keyed_calls_equal_novations(keys_dir):
    """The baseline does the same keyed work as the product, only one value at a time."""
    import pyarrow as pa

    from benchmarks.throughput import _mask_row_fn
    from transforms.keys.crypto import keyed_ops
    from transforms.keys.keyring import load_keyring

    baseline = _mask_row_fn(keys_dir)
    baseline.setup()
    ops = keyed_ops(load_keyring(keys_dir, ('pseudonym', 'token'), warn=False))
    values = ['C00000001', '张三', '']
    assert [baseline.pseudonym('email', v) for v in values] == \
        ops.pseudonyms('email', pa.array(values)).to_pylist()
    assert [baseline.token('bank_card', v) for v in values] == \
        ops.tokens('bank_card', pa.array(values)).to_pylist()
    assert [baseline.day_shift(v, 30) for v in values] == \
        ops.day_shifts(pa.array(values), 30).to_pylist()


@pytest.mark.parametrize('export', ['demo'])  # 'customers' is the throughput benchmark's data
def test_the_worker_benchmark_prints_both_modes_and_a_json_last_line(tmp_path, export):
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.workers', '--customers', '300',
                           '--export', export, '--runs', '1', '--workdir', str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    [figures] = json.loads(lines[-1])
    assert figures['export'] == export and figures['customers'] == 300
    for key in ('one_seconds', 'two_seconds', 'one_peak_rss_mb', 'two_peak_rss_mb',
                'two_over_one', 'input_mb'):
        assert figures[key] > 0, key
    assert lines[2].split()[0] == '300'


def test_the_stream_benchmark_prints_its_figures_and_a_json_last_line(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.stream', '--customers', '1000',
                           '--changes', '3000', '--rate', '500', '--seconds', '2',
                           '--soak-minutes', '0.1', '--soak-rate', '200',
                           '--workdir', str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures['throughput']['changes'] == 3000
    assert figures['throughput']['dead_letters'] == 0  # every update is lawful and well formed
    assert figures['soak']['changes'] > 0 and figures['soak']['rss_mb_samples'] is not None
    assert figures['throughput']['changes_per_s'] > 0 and figures['batch']['rows_per_s'] > 0
    assert figures['latency']['p99_s'] >= figures['latency']['p50_s'] > 0
    assert figures['latency']['withdrawals'] > 0
    assert figures['latency']['delivered_after_withdrawal'] == 0
    assert 'stream / batch:' in proc.stdout
