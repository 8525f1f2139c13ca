"""``novation signoff``: sign off the review of a run or a stream."""

import argparse

from pipelines.options import SEAL_CHECK, add_keys

SYNOPSIS = (
    'novation signoff RUN_DIR --keys DIR --by NAME',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    signoff = sub.add_parser(
        'signoff', help='sign off the review of a run or a stream',
        description='Record in the run\'s review.json that NAME signed off its review: the '
                    'time, the sha256 of its manifest and of its config, and the decisions in '
                    'force. Of a stream: the sha256 of its cutover.json, or while it runs of '
                    'its last epoch\'s manifest (the chain ties it to the others), and how many '
                    'epochs it covers.')
    signoff.add_argument('run_dir', metavar='RUN_DIR',
                         help='OUT/<run_id> of a finished run, or OUT/<stream id>')
    add_keys(signoff, SEAL_CHECK)
    signoff.add_argument('--by', required=True, help='who signs off')
    return signoff


def main(call) -> int:
    args = call.args
    from pipelines.review import signoff
    entry = signoff(args.run_dir, keys=args.keys, by=args.by)
    covers = '' if 'epochs' not in entry else \
        f'{entry["epochs"]} epoch(s){", cut over" if entry["cut_over"] else " so far"}, '
    print(f'signed off by {entry["by"]} at {entry["at"]} ({covers}'
          f'{"cutover.json" if entry.get("cut_over") else "manifest"} sha256 '
          f'{entry["manifest_sha256"][:16]}..., {entry["decisions"]} decision(s) in force)')
    return 0
