"""Throughput benchmark: Novation against a per-record baseline and an I/O ceiling, same data.

    python -m benchmarks.throughput [--customers N] [--runs R] [--workdir DIR]

On the demo's customers table (GBK CSV, generated once per size and reused), three pipelines
run one after another, each in its own process, R times:

- ``novation``: ``novation run`` end to end: read and decode, conform, duplicate check, consent
  gate, masking (hash, tokenize, date_shift, mask, generalize, redact, encrypt, drop: 14 of the
  21 fields change), encrypted Parquet, dead letters, manifest.
- ``baseline``: the same masking written the common way, one Python dict per row in a Beam
  pipeline (ReadFromText, csv, a keyed call per value), written as plain Parquet. It skips
  consent, duplicates and encryption, so the ratio is conservative.
- ``ceiling``: the same read and the same encrypted Parquet write with nothing in between.

Each figure is the wall time of the whole process (interpreter and Beam start-up included) and
its peak RSS; the medians over the runs are printed side by side, then the ratios, and last one
JSON object for scripts. This parent process imports nothing heavy and generates the data in a
child too: on Linux a child's peak RSS starts from its parent's size at fork.
"""

import argparse
import base64
import csv
import datetime
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

STAGES = ('novation', 'baseline', 'ceiling')
GENERATED_MAX = 1_000_000  # larger sizes repeat a generated export (see _repeat_exports)
CONFIG = 'bench.yaml'


# ---------------------------------------------------------------------------------------------
# Data


