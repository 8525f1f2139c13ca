"""Worker benchmark: where does a local run gain from a second worker process?

    python -m benchmarks.workers [--customers 25000,50000,...] [--export demo|customers]
                                 [--runs R] [--workdir DIR] [--auto]

For each size, an export is generated once: ``demo``, the demo's whole export (customers as GBK
CSV, contracts as Parquet, repayments as JSON Lines, collection calls as Avro, the consent
registry), or ``customers``, the throughput benchmark's customers table alone (GBK CSV). Then
``novation run`` runs on it alternately in one process (``--direct_running_mode in_memory``), with
two worker processes (``--direct_num_workers 2 --direct_running_mode multi_processing``) and, with
``--auto``, as it chooses by itself, R times each, each run in its own process. It prints the median
wall time (start-up included) and peak memory (the child and its worker processes) of each, the
ratio, and last one JSON object for scripts. PARALLEL_MIN_BYTES in ``pipelines.migrate`` is set from
these figures.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchmarks import throughput
from benchmarks.throughput import measure_command

MODES = {
    'one': ['--direct_running_mode', 'in_memory'],
    'two': ['--direct_num_workers', '2', '--direct_running_mode', 'multi_processing'],
}
SIZES = (25_000, 50_000, 100_000, 200_000, 400_000)


def prepare(workdir: str, customers: int, export: str) -> tuple:
    """(config, input bytes) of the export of ``customers`` under ``workdir``, made once.
    Input bytes are the seller tables', as ``novation run`` counts them."""
    if export == 'customers':
        measure_command([sys.executable, '-m', 'benchmarks.throughput', '--stage', 'prepare',
                         '--workdir', workdir, '--customers', str(customers)])
        config = os.path.join(workdir, throughput.CONFIG)
        return config, os.path.getsize(os.path.join(workdir, 'exports', 'customers.csv'))
    config = os.path.join(workdir, 'demo.yaml')
    stamp = os.path.join(workdir, 'customers.count')
    if not (os.path.exists(stamp) and open(stamp).read() == str(customers)):
        subprocess.run([sys.executable, '-c', 'import sys; from pipelines.demo import '
                        'prepare_demo; prepare_demo(sys.argv[1], customers=int(sys.argv[2]), '
                        'seed=20261123)', workdir, str(customers)], check=True)
        with open(stamp, 'w') as f:
            f.write(str(customers))
    exports = os.path.join(workdir, 'exports')
    return config, sum(os.path.getsize(os.path.join(exports, name))
                       for name in os.listdir(exports)
                       if not name.startswith(('consent', 'erasure')))


def run_once(config: str, mode: str, workdir: str) -> dict:
    with tempfile.TemporaryDirectory(prefix='out-', dir=workdir) as out:
        flags = MODES.get(mode, [])
        return measure_command([sys.executable, '-m', 'pipelines.cli', 'run', '--config',
                                config, '--output', out, *flags])


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.workers',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--customers', default=','.join(map(str, SIZES)),
                        help='comma-separated sizes (default: %(default)s)')
    parser.add_argument('--export', choices=('demo', 'customers'), default='demo',
                        help="the demo's four tables, or the customers table alone (default: "
                             "%(default)s)")
    parser.add_argument('--runs', type=int, default=3, help='runs of each mode (median)')
    parser.add_argument('--workdir', help='data directory (default: one per size under the '
                                          'system temp dir, reused)')
    parser.add_argument('--auto', action='store_true',
                        help='also run the automatic choice of novation run')
    args = parser.parse_args(argv)
    modes = list(MODES) + (['auto'] if args.auto else [])
    figures = []
    print(f'{args.export} export, {os.cpu_count()} cores; median of {args.runs} run(s) of each '
          f'mode')
    print(f'  {"customers":>9s} {"input MB":>9s}' + ''.join(
        f' {m + " s":>8s} {m + " MB":>8s}' for m in modes) + f' {"two/one":>8s}')
    for customers in (int(c) for c in args.customers.split(',')):
        workdir = os.path.join(args.workdir or tempfile.gettempdir(),
                               f'novation-workers-{args.export}-{customers}')
        os.makedirs(workdir, exist_ok=True)
        config, input_bytes = prepare(workdir, customers, args.export)
        results = {mode: [] for mode in modes}
        for _ in range(args.runs):
            for mode in modes:  # alternating, so the machine's load falls on every mode
                results[mode].append(run_once(config, mode, workdir))
        median = {mode: {k: statistics.median(r[k] for r in runs)
                         for k in ('seconds', 'peak_rss_mb')}
                  for mode, runs in results.items()}
        ratio = median['two']['seconds'] / median['one']['seconds']
        print(f'  {customers:>9,} {input_bytes / 2**20:>9.0f}' + ''.join(
            f' {median[m]["seconds"]:>8.1f} {median[m]["peak_rss_mb"]:>8.0f}' for m in modes)
            + f' {ratio:>8.2f}', flush=True)
        figures.append({'export': args.export, 'customers': customers,
                        'input_mb': round(input_bytes / 2**20, 1),
                        **{f'{m}_seconds': round(median[m]['seconds'], 2) for m in modes},
                        **{f'{m}_peak_rss_mb': round(median[m]['peak_rss_mb']) for m in modes},
                        'two_over_one': round(ratio, 3)})
    print(json.dumps(figures))
    return 0


if __name__ == '__main__':
    sys.exit(main())
