"""The same `novation run` on other runners, proven without a cloud account.

- Dataflow: the demo's job is built by the real DataflowRunner in dry-run mode, with the network
  cut off, and the job holds every step and the sdist workers install.
- Beam's PortableRunner (embedded job service, loopback workers) and the local runner with two
  worker processes: the demo gives the same decrypted outputs, counts and pseudonyms as the
  in-process local runner on the same input and keys.
"""

import json
import os
import re
import socket
import tarfile

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.pipeline_context import PipelineContext

from tests.conftest import ROOT, user_lines
from pipelines.decrypt import read_deadletters, read_table
from pipelines.launch import DATAFLOW_READ_WORKERS, read_workers
from pipelines.migrate import run
from transforms.common.errors import ConfigError

pytestmark = pytest.mark.slow  # other runners, job graphs and worker processes

DATAFLOW = ['--runner', 'DataflowRunner', '--dry_run=True', '--no_auth',
            '--sdk_location', 'container', '--project', 'novation-ci',
            '--region', 'europe-west1', '--temp_location', 'gs://novation-ci-temp/tmp',
            '--staging_location', 'gs://novation-ci-temp/staging']
TABLES = ('Customers', 'Contracts', 'Repayments', 'CollectionCalls')


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f'network access attempted: {args[1:] or kwargs}')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


