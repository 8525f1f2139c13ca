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
from transforms import progress
from transforms.keyring import init_keyring

__all__ = ['prepare_demo', 'run_demo']

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


def run_demo(*, workdir=None, customers=10_000, seed=20261123, beam_args=(), out=print):
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
    out(result.run_dir)
    return result, planted