def prepare(workdir: str, customers: int) -> str:
    """Generate the customers export once per size; write the benchmark config and keys."""
    import yaml
    from pipelines.demo_data import generate
    from transforms.keys.admin import init_keyring
    stamp = os.path.join(workdir, 'customers.count')
    if not (os.path.exists(stamp) and open(stamp).read() == str(customers)):
        shutil.rmtree(os.path.join(workdir, 'exports'), ignore_errors=True)
        copies = max(1, customers // GENERATED_MAX)
        if customers > GENERATED_MAX and (customers % GENERATED_MAX or copies > 10):
            raise SystemExit(f'--customers above {GENERATED_MAX:,} must be a multiple of it, '
                             f'at most {10 * GENERATED_MAX:,}')
        generate(workdir, customers=customers // copies, seed=20261123, customers_only=True)
        if copies > 1:
            _repeat_exports(os.path.join(workdir, 'exports'), copies)
        with open(stamp, 'w') as f:
            f.write(str(customers))
    demo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'config',
                        'demo.yaml')
    doc = yaml.safe_load(open(demo, encoding='utf-8'))
    doc['tables'] = {'customers': doc['tables']['customers']}
    doc['masking']['fields'] = {k: v for k, v in doc['masking']['fields'].items()
                                if k.startswith('customers.')}
    doc['tables']['customers']['schema'] = _schema_path()
    with open(os.path.join(workdir, CONFIG), 'w', encoding='utf-8') as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
    if not os.path.exists(os.path.join(workdir, 'keys', 'keyring.json')):
        init_keyring(os.path.join(workdir, 'keys'), columns=['customers.monthly_income'])
    return os.path.join(workdir, CONFIG)


def _repeat_exports(exports: str, copies: int) -> None:
    """Make each export ``copies`` times as long: copy k repeats every line with its customer
    id's leading 'C0' made 'C<k>', so ids stay unique and each copy keeps its planted dirt,
    duplicates and consent cases. (The generator holds a table in memory; 10M rows would need
    about 18 GB.)"""
    for name in ('customers.csv', 'consent_registry.csv', 'erasure_requests.csv'):
        path = os.path.join(exports, name)
        with open(path, 'rb') as f:
            header, body = f.readline(), f.read()
        assert all(line.startswith(b'C0') for line in body.splitlines()[:1000]), name
        with open(path, 'wb') as f:
            f.write(header + body)
            for k in range(1, copies):
                f.write(b'\n'.join(b'C%d' % k + line[2:] if line.startswith(b'C0') else line
                                   for line in body.split(b'\n')))


def _schema_path():
    import importlib.resources
    return str(importlib.resources.files('schemas') / 'customers.avsc')


# ---------------------------------------------------------------------------------------------
# The three pipelines (each runs in a child process)


def run_prepare(workdir, customers):
    prepare(workdir, customers)
    return customers


def run_novation(workdir):
    from pipelines.migrate import run
    with tempfile.TemporaryDirectory(prefix='out-', dir=workdir) as out:
        result = run(['--config', os.path.join(workdir, CONFIG), '--output', out])
    return result.manifest['totals']['rows_read']


def run_baseline(workdir):
    """One Python dict per row: parse, mask field by field with a keyed call per value."""
    import apache_beam as beam
    from apache_beam import coders
    import pyarrow as pa
    from config import load_config
    from pipelines.launch import local_runner
    config = load_config(os.path.join(workdir, CONFIG))
    table = config.table('customers')
    header = open(table.path, 'rb').readline().decode('gbk').strip().split(',')
    schema = pa.schema([(name, pa.string()) for name in header if name != 'login_password_hash'])
    options, _ = _local_options(table.path)
    p = beam.Pipeline(runner=local_runner(options), options=options)
    with tempfile.TemporaryDirectory(prefix='baseline-', dir=workdir) as out:
        _ = (p
             | beam.io.ReadFromText(table.path, skip_header_lines=1, coder=coders.BytesCoder())
             | beam.Map(_parse_row, header)
             | beam.ParDo(_mask_row_fn(config.output.keys))
             | _counted()
             | beam.io.WriteToParquet(os.path.join(out, 'part'), schema, codec='zstd'))
        return _rows_counted(p)


def _local_options(path):
    """(options, workers): the worker processes ``novation run`` would choose for this input,
    so that all three pipelines use the same cores."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.launch import read_workers
    options = PipelineOptions([])
    return options, read_workers(options, os.path.getsize(path))  # a splittable GBK CSV


def _counted():
    """A step that counts the rows going through it (a batch counts its rows)."""
    import apache_beam as beam
    import pyarrow as pa
    counter = beam.metrics.Metrics.counter('benchmark', 'rows')

    def count(item):
        counter.inc(item.num_rows if isinstance(item, pa.RecordBatch) else 1)
        return item
    return 'CountRows' >> beam.Map(count)


def _rows_counted(pipeline) -> int:
    """Run the pipeline to the end; the rows its ``_counted`` step saw."""
    from apache_beam.metrics.metric import MetricsFilter
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name('rows'))['counters']
    return sum(c.committed for c in counters)


def _parse_row(line, header):
    values = next(csv.reader(io.StringIO(line.decode('gbk', errors='replace'))), [])
    return dict(zip(header, values))


def _mask_row_fn(keys):
    """The baseline's DoFn (defined in the child process, where Beam is imported)."""
    import apache_beam as beam

    class MaskRowFn(beam.DoFn):
        def __init__(self, keys):
            self._keys = keys

        def setup(self):
            # One Tink call per value, as per-record code does it; the domains and the
            # encodings are Novation's, so the outputs are the same as the product's.
            from tink import daead, prf
            from transforms.keys.crypto import PSEUDONYM_BYTES, _domain_prefix
            from transforms.keys.keyring import load_keyring
            self._domain, self._pseudonym_bytes = _domain_prefix, PSEUDONYM_BYTES
            keyring = load_keyring(self._keys, ('pseudonym', 'token'), warn=False)
            self._prf = keyring.primitive('pseudonym', prf.PrfSet).primary()
            self._daead = keyring.primitive('token', daead.DeterministicAead)

        def pseudonym(self, domain, value):
            return self._prf.compute(self._domain(domain) + value.encode(),
                                     self._pseudonym_bytes).hex()

        def token(self, domain, value):
            sealed = self._daead.encrypt_deterministically(value.encode(), self._domain(domain))
            return base64.urlsafe_b64encode(sealed).rstrip(b'=').decode('ascii')

        def day_shift(self, subject, max_days):
            r = int.from_bytes(self._prf.compute(self._domain('date_shift') + subject.encode(), 8),
                               'big') % (2 * max_days)
            return r - max_days if r < max_days else r - max_days + 1

        def process(self, row):
            subject = row.get('customer_id', '')
            out = dict(row)
            out.pop('login_password_hash', None)
            out['customer_id'] = self.pseudonym('customer_id', subject)
            out['email'] = self.pseudonym('email', row.get('email', ''))
            out['national_id'] = self.token('cn_resident_id', row.get('national_id', ''))
            out['bank_card'] = self.token('bank_card', row.get('bank_card', ''))
            name = row.get('name', '')
            out['name'] = name[:1] + '*' * max(len(name) - 1, 0)
            mobile = row.get('mobile', '')
            out['mobile'] = mobile[:3] + '****' + mobile[-4:] if len(mobile) > 7 else '*' * 7
            out['birth_date'] = row.get('birth_date', '')[:4]
            out['address'] = row.get('address', '')[:6]
            try:
                score = int(row.get('credit_score') or 0)
                out['credit_score'] = f'[{score // 50 * 50},{score // 50 * 50 + 50})'
                kyc = datetime.datetime.strptime(row.get('kyc_verified_on', ''), '%Y/%m/%d')
                shift = self.day_shift(subject, 30)
                out['kyc_verified_on'] = (kyc + datetime.timedelta(days=shift)).date().isoformat()
            except ValueError:
                out['credit_score'] = out['kyc_verified_on'] = None
            out['remarks'] = None
            yield out

    return MaskRowFn(keys)


def run_ceiling(workdir):
    """The same reader and the same encrypted Parquet writer, nothing between them."""
    import apache_beam as beam
    from config import load_config
    from pipelines.launch import local_runner
    from transforms.common.batches import strip_provenance
    from transforms.read.tables import ReadTable
    from transforms.write.sink import WriteEncryptedFiles
    config = load_config(os.path.join(workdir, CONFIG))
    table = config.table('customers')
    options, workers = _local_options(table.path)
    p = beam.Pipeline(runner=local_runner(options), options=options)
    with tempfile.TemporaryDirectory(prefix='ceiling-', dir=workdir) as out:
        _ = ((p | ReadTable(table, workers=workers))[ReadTable.ROWS]
             | beam.Map(strip_provenance)
             | _counted()
             | WriteEncryptedFiles(out, 'bench', 'data', 'customers',
                                   _RawParquet(table, config.output.keys)))
        return _rows_counted(p)


class _RawParquet:
    """The export's columns as read (text), under the PME master key of their classification."""
    suffix = '.parquet'

    def __init__(self, table, keys):
        import pyarrow as pa
        from transforms.keys.roles import data_role
        self._keys = keys
        self._schema = pa.schema([(f.name, pa.string()) for f in table.schema.fields])
        self._column_keys = {}
        for f in table.schema.fields:
            role = 'data.sensitive' if f.classification == 'restricted' else \
                data_role(f.classification)
            self._column_keys.setdefault(role, []).append(f.name)

    def open(self, handle, identity):
        import pyarrow.parquet as pq
        from transforms.keys.crypto import pme_encryption_properties
        from transforms.keys.keyring import cached_keyring
        keyring = cached_keyring(self._keys, sorted({'data.footer', *self._column_keys}))
        return handle, pq.ParquetWriter(handle, self._schema, compression='zstd',
                                        encryption_properties=pme_encryption_properties(
                                            keyring, self._column_keys, identity))

    def write(self, state, batch):
        import pyarrow as pa
        state[1].write_batch(pa.record_batch([batch.column(n) for n in self._schema.names],
                                             schema=self._schema))

    def close(self, state):
        state[1].close()
        state[0].close()


RUNNERS = {'novation': run_novation, 'baseline': run_baseline, 'ceiling': run_ceiling}
CHILD_STAGES = STAGES + ('prepare',)


# ---------------------------------------------------------------------------------------------
# Measuring


def measure(stage: str, workdir: str, customers: int) -> dict:
    """Run one stage in a child process: its rows, wall seconds and peak memory."""
    result = measure_command([sys.executable, '-m', 'benchmarks.throughput', '--stage', stage,
                              '--workdir', workdir, '--customers', str(customers)])
    rows = json.loads(result['stdout'].strip().splitlines()[-1])['rows']
    return {'rows': rows, 'seconds': result['seconds'], 'rows_per_s': rows / result['seconds'],
            'peak_rss_mb': result['peak_rss_mb']}


def measure_command(command) -> dict:
    """Run ``command`` in a child process: its wall seconds, peak memory and stdout.

    Peak memory is the largest sum of the resident sets of the child and all its descendants
    (Beam's worker processes), sampled every 0.1 s, and never less than the largest single
    process's peak as the kernel counts it.
    """
    started = time.monotonic()
    errors = tempfile.TemporaryFile()  # shown only if the command fails (Beam logs to stderr)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
    output = []
    reader = threading.Thread(target=lambda: output.append(child.stdout.read()), daemon=True)
    reader.start()
    tree_peak_kb = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        tree_peak_kb = max(tree_peak_kb, tree_rss_kb(child.pid))
        time.sleep(0.1)
    seconds = time.monotonic() - started
    reader.join()
    child.stdout.close()
    output = output[0].decode() if output else ''
    errors.seek(0)
    stderr = errors.read().decode(errors='replace')
    errors.close()
    if status != 0:
        raise SystemExit(f'benchmark command {" ".join(command[1:4])} ... failed (exit code '
                         f'{os.waitstatus_to_exitcode(status)}):\n{stderr[-2000:]}')
    return {'seconds': seconds, 'stdout': output,
            'peak_rss_mb': max(tree_peak_kb, usage.ru_maxrss) / 1024}


def tree_rss_kb(root: int) -> int:
    """Resident memory of ``root`` and all its descendants now, in KiB (Linux /proc)."""
    parents, rss = {}, {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                parents[int(entry)] = int(f.read().rsplit(')', 1)[1].split()[1])
            with open(f'/proc/{entry}/statm') as f:
                rss[int(entry)] = int(f.read().split()[1]) * os.sysconf('SC_PAGESIZE') // 1024
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier += children
    return sum(rss.get(pid, 0) for pid in tree)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.throughput',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--customers', type=int, default=1_000_000,
                        help='customers to generate (default 1000000; 10000000 for the '
                             'scaling check)')
    parser.add_argument('--runs', type=int, default=3, help='runs of each pipeline (median)')
    parser.add_argument('--workdir', help='data and scratch directory (default: a directory '
                                          'per size under the system temp dir, reused)')
    parser.add_argument('--only', choices=STAGES, action='append',
                        help='run only this pipeline (repeatable; e.g. for the 10M scaling '
                             'check: --only novation)')
    parser.add_argument('--stage', choices=CHILD_STAGES, help=argparse.SUPPRESS)  # children
    args = parser.parse_args(argv)
    if args.stage == 'prepare':
        print(json.dumps({'rows': run_prepare(args.workdir, args.customers)}))
        return 0
    if args.stage:
        print(json.dumps({'rows': RUNNERS[args.stage](args.workdir)}))
        return 0
    workdir = args.workdir or os.path.join(tempfile.gettempdir(),
                                           f'novation-bench-{args.customers}')
    os.makedirs(workdir, exist_ok=True)
    ready = measure('prepare', workdir, args.customers)
    print(f'data: {args.customers:,} customers in {workdir} (ready in {ready["seconds"]:.0f} s)',
          flush=True)
    stages = [s for s in STAGES if not args.only or s in args.only]
    results = {stage: [] for stage in stages}
    for k in range(args.runs):
        for stage in stages:
            results[stage].append(measure(stage, workdir, args.customers))
            r = results[stage][-1]
            print(f'  run {k + 1}/{args.runs} {stage:9s} {r["rows_per_s"]:>10,.0f} rows/s '
                  f'{r["seconds"]:7.1f} s {r["peak_rss_mb"]:7.0f} MB', flush=True)
    median = {stage: {key: statistics.median(r[key] for r in runs)
                      for key in ('rows_per_s', 'seconds', 'peak_rss_mb')}
              for stage, runs in results.items()}
    rows = results[stages[0]][0]['rows']
    print(f'\n{rows:,} rows (customers table, GBK CSV), median of {args.runs} run(s), '
          f'{os.cpu_count()} cores')
    print(f'  {"pipeline":10s} {"rows/s":>10s} {"wall s":>8s} {"peak RSS MB":>12s}')
    for stage in stages:
        m = median[stage]
        print(f'  {stage:10s} {m["rows_per_s"]:>10,.0f} {m["seconds"]:>8.1f} '
              f'{m["peak_rss_mb"]:>12.0f}')
    figures = {'rows': rows, 'customers': args.customers, 'runs': args.runs}
    for stage in stages:
        figures[f'{stage}_rows_per_s'] = round(median[stage]['rows_per_s'])
        figures[f'{stage}_seconds'] = round(median[stage]['seconds'], 2)
        figures[f'{stage}_peak_rss_mb'] = round(median[stage]['peak_rss_mb'])
    ratios = []
    for other in ('baseline', 'ceiling'):
        if 'novation' in median and other in median:
            ratio = median['novation']['rows_per_s'] / median[other]['rows_per_s']
            figures[f'novation_vs_{other}'] = round(ratio, 3)
            ratios.append(f'novation / {other}: ' +
                          (f'{ratio:.2f}x' if other == 'baseline' else f'{ratio:.0%}'))
    if ratios:
        print('  ' + '   '.join(ratios))
    print(json.dumps(figures))
    return 0


if __name__ == '__main__':
    sys.exit(main())
