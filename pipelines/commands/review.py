"""``novation review``: show, export or decide on the dead letters of a run (compliance)."""

import argparse

from pipelines.options import add_keys

SYNOPSIS = (
    'novation review RUN_DIR --keys DIR [--table T] [--reason R] [--field F] [--source '
     'FILE] [--epoch N] [--out FILE | --decide replay|discard|hold --by NAME [--note TEXT]]',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    review = sub.add_parser(
        'review', help='show, export or decide on the dead letters of a run (compliance)',
        description='Decrypt the dead letters of a run (with the deadletter key only) and show '
                    'those the filters select as a table, or write them to --out (.csv or '
                    '.jsonl) for your own tools. With --decide, record a decision for that '
                    'group in the run\'s review.json: replay (move them once their problem is '
                    'fixed), discard (with --note) or hold. An erased customer\'s dead letter '
                    'has no raw row, whatever the filter.')
    review.add_argument('run_dir', metavar='RUN_DIR',
                        help='OUT/<run_id> of a finished run, or OUT/<stream id> (the dead '
                             'letters of every epoch, each with its epoch)')
    add_keys(review, 'its deadletter key')
    review.add_argument('--table', help='only this table')
    review.add_argument('--reason', help='only this reason code (e.g. malformed, no_consent)')
    review.add_argument('--field', help='only dead letters about this field')
    review.add_argument('--epoch', type=int, metavar='N', help='of a stream: only this epoch')
    review.add_argument('--source', dest='source_file', metavar='FILE',
                        help='only this source file (its name, as the report shows it, or '
                             'its path)')
    review.add_argument('--out', metavar='FILE', help='write them all to FILE (.csv, .jsonl)')
    review.add_argument('--limit', type=int, default=50,
                        help='rows shown in the terminal (default 50)')
    review.add_argument('--decide', choices=('replay', 'discard', 'hold'),
                        help='record this decision for the dead letters selected')
    review.add_argument('--note', help='why (required to discard)')
    review.add_argument('--by', help='who decides (required with --decide)')
    return review


def main(call) -> int:
    args = call.args
    from pipelines.review import decide, format_table, select, write_records
    from transforms.common.errors import NovationError
    group = {k: getattr(args, k) for k in ('table', 'reason', 'field', 'source_file', 'epoch')}
    if args.decide:
        if not args.by:
            raise NovationError('--decide needs --by NAME (who decides)')
        entry = decide(args.run_dir, args.keys, group, args.decide, by=args.by,
                       note=args.note)
        print(f'{entry["decision"]}: {entry["dead_letters"]:,} dead letter(s) of '
              f'{", ".join(f"{k} {v}" for k, v in group.items() if v) or "the whole run"}, '
              f'recorded in {args.run_dir}/review.json')
        return 0
    records = select(args.run_dir, args.keys, group)
    if args.out:
        write_records(records, args.out)
        print(f'{len(records):,} dead letter(s) written to {args.out}')
    else:
        print(format_table(records, args.limit))
    return 0
