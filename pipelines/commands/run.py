"""``novation run``: run a migration from a transfer config."""

import argparse

from pipelines.options import PROGRESS_HELP, run_parser
from pipelines.progress import showing_progress

SYNOPSIS = (
    'novation run --config FILE [--run-id ID] [--output PATH] [--keys PATH] [--plan-hash '
     'SHA256] [--detach] [Beam options]',
)
TAKES_BEAM_OPTIONS = True
RAW_ARGUMENTS = True  # parsed again by the command from the words after it


def add_parser(sub) -> argparse.ArgumentParser:
    command = sub.add_parser(
        'run', help='run a migration from a transfer config', parents=[run_parser(False)],
        allow_abbrev=False,
        description='Run a migration. Options not listed here are Beam pipeline options; one '
                    'that Beam does not know either stops the run before it starts. '
                    'Without --runner it runs locally: in this process, or with one worker '
                    'process per core when the seller\'s CSV files that workers can share (32 '
                    'MB or more each, uncompressed) total 128 MB or more '
                    '(--direct_num_workers and --direct_running_mode override); '
                    '--runner DataflowRunner --project P --region R --temp_location gs://... '
                    '--setup_file ./setup.py runs it on Dataflow (see docs/dataflow.md); '
                    '--runner PortableRunner --job_endpoint HOST:PORT on a portable job '
                    'service. The run keeps per-customer state, and the rows of tables with a '
                    'primary key while their duplicates are found, in encrypted scratch files '
                    'under --temp_location (default: this machine\'s temporary directory; about '
                    '0.2 KB a row) and removes them when it ends. ' + PROGRESS_HELP)
    return command


def main(call) -> int:
    argv = call.argv
    console = call.console
    from pipelines.migrate import run
    from pipelines.summary import print_summary
    with showing_progress(console):
        result = run(argv)
    if result.status == 'done':
        print_summary(result.manifest, result.run_dir, result.seconds)
    elif result.status == 'dry-run':
        print('dry run: the job was built and not submitted')
    else:
        job = getattr(result.pipeline_result, 'job_id', lambda: None)()
        print(f'submitted{f" job {job}" if job else ""}; the manifest is written to '
              f'{result.run_dir}/manifest.json as the job\'s last step')
    print(result.run_dir)
    return 0
