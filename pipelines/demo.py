"""`novation demo`: generate a seller export, keys and config, then migrate it."""

import importlib.resources
import os
import shutil
import tempfile
import time

from pipelines.demo_data import generate
from pipelines.migrate import run
from pipelines.summary import print_summary
from config import load_config
from transforms.common import progress
from transforms.keys.admin import init_keyring

__all__ = ['prepare_demo', 'run_demo', 'run_live']

LIVE_WAVES = 10         # waves of feed files the live demo lands, one a second
LIVE_PER_WAVE = 200     # events a wave

DEMO_CONFIG = 'demo.yaml'
DEMO_SCHEMAS = ('customers.avsc', 'contracts.avsc', 'repayments.avsc', 'collection_calls.avsc')


def prepare_demo(workdir: str, *, customers: int, seed: int):
    """Write exports, schemas, config and a cleartext keyring under ``workdir``."""
    os.makedirs(workdir, exist_ok=True)
    planted = generate(workdir, customers=customers, seed=seed,
                       on_step=lambda step: progress.note(f'generating the demo data: {step}'))
    os.makedirs(os.path.join(workdir, 'schemas'), exist_ok=True)
    for name in DEMO_SCHEMAS:
        with importlib.resources.as_file(importlib.resources.files('schemas') / name) as src:
            shutil.copyfile(src, os.path.join(workdir, 'schemas', name))
    with importlib.resources.as_file(importlib.resources.files('config') / DEMO_CONFIG) as src:
        shutil.copyfile(src, os.path.join(workdir, DEMO_CONFIG))
    config = os.path.join(workdir, DEMO_CONFIG)
    keys = os.path.join(workdir, 'keys')
    if not os.path.exists(os.path.join(keys, 'keyring.json')):
        init_keyring(keys, columns=sorted({rule.operator.key
                                           for table in load_config(config).tables
                                           for rule in table.rules
                                           if rule.operator.name == 'encrypt'}))
    return config, planted


def run_demo(*, workdir=None, customers=10_000, seed=20261123, beam_args=(), out=print,
             live=False):
    workdir = workdir or tempfile.mkdtemp(prefix='novation-demo-')
    started = time.monotonic()
    config, planted = prepare_demo(workdir, customers=customers, seed=seed)
    out(f'Demo seller export in {workdir}/exports: {planted.customers:,} customers (GBK CSV), '
        f'{planted.contracts:,} contracts (Parquet), repayments (JSON Lines), collection calls '
        f'(Avro), consent registry, erasure list ({time.monotonic() - started:.1f} s)')
    out('Keys: demo keyring in clear JSON (demo/test only) in '
        f'{workdir}/keys')
    result = run(['--config', config] + list(beam_args))
    print_summary(result.manifest, result.run_dir, result.seconds, out=out)
    out(f'Read it back: novation decrypt {result.run_dir} --keys {workdir}/keys '
        f'--table customers --out customers.csv')
    if live:
        run_live(workdir=workdir, config=config, snapshot=result.run_dir, planted=planted,
                 out=out)
    out(result.run_dir)
    return result, planted


def run_live(*, workdir, config, snapshot, planted, waves=LIVE_WAVES, per_wave=LIVE_PER_WAVE,
             wave_seconds=1.0, out=print):
    """After the snapshot run: stream the seller's changes while they land, then cut over.

    A thread lands ``waves`` waves of change and consent files under WORKDIR/feeds (see
    ``pipelines.demo_feed``), each committed in the second before it lands; the stream runs
    until the last has landed and its events are through, then writes the cut-over manifest.
    Returns the stream's summary and the plan of what landed."""
    import threading
    from pipelines.demo_feed import land_waves, plan_feed
    from pipelines.stream import print_stream_summary, run_stream
    started = time.time()
    plan = plan_feed(workdir, planted, start_ms=int((started - wave_seconds) * 1000),
                     waves=waves, per_wave=per_wave, wave_seconds=wave_seconds)
    out(f'Live changes: {waves} waves of change and consent files land in {workdir}/feeds, '
        f'one every {wave_seconds:g} s ({plan.changes:,} changes: updates, new customers and '
        f'contracts, repayments, deletes; {len(plan.withdrawn):,} withdrawals, '
        f'{len(plan.erased):,} erasures; late and out-of-order events, a malformed line, a '
        f'customer the seller never had), while the stream runs; cut-over after the last')
    stop = threading.Event()
    lander = threading.Thread(target=land_waves, args=(os.path.join(workdir, 'feeds'), plan),
                              kwargs={'started': started, 'stop': stop}, daemon=True)
    lander.start()
    try:
        summary = run_stream(['--config', config, '--snapshot', snapshot, '--seconds',
                              f'{waves * wave_seconds + 3:g}'])
    finally:
        stop.set()
        lander.join()
    print_stream_summary(summary, out=out)
    return summary, plan
