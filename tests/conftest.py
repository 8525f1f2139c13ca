"""Shared fixtures: one demo run per test session (small, deterministic), fresh keyrings."""

import os

import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CUSTOMERS = 2000
# Tests that run whole pipelines end to end (through these fixtures, or a module marked
# ``slow``) are marked slow: ``pytest -m "not slow"`` runs the fast ones alone.
PIPELINE_FIXTURES = ('demo_run', 'demo_copy')


def pytest_collection_modifyitems(items):
    for item in items:
        if any(name in item.fixturenames for name in PIPELINE_FIXTURES):
            item.add_marker(pytest.mark.slow)


def keyring_without(keys: str, copy: str, role: str) -> str:
    """A copy of keyring ``keys`` at ``copy`` that lacks ``role`` (e.g. an analyst's keys)."""
    import json
    import shutil
    shutil.copytree(keys, copy)
    ring = json.load(open(os.path.join(copy, 'keyring.json')))
    os.remove(os.path.join(copy, ring['keysets'].pop(role)['file']))
    json.dump(ring, open(os.path.join(copy, 'keyring.json'), 'w'))
    return copy


def with_manifest_key_of(keys: str, other: str) -> str:
    """Keyring ``other`` given the manifest key of ``keys``: it checks that run's seals, and
    every other key of it is foreign."""
    import json
    import shutil
    ring, theirs = (json.load(open(os.path.join(k, 'keyring.json'))) for k in (keys, other))
    os.remove(os.path.join(other, theirs['keysets']['manifest']['file']))
    shutil.copy(os.path.join(keys, ring['keysets']['manifest']['file']), other)
    theirs['keysets']['manifest'] = ring['keysets']['manifest']
    json.dump(theirs, open(os.path.join(other, 'keyring.json'), 'w'))
    return other


def local_pipeline():
    """A TestPipeline on the in-process runner (no Prism download attempt)."""
    return TestPipeline(runner=FnApiRunner())


@pytest.fixture(scope='session')
def keys_dir(tmp_path_factory):
    from transforms.keys.admin import init_keyring
    path = str(tmp_path_factory.mktemp('keys') / 'keyring')
    init_keyring(path, columns=['customers.monthly_income'])  # the demo policy's encrypt
    return path


@pytest.fixture(scope='session')
def demo_run(tmp_path_factory):
    """The demo, prepared and migrated once: (workdir, planted truth, RunResult)."""
    from pipelines.demo import prepare_demo
    from pipelines.migrate import run
    workdir = str(tmp_path_factory.mktemp('demo'))
    config, planted = prepare_demo(workdir, customers=DEMO_CUSTOMERS, seed=7)
    result = run(['--config', config])
    return workdir, planted, result


@pytest.fixture
def demo_copy(tmp_path):
    """A fresh small demo workdir (exports, schemas, config, keys) without a run."""
    from pipelines.demo import prepare_demo
    workdir = str(tmp_path / 'demo')
    config, planted = prepare_demo(workdir, customers=200, seed=11)
    return workdir, config, planted


def user_lines(stderr: str) -> list:
    """The lines of stderr a test judges: not the warning every use of a cleartext keyring
    gives, nor progress (a line every 10 s on a slow machine: verdicts must not depend on
    speed)."""
    return [line for line in stderr.splitlines()
            if 'DEMO/TEST ONLY' not in line and not line.startswith('novation: progress: ')]


@pytest.fixture
def config(demo_copy):
    """The small demo's config, loaded."""
    from config import load_config
    return load_config(demo_copy[1])


@pytest.fixture
def scratch(tmp_path, keys_dir):
    """An empty scratch directory of run r1 under the fresh keyring."""
    from transforms.common.scratch import Scratch
    return Scratch(str(tmp_path / 'scratch'), keys_dir, 'r1')
