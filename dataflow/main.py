"""Flex Template entry point: `novation run` on Dataflow, returning once the job is submitted.

The template launcher calls ``python main.py --config=gs://... [--output=...] [--keys=...]``
followed by the Dataflow options (runner, project, region, temp location, setup file). The job
itself writes the manifest as its last step, so nothing waits here.
"""

import sys

from pipelines.cli import main

if __name__ == '__main__':
    sys.exit(main(['run', '--detach', *sys.argv[1:]]))
