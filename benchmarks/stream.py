"""Stream benchmark: sustained changes per second, end-to-end latency at a steady load, changes
delivered after a withdrawal, and the batch pipeline's rows/s on the same events, in one run.

    python -m benchmarks.stream [--customers N] [--changes K] [--rate R] [--seconds S]
                                [--soak-minutes M] [--soak-rate R2] [--workdir DIR]

On the demo seller (N customers, migrated once as the snapshot), ``novation stream`` runs in a
child process, as a user runs it, three times:

- ``throughput``: once the stream is running (a first change file committed), K customer
  updates land at once, in files of 10,000 lines; the figure is K over the time from their
  landing until the epochs holding all of them are committed.
- ``latency``: R changes a second land for S seconds, a file every 0.2 s, committed just
  before it lands; every 100th customer withdraws their consent and changes again after it.
  Latency is, per change, the time from its file landing until the manifest of the epoch
  holding it is written (p50, p99, max). The delivery is then decrypted and every row of a
  customer who withdrew is checked against the withdrawal's time: none may come after it.
- ``soak`` (with ``--soak-minutes``): R2 changes a second for M minutes, as ``latency``, its
  resident memory sampled every 10 s: flat after the first 5 minutes is the target (under
  600 MB), with the changes/s sustained and the lag percentiles.
- ``batch``: the same K updates' rows as a JSON Lines export, migrated by ``novation run``
  (the whole process, interpreter and Beam start-up included, as ``benchmarks.throughput``
  measures it).
- ``state``: the consent and key order steps' DoFns called directly on K updates, in batches
  of 1,000 events (a steady load's file) and of a full release batch, their state encrypted
  (as the stream keeps it) and, as the baseline, pickled in clear: the encryption's cost.

Peak memory is the largest resident set of the child process tree. The last line is one JSON
object for scripts. Targets (issue 16): at least 20,000 changes/s; p99 under 5 s at 5,000/s;
no change delivered after a withdrawal.
"""

import argparse
import collections
import datetime
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.throughput import measure_command, tree_rss_kb
from transforms.stream.feeds import RELEASE_BATCH

FILE_LINES = 10_000
TICK = 0.2  # seconds between files at a steady load
# the demo feed's Debezium updates carry decimals as text (decimal.handling.mode=string)
STREAM = {'epoch_seconds': 1, 'lateness_seconds': 0.5, 'idle_seconds': 1, 'poll_seconds': 0.2,
          'decimal_handling_mode': 'string'}
SAMPLE_SECONDS = 10  # the soak's memory samples


