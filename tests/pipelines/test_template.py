"""The Dataflow Flex Template: its files agree with the command line and with docs/dataflow.md."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from pipelines.options import run_parser, stream_parser
from tests.pipelines.test_runners import DATAFLOW

METADATA = os.path.join(ROOT, 'dataflow', 'metadata.json')
STREAM_METADATA = os.path.join(ROOT, 'dataflow', 'stream-metadata.json')
DOCKERFILE = os.path.join(ROOT, 'Dockerfile')


def parameters(metadata=METADATA):
    return {p['name']: p for p in json.load(open(metadata, encoding='utf-8'))['parameters']}


@pytest.mark.parametrize('metadata, parser', [(METADATA, run_parser),
                                              (STREAM_METADATA, stream_parser)])
def test_every_template_parameter_is_an_option_of_its_command(metadata, parser):
    options = {o for action in parser()._actions for o in action.option_strings}
    for name, p in parameters(metadata).items():
        assert f'--{name}' in options, name
        assert re.fullmatch(r'[a-zA-Z][a-zA-Z0-9_]*', name), name  # a template parameter name
        assert p['label'] and len(p['helpText']) > 40 and p['regexes'], name
    assert not parameters(metadata)['config'].get('isOptional')


def test_the_stream_template_is_a_streaming_job_with_the_batch_templates_parameters():
    stream = json.load(open(STREAM_METADATA, encoding='utf-8'))
    assert stream['streaming'] is True
    assert set(parameters()) < set(parameters(STREAM_METADATA))


@pytest.mark.parametrize('name, value, valid', [
    ('config', 'gs://my-bucket/transfer/transfer.yaml', True),
    ('config', 'gs://my-bucket/t.yml', True),
    ('config', '/home/me/transfer.yaml', False),
    ('config', 'gs://my-bucket/transfer.json', False),
    ('config', 'https://storage.googleapis.com/b/t.yaml', False),
    ('output', 'gs://acquirer-bucket/novation/out', True),
    ('output', 'gs://Bad_Bucket/out', False),
    ('keys', 'gs://my-bucket/novation/keys', True),
    ('keys', 'keys', False),
    ('snapshot', 'gs://acquirer-bucket/novation/out/20261201T080000Z-1a2b3c', True),
    ('snapshot', '/home/me/out/run', False),
    ('run_id', 'stream-acquisition-2026', True),
    ('run_id', '../elsewhere', False),
])
def test_parameter_patterns(name, value, valid):
    assert all(bool(re.fullmatch(rx, value)) == valid
               for rx in parameters(STREAM_METADATA)[name]['regexes'])


def test_the_dockerfile_copies_what_the_launcher_runs():
    text = open(DOCKERFILE, encoding='utf-8').read()
    assert re.search(r'^FROM gcr\.io/dataflow-templates-base/python3\d+-template-launcher-base',
                     text, re.M)
    copied = re.findall(r'^COPY (.+) \S+$', text, re.M)
    for sources in copied:
        for source in sources.split():
            assert os.path.exists(os.path.join(ROOT, source)), source
    env = dict(re.findall(r'^ENV (\w+)=(\S+)$', text, re.M))
    assert env['FLEX_TEMPLATE_PYTHON_PY_FILE'] == '${WORKDIR}/${ENTRY}'
    assert re.search(r'^ARG ENTRY=main\.py$', text, re.M)  # the batch's, unless told
    assert env['FLEX_TEMPLATE_PYTHON_SETUP_FILE'].endswith('/setup.py')
    assert 'COPY dataflow/main.py main.py' in text and "'.[gcp]'" in text
    assert 'COPY dataflow/stream.py stream.py' in text


@pytest.mark.parametrize('metadata, launch', [
    (METADATA, r'flex-template run "novation-\$'),
    (STREAM_METADATA, r'flex-template run novation-stream')])
def test_the_docs_launch_each_template_with_its_parameters(metadata, launch):
    page = open(os.path.join(ROOT, 'docs', 'dataflow.md'), encoding='utf-8').read()
    section = page.split('## Run on Dataflow', 1)[1].split('\n## ', 1)[0]
    assert f'--metadata-file dataflow/{os.path.basename(metadata)}' in section
    command = re.search(launch + r'[^`]*?--parameters (\S+)', section)
    assert command, launch
    given = command.group(1)
    assert {kv.split('=', 1)[0] for kv in given.split(',')} == set(parameters(metadata))
    for kv in given.split(','):
        name, value = kv.split('=', 1)
        assert all(re.fullmatch(rx, value.replace('BUCKET', 'my-bucket'))
                   for rx in parameters(metadata)[name]['regexes']), kv


def test_the_template_entry_point_builds_the_job(demo_copy):
    """What the launcher runs (main.py + Dataflow options), as a dry run."""
    _, config, _ = demo_copy
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'dataflow', 'main.py'),
                           f'--config={config}', *DATAFLOW], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert 'dry run: the job was built and not submitted' in proc.stdout


def test_the_stream_template_entry_point_builds_the_streaming_job(demo_copy):
    """What the stream template's launcher runs (stream.py + Dataflow options), as a dry run."""
    _, config, _ = demo_copy
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'dataflow', 'stream.py'),
                           f'--config={config}', '--run_id=live', *DATAFLOW,
                           f'--setup_file={os.path.join(ROOT, "setup.py")}'],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert 'dry run: the streaming job was built and not submitted' in proc.stdout