def test_the_dataflow_job_is_built_offline(demo_copy, no_network):
    _, config, _ = demo_copy
    result = run(['--config', config, *DATAFLOW,
                  '--setup_file', os.path.join(ROOT, 'setup.py')])
    assert result.status == 'dry-run' and result.manifest is None
    assert not os.path.exists(result.run_dir)  # nothing ran
    job = result.pipeline_result.job
    options = job.options.get_all_options()
    assert (options['project'], options['region']) == ('novation-ci', 'europe-west1')
    assert json.loads(job.json())['type'] == 'JOB_TYPE_BATCH'
    steps = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    expected = {'ConsentDecisions', 'Commit', 'Commit/Write', 'AllCounts', 'AllFiles'} | {
        f'{step}{table}' for table in TABLES for step in (
            'Read', 'Conform', 'Consent', 'Mask', 'Write', 'WriteDeadLetters')} | {
        'DedupCustomers', 'DedupCustomers/Park', 'DedupCustomers/Unpark', 'DedupRepayments',
        'DedupContracts',
        'WriteCustomers/Files/Finalize'}
    assert expected <= steps, sorted(expected - steps)
    # Beam samples each step's output size by encoding elements: batches must get their own
    # coder, not the pickle fallback (run() turns Beam's type inference off)
    components = job.proto_pipeline.components
    coders = PipelineContext(components).coders
    batch_steps = {t.unique_name: coders.get_by_id(
        components.pcollections[t.outputs['None']].coder_id).__class__.__name__
        for t in components.transforms.values()
        if not t.subtransforms and re.search(
            r'/(ReadBatches|Cast|Unpark|Drop|Gate|Apply|Count)(/ParDo\(\w+\))?$', t.unique_name)}
    # per table: read, conform, gate, mask, count; the three with a primary key also take
    # their rows back from scratch and drop duplicates
    assert len(batch_steps) == 4 * 5 + 3 * 2, sorted(batch_steps)
    assert set(batch_steps.values()) == {'RecordBatchCoder'}
    [environment] = job.proto_pipeline.components.environments.values()
    assert environment.urn == 'beam:env:docker:v1'
    staged = {}
    for dependency in environment.dependencies:
        role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
            dependency.role_payload)
        staged[role.staged_name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(
            dependency.type_payload).path
    # workers install the project from this sdist: code, schemas and the demo config included
    with tarfile.open(staged['workflow.tar.gz']) as sdist:
        names = {n.split('/', 1)[1] for n in sdist.getnames() if '/' in n}
    assert {'setup.py', 'README.md', 'pipelines/migrate.py', 'transforms/keys/keyring.py',
            'schemas/customers.avsc', 'config/demo.yaml'} <= names


def test_the_dataflow_streaming_job_reads_pub_sub_and_is_built_offline(demo_copy, no_network):
    import yaml
    from apache_beam.portability import common_urns
    from pipelines.stream import run_stream
    _, config, _ = demo_copy
    with open(config, encoding='utf-8') as f:
        doc = yaml.safe_load(f)
    doc['stream'].update(changes='projects/seller-cdc/subscriptions/novation-changes',
                         consent='projects/seller-cdc/subscriptions/novation-consent',
                         timestamp_attribute='committed_at')
    with open(config, 'w', encoding='utf-8') as f:
        yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
    summary = run_stream(['--config', config, *DATAFLOW, '--run-id', 'live',
                          '--setup_file', os.path.join(ROOT, 'setup.py')])
    assert summary['status'] == 'dry-run' and not os.path.exists(summary['stream_dir'])
    job = summary['result'].job
    assert json.loads(job.json())['type'] == 'JOB_TYPE_STREAMING'
    transforms = job.proto_pipeline.components.transforms.values()
    steps = {t.unique_name for t in transforms}
    assert {'Watch/Watch', 'ReadData/Read', 'ReadConsent/Read', 'Join', 'Route',
            'ConsentInOrder/InOrder', 'Epochs/Deliver', 'Epochs/Commit'} <= steps, sorted(steps)
    # both subscriptions are read by Dataflow's own Pub/Sub source, with the commit times
    reads = [t for t in transforms if t.spec.urn == common_urns.composites.PUBSUB_READ.urn]
    payloads = [beam_runner_api_pb2.PubSubReadPayload.FromString(t.spec.payload) for t in reads]
    assert sorted((p.subscription, p.timestamp_attribute) for p in payloads) == [
        ('projects/seller-cdc/subscriptions/novation-changes', 'committed_at'),
        ('projects/seller-cdc/subscriptions/novation-consent', 'committed_at')]


def test_dataflow_refuses_paths_its_workers_cannot_read(demo_copy, no_network):
    _, config, _ = demo_copy
    live = [a for a in DATAFLOW if a != '--dry_run=True']
    with pytest.raises(ConfigError, match=r'tables.customers.path: .* is on this machine, which '
                                          r'Dataflow workers cannot read; use a gs:// path'):
        run(['--config', config, *live])


def test_dataflow_needs_a_temp_location_for_its_scratch_files(demo_copy, no_network):
    _, config, _ = demo_copy
    live = [a for a in DATAFLOW if a != '--dry_run=True' and not a.startswith('gs://')
            and a not in ('--temp_location', '--staging_location')]
    with pytest.raises(ConfigError, match=r'a Dataflow run needs --temp_location=gs://'):
        run(['--config', config, *live])


def rows(table) -> list:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


OTHER_RUNS = {
    'portable runner': ['--runner', 'PortableRunner', '--job_endpoint', 'embed',
                        '--environment_type', 'LOOPBACK'],
    'two worker processes': ['--direct_num_workers=2', '--direct_running_mode=multi_processing'],
}


def test_other_runners_deliver_what_the_local_runner_delivers(demo_copy):
    workdir, config, _ = demo_copy
    keys = os.path.join(workdir, 'keys')
    local = run(['--config', config])
    for how, flags in OTHER_RUNS.items():
        other = run(['--config', config] + flags)
        assert other.status == 'done', how
        strip = ('files', 'deadletter_files')
        assert {n: {k: v for k, v in t.items() if k not in strip}
                for n, t in other.manifest['tables'].items()} == \
            {n: {k: v for k, v in t.items() if k not in strip}
             for n, t in local.manifest['tables'].items()}, how
        assert other.manifest['totals'] == local.manifest['totals'], how
        for name in local.manifest['tables']:
            mine, _ = read_table(other.run_dir, keys=keys, table=name)
            theirs, _ = read_table(local.run_dir, keys=keys, table=name)
            assert mine.num_rows > 0 and rows(mine) == rows(theirs), (how, name)
            assert sorted(map(json.dumps, read_deadletters(other.run_dir, keys=keys,
                                                           table=name))) \
                == sorted(map(json.dumps, read_deadletters(local.run_dir, keys=keys,
                                                           table=name))), (how, name)


MB = 1 << 20


@pytest.mark.parametrize('flags, input_mb, cores, workers, mode', [
    ([], 10, 2, 1, 'in_memory'),                  # small: start-up would cost more
    ([], 127, 2, 1, 'in_memory'),                 # just below PARALLEL_MIN_BYTES
    ([], 128, 2, 2, 'multi_processing'),          # large: one process per core
    ([], 300, 1, 1, 'in_memory'),
    (['--direct_num_workers=1'], 300, 2, 1, 'in_memory'),  # the user's choice stands
    (['--direct_num_workers', '3', '--direct_running_mode', 'multi_processing'], 10, 2, 3,
     'multi_processing'),
    (['--direct_running_mode=in_memory'], 100, 4, 1, 'in_memory'),
])
def test_local_runs_use_every_core_when_the_input_is_large(monkeypatch, flags, input_mb, cores,
                                                           workers, mode):
    monkeypatch.setattr(os, 'cpu_count', lambda: cores)
    options = PipelineOptions(flags)
    assert read_workers(options, input_mb * MB, flags) == workers
    assert options.view_as(DirectOptions).direct_running_mode == mode


@pytest.mark.parametrize('flags, workers', [
    (DATAFLOW, DATAFLOW_READ_WORKERS),
    (['--runner', 'PortableRunner'], 1),
])
def test_other_runners_read_ranges_for_their_own_workers(flags, workers):
    assert read_workers(PipelineOptions(flags), 1 << 40, flags) == workers


def test_worker_processes_start_with_bounded_malloc_retention_unless_the_user_chose(
        monkeypatch):
    import pyarrow as pa
    from pipelines import launch
    monkeypatch.delenv('MALLOC_MMAP_THRESHOLD_', raising=False)
    monkeypatch.delenv('ARROW_DEFAULT_MEMORY_POOL', raising=False)
    monkeypatch.setenv('MALLOC_ARENA_MAX', '4')
    launch.bound_malloc_retention()
    assert os.environ['MALLOC_ARENA_MAX'] == '4'
    assert os.environ['MALLOC_MMAP_THRESHOLD_'] == str(2 << 20)
    assert os.environ['ARROW_DEFAULT_MEMORY_POOL'] == 'system'
    assert pa.default_memory_pool().backend_name == "system"


def test_cloud_storage_out_of_reach_is_one_line_within_seconds(demo_copy, capsys):
    """Offline, a gs:// output is refused at once, not after the storage client's two minutes
    of retries and a traceback."""
    import time
    from pipelines.cli import main
    from transforms.common.files import _gcs_unreachable
    if _gcs_unreachable() is None:
        pytest.skip('Cloud Storage is reachable from this machine')
    _, config, _ = demo_copy
    text = open(config, encoding='utf-8').read().replace('  path: out\n',
                                                         '  path: gs://acquirer-bucket/out\n')
    open(config, 'w', encoding='utf-8').write(text)
    started = time.monotonic()
    assert main(['run', '--config', config]) == 2
    assert time.monotonic() - started < 30
    [line] = user_lines(capsys.readouterr().err)
    assert 'gs://acquirer-bucket/out: Cloud Storage (storage.googleapis.com) cannot be ' \
           'reached' in line


def test_a_users_folder_named_like_a_package_does_not_shadow_it_in_workers(demo_copy):
    """Run from the demo's own folder, which holds schemas/ (a folder named like Novation's
    package), with two worker processes: the workers import the installed packages."""
    import subprocess
    import sys
    workdir, config, _ = demo_copy
    assert os.path.isdir(os.path.join(workdir, 'schemas'))
    command = os.path.join(os.path.dirname(sys.executable), 'novation')  # as installed
    proc = subprocess.run([command, 'run', '--config', os.path.basename(config),
                           '--direct_num_workers', '2', '--direct_running_mode',
                           'multi_processing'],
                          cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'ImportError' not in proc.stderr
