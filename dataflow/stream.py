"""Flex Template entry point: `novation stream` on Dataflow, returning once the streaming job is
submitted.

The template launcher calls ``python stream.py --config=gs://... [--snapshot=gs://...]
[--run_id=...] [--output=...] [--keys=...]`` followed by the Dataflow options. The job runs
until it is drained; it then commits the open epoch and writes the cut-over manifest itself.
"""

import sys

from pipelines.cli import main

if __name__ == '__main__':
    sys.exit(main(['stream', *sys.argv[1:]]))