def prepare(workdir: str, customers: int):
    """The demo seller, migrated once (the snapshot); its config with the benchmark's feed
    timings. Returns (config, snapshot run directory, customers' rows, the allowed ids)."""
    import yaml
    from pipelines.demo import prepare_demo
    from pipelines.demo_feed import _allowed, customer_rows
    from pipelines.migrate import run
    config, planted = prepare_demo(workdir, customers=customers, seed=20261203)
    with open(config, encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    doc['stream'] = {'changes': 'feeds/changes/*.jsonl', 'consent': 'feeds/consent/*.jsonl',
                     **STREAM}
    with open(config, 'w', encoding='utf-8') as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
    snapshot = run(['--config', config]).run_dir
    rows = customer_rows(workdir)
    ids = {r['customer_id'] for r in rows}
    allowed = [s for s in _allowed(planted) if s in ids]
    bad = planted.bad_rows.get('customers', {})
    clean = [r for n, r in enumerate(rows, 1) if n not in bad]
    allowed = [s for s in allowed if s in {r['customer_id'] for r in clean}]
    return config, snapshot, clean, allowed


class Stream:
    """``novation stream`` in a child process, with its peak memory sampled. Each measurement
    is a new stream over the same snapshot: it says that it replaces the one before (a second
    stream over a snapshot must say what it is to the first)."""
    _last = {}  # workdir -> the stream started last there

    def __init__(self, workdir, config, snapshot, run_id):
        self.dir = os.path.join(workdir, 'out', run_id)
        self._errors = tempfile.TemporaryFile()
        before = Stream._last.get(workdir)
        Stream._last[workdir] = run_id
        self._child = subprocess.Popen(
            [sys.executable, '-m', 'pipelines.cli', 'stream', '--config', config, '--snapshot',
             snapshot, '--run-id', run_id, '--seconds', '3600']
            + (['--replaces', before] if before else []),
            stdout=subprocess.DEVNULL, stderr=self._errors)
        self.peak_kb = 0
        self.samples = []  # (seconds since start, resident KB), every SAMPLE_SECONDS
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        started = last = time.time()
        while self._sampling and self._child.poll() is None:
            rss = tree_rss_kb(self._child.pid)
            self.peak_kb = max(self.peak_kb, rss)
            if time.time() - last >= SAMPLE_SECONDS:
                last = time.time()
                self.samples.append((last - started, rss))
            time.sleep(0.1)

    def manifests(self):
        """The epoch manifests committed so far, with the time each was written."""
        out = []
        for path in glob.glob(os.path.join(self.dir, 'epochs', '*', 'manifest.json')):
            try:
                out.append((os.path.getmtime(path), json.load(open(path, encoding='utf-8'))))
            except (OSError, ValueError):
                continue  # being renamed into place
        return sorted(out, key=lambda m: m[1]['epoch'])

    def changes_committed(self) -> int:
        """Change events with an outcome in committed epochs (delivered, a dead letter, a
        repeat or superseded)."""
        return sum(n for _, m in self.manifests() for counts in m['outcomes'].values()
                   for outcome, n in counts.items()
                   if outcome in ('delivered', 'dead_letter', 'repeat', 'superseded'))

    def dead_letters(self) -> int:
        return sum(sum(t['dead_letters'].values()) for _, m in self.manifests()
                   for t in m['tables'].values())

    def wait_for(self, changes: int, timeout: float) -> float:
        """Wait until ``changes`` are in committed epochs; the time that happened."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._check_alive()
            if self.changes_committed() >= changes:
                return time.time()
            time.sleep(0.05)
        raise SystemExit(f'the stream committed {self.changes_committed():,} of {changes:,} '
                         f'changes in {timeout:.0f} s')

    def stop(self):
        self._check_alive()
        self._child.send_signal(signal.SIGTERM)  # drain: the open epoch commits
        self._child.wait(timeout=120)
        self._sampling = False
        self._check(self._child.returncode)

    def _check_alive(self):
        if self._child.poll() is not None:
            self._check(self._child.returncode, always=True)

    def _check(self, code, always=False):
        if code != 0 or always:
            self._errors.seek(0)
            raise SystemExit(f'novation stream ended (exit code {code}):\n'
                             f'{self._errors.read().decode(errors="replace")[-2000:]}')


def land(directory, name, lines):
    """Write a feed file whole, then rename it into the watched place; the landing time."""
    os.makedirs(directory, exist_ok=True)
    temp = os.path.join(directory, f'.{name}.tmp')
    with open(temp, 'w', encoding='utf-8') as f:
        f.write(''.join(line + '\n' for line in lines))
    os.rename(temp, os.path.join(directory, f'{name}.jsonl'))
    return time.time()


def warm_up(stream, feeds, rows, allowed):
    """Land one change and wait until its epoch commits: the stream is running."""
    from pipelines.demo_feed import customer_updates
    land(os.path.join(feeds, 'changes'), 'warm-up', customer_updates(
        rows, allowed[:1], int(time.time() * 1000) - 1000, 1, first_position=1))
    stream.wait_for(1, timeout=300)


def run_throughput(workdir, config, snapshot, rows, allowed, changes):
    from pipelines.demo_feed import customer_updates
    feeds = _fresh_feeds(workdir)
    stream = Stream(workdir, config, snapshot, 'bench-throughput')
    warm_up(stream, feeds, rows, allowed)
    subjects = [allowed[n % len(allowed)] for n in range(changes)]
    now = int(time.time() * 1000)
    lines = customer_updates(rows, subjects, now - 10_000, 10_000, first_position=10)
    files = [lines[i:i + FILE_LINES] for i in range(0, len(lines), FILE_LINES)]
    staged = os.path.join(feeds, 'staged')
    for n, chunk in enumerate(files):  # written first, so landing them is only renames
        land(staged, f'backlog-{n:04d}', chunk)
    landed = time.time()
    for name in sorted(os.listdir(staged)):
        os.rename(os.path.join(staged, name), os.path.join(feeds, 'changes', name))
    done = stream.wait_for(1 + changes, timeout=600)
    stream.stop()
    seconds = done - landed
    return {'changes': changes, 'seconds': round(seconds, 2),
            'dead_letters': stream.dead_letters(),
            'changes_per_s': round(changes / seconds), 'peak_rss_mb': stream.peak_kb // 1024,
            'after_rows': lines}


def run_latency(workdir, config, snapshot, rows, allowed, rate, seconds,
                run_id='bench-latency', most_withdrawals=None):
    """``most_withdrawals``: stop withdrawing after that many (a long soak would otherwise
    withdraw every customer, and measure refusals)."""
    from pipelines.demo_feed import customer_updates
    feeds = _fresh_feeds(workdir)
    stream = Stream(workdir, config, snapshot, run_id)
    warm_up(stream, feeds, rows, allowed)
    per_file = max(1, int(rate * TICK))
    files = int(seconds / TICK)
    landed, withdrawn, position = {}, {}, 10
    cursor = 1  # allowed[0] was the warm-up's
    started = time.time()
    for n in range(files):
        wait = started + n * TICK - time.time()
        if wait > 0:
            time.sleep(wait)
        now = int(time.time() * 1000)
        subjects = [allowed[(cursor + k) % len(allowed)] for k in range(per_file)]
        cursor += per_file
        lines = customer_updates(rows, subjects, now - int(TICK * 1000), int(TICK * 1000),
                                 first_position=position)
        position += per_file
        consent = []
        for k in range(0, per_file, 100):  # every 100th customer withdraws, then changes
            subject = subjects[k]
            if subject in withdrawn or len(withdrawn) == most_withdrawals:
                continue
            at = now - int(TICK * 1000) + k * int(TICK * 1000) // per_file
            withdrawn[subject] = at
            consent.append(json.dumps({'subject_id': subject, 'event': 'withdraw',
                                       'purpose': 'credit_management', 'at': at,
                                       'position': len(withdrawn)}))
            lines += customer_updates(rows, [subject], at + 1, 1, first_position=position)
            position += 1
        if consent:
            land(os.path.join(feeds, 'consent'), f'c-{n:05d}', consent)
        name = f'steady-{n:05d}'
        landed[f'data/{name}.jsonl'] = (  # as the epochs name a file of the changes feed
            land(os.path.join(feeds, 'changes'), name, lines), len(lines))
    total = sum(n for _, n in landed.values())
    stream.wait_for(1 + total, timeout=300)
    stream.stop()
    latencies = []
    for written, manifest in stream.manifests():
        for entry in manifest.get('consumed', []):
            if entry['path'] in landed:
                count = sum(last - first + 1 for first, last in entry['lines'])
                latencies += [written - landed[entry['path']][0]] * count
    latencies.sort()
    after = delivered_after_withdrawal(stream.dir, os.path.dirname(config), withdrawn)
    settled = [kb for at, kb in stream.samples if at >= 300]  # after the first 5 minutes
    return {'rate': rate, 'seconds': seconds, 'changes': total,
            'changes_per_s': round(total / seconds), 'dead_letters': stream.dead_letters(),
            'rss_mb_samples': [(round(at), kb // 1024) for at, kb in stream.samples],
            'rss_mb_after_5_min': {'first': settled[0] // 1024, 'max': max(settled) // 1024,
                                   'last': settled[-1] // 1024} if settled else None,
            'p50_s': round(_percentile(latencies, 50), 2),
            'p99_s': round(_percentile(latencies, 99), 2), 'max_s': round(latencies[-1], 2),
            'withdrawals': len(withdrawn), 'delivered_after_withdrawal': after,
            'peak_rss_mb': stream.peak_kb // 1024}


def delivered_after_withdrawal(stream_dir, workdir, withdrawn) -> int:
    """Rows delivered (decrypted) of a customer committed after their withdrawal."""
    from transforms.keys.crypto import keyed_ops
    from transforms.write.delivered import parquet_file
    from transforms.keys.keyring import load_keyring
    keyring = load_keyring(os.path.join(workdir, 'keys'), warn=False)
    pseudonym = keyed_ops(keyring).pseudonym
    at = {pseudonym('customer_id', s): datetime.datetime.fromtimestamp(
        ms / 1000, datetime.timezone.utc) for s, ms in withdrawn.items()}
    run_id, after = os.path.basename(stream_dir), 0
    for path in glob.glob(os.path.join(stream_dir, 'epochs', '*', 'manifest.json')):
        for f in json.load(open(path, encoding='utf-8'))['files']:
            if f['kind'] != 'data':
                continue
            table = parquet_file(os.path.join(stream_dir, f['path']), keyring,
                                 f'{run_id}/{f["path"]}').read(columns=['customer_id',
                                                                        '__committed_at'])
            for subject, committed in zip(table.column(0).to_pylist(),
                                          table.column(1).to_pylist()):
                if subject in at and committed > at[subject]:
                    after += 1
    return after


def run_batch(workdir, config, after_rows):
    """The throughput phase's rows as a JSON Lines export, migrated by novation run."""
    import yaml
    export = os.path.join(workdir, 'bench-batch', 'customers.jsonl')
    os.makedirs(os.path.dirname(export), exist_ok=True)
    with open(export, 'w', encoding='utf-8') as f:
        for line in after_rows:
            f.write(json.dumps(json.loads(line)['after'], ensure_ascii=False) + '\n')
    with open(config, encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    customers = doc['tables']['customers']
    customers.update(path=export, format='jsonl')
    customers.pop('encoding', None)
    doc['tables'] = {'customers': customers}
    doc['masking']['fields'] = {k: v for k, v in doc['masking']['fields'].items()
                                if k.startswith('customers.')}
    doc.pop('stream', None)
    # an update log holds a customer many times: the batch keeps the latest and refuses the
    # rest as duplicates, each still read and checked; none of that may abort the run
    doc['deadletter'] = {'max_ratio': 1.0}
    batch_config = os.path.join(workdir, 'bench-batch.yaml')
    with open(batch_config, 'w', encoding='utf-8') as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
    result = measure_command([sys.executable, '-m', 'pipelines.cli', 'run', '--config',
                              batch_config, '--output', os.path.join(workdir, 'bench-batch',
                                                                     'out')])
    rows = len(after_rows)
    run = re.search(r' in ([\d.]+) s \(', result['stdout'])  # the run itself, from its summary
    return {'rows': rows, 'seconds': round(result['seconds'], 2),
            'rows_per_s': round(rows / result['seconds']),
            'run_seconds': float(run.group(1)),
            'run_rows_per_s': round(rows / float(run.group(1))),
            'peak_rss_mb': round(result['peak_rss_mb'])}


class _Kept:
    """A DoFn's bag state in memory, as the runner keeps it."""

    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)

    def read(self):
        return list(self.items)

    def clear(self):
        self.items = []


def run_state(keys, rows, changes, batch):
    """The consent and key order steps' DoFns called directly on ``changes`` updates of
    ``rows``' customers (each granted first), in batches of ``batch`` events, their state kept
    encrypted (``StateCipher``) and, as the baseline, pickled in clear: seconds for each, and
    the bytes the state holds."""
    import pickle
    from config.loader import Purpose, Transfer
    from transforms.stream.changes import Change
    from transforms.consent.events import ConsentEvent
    from transforms.keys.crypto import StateCipher
    from transforms.stream.order import _by_row, _KeyOrderFn
    from transforms.stream.consent import (SHARDS, ChangeEvent, _by_shard,
                                           _ConsentInOrderFn, Routed)

    class Clear(StateCipher):
        """The baseline: state pickled in clear, as it was before issue 30."""

        def dumps(self, value, place):
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

        def loads(self, data, place):
            return pickle.loads(data)

    transfer = Transfer('S', 'A', (Purpose('credit', 'consent'),), 'CN', 'CN')
    subjects = sorted({r['customer_id'] for r in rows})
    events = [(s, ConsentEvent(s, 'grant', 'credit', 1, 0)) for s in subjects]
    for i in range(changes):
        row = rows[i % len(rows)]
        events.append((row['customer_id'], ChangeEvent(
            Change('customers', 'u', row, 10 + i, 'lsn', (i,), f'lsn:{i}'), 'bench.jsonl', i, 0,
            row['customer_id'])))
    batches = [Routed(tuple(events[i:i + batch])) for i in range(0, len(events), batch)]
    out = {}
    ciphers = (('clear', Clear(keys, 'bench')), ('encrypted', StateCipher(keys, 'bench')))
    for name, cipher in ciphers:
        consent = _ConsentInOrderFn(transfer.legal_bases, transfer.cross_border, ('customers',),
                                    None, True, 0, cipher)
        order = _KeyOrderFn(cipher)
        consent.setup()
        order.setup()
        logs = collections.defaultdict(_Kept)
        started = time.perf_counter()
        for routed in batches:
            for shard, pairs in _by_shard(routed, SHARDS):
                for decided in consent.process((shard, pairs), log=logs['c' + shard],
                                               pending=None, due=None, timer=None):
                    for key, part in _by_row(decided, SHARDS):
                        for _ in order.process((key, part), log=logs['k' + key]):
                            pass
        out[name] = {'seconds': time.perf_counter() - started,
                     'state_bytes': sum(len(c) for bag in logs.values() for c in bag.items)}
    return out


def _fresh_feeds(workdir):
    feeds = os.path.join(workdir, 'feeds')
    shutil.rmtree(feeds, ignore_errors=True)
    for kind in ('changes', 'consent'):
        os.makedirs(os.path.join(feeds, kind))
    return feeds


def _percentile(values, p):
    if not values:
        return float('nan')
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks.stream',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--customers', type=int, default=20_000,
                        help='demo customers, migrated once as the snapshot (default 20000)')
    parser.add_argument('--changes', type=int, default=200_000,
                        help='updates landed at once for the throughput figure (default 200000)')
    parser.add_argument('--rate', type=int, default=5_000,
                        help='changes a second for the latency figure (default 5000)')
    parser.add_argument('--seconds', type=float, default=20,
                        help='how long the steady load lasts (default 20)')
    parser.add_argument('--soak-minutes', type=float, default=0,
                        help='run the soak for this long (default 0: no soak)')
    parser.add_argument('--soak-rate', type=int, default=2_000,
                        help='changes a second during the soak (default 2000)')
    parser.add_argument('--workdir', help='where the demo, feeds and streams go (default: a new '
                                          'temporary directory, removed at the end)')
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix='novation-stream-bench-')
    try:
        print(f'preparing the demo seller: {args.customers:,} customers, migrated once',
              flush=True)
        config, snapshot, rows, allowed = prepare(workdir, args.customers)
        print(f'throughput: {args.changes:,} updates landing at once ...', flush=True)
        throughput = run_throughput(workdir, config, snapshot, rows, allowed, args.changes)
        after_rows = throughput.pop('after_rows')
        print(f'latency: {args.rate:,} changes/s for {args.seconds:g} s ...', flush=True)
        latency = run_latency(workdir, config, snapshot, rows, allowed, args.rate,
                              args.seconds)
        soak = None
        if args.soak_minutes:
            print(f'soak: {args.soak_rate:,} changes/s for {args.soak_minutes:g} minutes ...',
                  flush=True)
            soak = run_latency(workdir, config, snapshot, rows, allowed, args.soak_rate,
                               args.soak_minutes * 60, run_id='bench-soak',
                               most_withdrawals=len(allowed) // 20)
        print(f'batch: the same {args.changes:,} rows through novation run ...', flush=True)
        batch = run_batch(workdir, config, after_rows)
        print('state: the consent and key order steps, their state encrypted and in clear ...',
              flush=True)
        state = {n: run_state(os.path.join(workdir, 'keys'), rows, args.changes, n)
                 for n in (1_000, RELEASE_BATCH)}
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f'\n{os.cpu_count()} cores, {args.customers:,} customers in the snapshot')
    print(f'  {"pipeline":22s} {"rate":>14s} {"wall s":>8s} {"peak RSS MB":>12s}')
    print(f'  {"stream (sustained)":22s} {throughput["changes_per_s"]:>9,} ch/s '
          f'{throughput["seconds"]:>8.1f} {throughput["peak_rss_mb"]:>12,}')
    print(f'  {"batch (novation run)":22s} {batch["rows_per_s"]:>7,} rows/s '
          f'{batch["seconds"]:>8.1f} {batch["peak_rss_mb"]:>12,}   (whole process)')
    print(f'  {"batch, the run itself":22s} {batch["run_rows_per_s"]:>7,} rows/s '
          f'{batch["run_seconds"]:>8.1f}                (as its summary times it)')
    print(f'  stream / batch: {throughput["changes_per_s"] / batch["rows_per_s"]:.2f}x '
          f'(whole process), {throughput["changes_per_s"] / batch["run_rows_per_s"]:.2f}x '
          f'(the run itself)')
    print(f'  latency at {latency["rate"]:,} changes/s ({latency["changes"]:,} changes): '
          f'p50 {latency["p50_s"]:.2f} s, p99 {latency["p99_s"]:.2f} s, max '
          f'{latency["max_s"]:.2f} s; peak {latency["peak_rss_mb"]:,} MB')
    print(f'  changes delivered after their customer\'s withdrawal: '
          f'{latency["delivered_after_withdrawal"]} (of {latency["withdrawals"]} withdrawals)')
    print(f'  dead letters: {throughput["dead_letters"]:,} of the throughput run\'s lawful '
          f'updates; {latency["dead_letters"]:,} in the latency run (the changes made after '
          f'a withdrawal)')
    if soak:
        settled = soak['rss_mb_after_5_min'] or {}
        print(f'  soak at {soak["rate"]:,} changes/s for {soak["seconds"] / 60:g} min '
              f'({soak["changes"]:,} changes, {soak["changes_per_s"]:,}/s sustained): lag p50 '
              f'{soak["p50_s"]:.2f} s, p99 {soak["p99_s"]:.2f} s; resident MB after 5 min: '
              f'first {settled.get("first")}, max {settled.get("max")}, last '
              f'{settled.get("last")} (target: flat, under 600)')
    for size, figures in state.items():
        clear, sealed = figures['clear']['seconds'], figures['encrypted']['seconds']
        print(f'  state encrypted, batches of {size:,}: consent + key order {sealed:.2f} s '
              f'against {clear:.2f} s in clear ({sealed / clear:.2f}x; '
              f'{(sealed - clear) / args.changes * 1e6:.1f} us a change, '
              f'{(sealed - clear) / args.changes * throughput["changes_per_s"]:.1%} of the '
              f'stream\'s time a change)')
    print(json.dumps({'cores': os.cpu_count(), 'customers': args.customers,
                      'throughput': throughput, 'latency': latency, 'soak': soak,
                      'batch': batch, 'state': state}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
