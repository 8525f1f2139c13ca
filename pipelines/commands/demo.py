"""``novation demo``: generate demo exports, keys and config, then migrate them."""

import argparse
import sys

from pipelines.options import PROGRESS_HELP
from pipelines.progress import showing_progress

SYNOPSIS = (
    'novation demo [--workdir DIR] [--customers N] [--seed S] [Beam options]',
)
TAKES_BEAM_OPTIONS = True
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    demo = sub.add_parser(
        'demo', help='generate demo exports, keys and config, then migrate them',
        allow_abbrev=False,
        description='Generate a demo seller export in all four formats (customers as GBK CSV, '
                    'contracts as Parquet, repayments as JSON Lines with Chinese keys, '
                    'collection calls as Avro with legacy field names), a consent registry and '
                    'an erasure list, with planted problems of every kind; a demo keyring (in '
                    'clear, demo only) and the config, all under WORKDIR; then migrate it. '
                    'Prints the run directory last. Other options are Beam pipeline options. '
                    + PROGRESS_HELP)
    demo.add_argument('--workdir', help='where to put everything (default: a new temporary '
                                        'directory)')
    demo.add_argument('--customers', type=int, default=10_000,
                      help='number of customers to generate (default 10000)')
    demo.add_argument('--seed', type=int, default=20261123,
                      help='random seed: the same seed gives the same data (default 20261123)')
    demo.add_argument('--live', action='store_true',
                      help='then stream the seller\'s live changes: waves of change and '
                           'consent files land under WORKDIR/feeds for about 10 s while '
                           'novation stream carries them on from the migration (a line per '
                           'epoch committed), then cut over; prints the stream directory '
                           'before the run directory')
    return demo


def main(call) -> int:
    args = call.args
    beam_args = call.extra
    console = call.console
    if args.customers < 1:
        call.parser.error('--customers must be at least 1')
    from pipelines.launch import check_beam_args
    check_beam_args(beam_args, call.parser)  # before the demo spends time generating data
    from pipelines.demo import run_demo
    with showing_progress(console):
        run_demo(workdir=args.workdir, customers=args.customers, seed=args.seed,
                 beam_args=beam_args, out=lambda text: console.say(text, sys.stdout),
                 live=args.live)
    return 0
