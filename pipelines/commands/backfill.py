"""``novation backfill``: deliver the rows of customers who consented again, through the
running stream."""

import argparse
import collections

from pipelines.options import add_keys

SYNOPSIS = (
    'novation backfill STREAM_DIR (--keys DIR --list FILE.{csv,jsonl} | --config FILE '
     '--export TABLE=PATH... [--exported-at TIME])',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    backfill = sub.add_parser(
        'backfill', help='deliver the rows of customers who consented again, through the '
                         'running stream',
        description='A customer whose rows the acquirer lacks (refused at the snapshot, '
                    'retracted after a withdrawal, or delivered without their sensitive '
                    'fields) and who consents again is listed by the stream in the epoch that '
                    'saw the consent (backfill in its manifest). With --list, write the '
                    'customers every epoch listed (ids in clear: the deadletter key) for the '
                    'seller to export their current rows. With --export TABLE=PATH (one per '
                    'table, any format the table\'s export may have), read that targeted export '
                    'with the batch\'s readers and land the rows of listed customers as one '
                    'file of snapshot reads, committed at --exported-at (default now), in '
                    'stream.backfill, which the stream watches as one more change feed: it '
                    'decides, masks, encrypts and commits them as epochs of its own, its key '
                    'order keeping the newest change of each row. Rows of customers not listed '
                    'are left out and counted; an export with unreadable rows lands nothing.')
    backfill.add_argument('run_dir', metavar='STREAM_DIR', help='OUT/<stream id>')
    add_keys(backfill, 'its deadletter and manifest keys; with --list', required=False)
    backfill.add_argument('--list', metavar='FILE', dest='list_out',
                          help='write the customers to backfill to FILE (.csv or .jsonl)')
    backfill.add_argument('--config', help='the stream\'s config (with --export)')
    backfill.add_argument('--export', action='append', metavar='TABLE=PATH', default=[],
                          help='the targeted export of a table (repeat for each table)')
    backfill.add_argument('--exported-at', metavar='TIME',
                          help='when the export was taken, ISO 8601 with its zone (default: '
                               'now); its rows are committed then')
    return backfill


def main(call) -> int:
    args = call.args
    parser = call.parser
    import datetime

    from config import load_config
    from pipelines.backfill import backfill_list, land_backfill, write_list
    if bool(args.list_out) == bool(args.export):
        parser.error('give --keys DIR --list FILE, or --config FILE --export TABLE=PATH ...')
    if args.list_out:
        if not args.keys:
            parser.error('--list needs --keys DIR (its deadletter key)')
        records = backfill_list(args.run_dir, args.keys)
        write_list(records, args.list_out)
        kinds = ', '.join(f'{k} {n:,}' for k, n in sorted(collections.Counter(
            r['kind'] for r in records).items())) or 'none'
        print(f'{len(records):,} customer(s) to backfill ({kinds}) written to {args.list_out}')
        return 0
    if not args.config:
        parser.error('--export needs --config FILE (the stream\'s)')
    exports = {}
    for item in args.export:
        table, sep, path = item.partition('=')
        if not sep or not table or not path:
            parser.error(f'--export {item}: give TABLE=PATH')
        exports[table] = path
    at = None
    if args.exported_at:
        try:
            at = datetime.datetime.fromisoformat(args.exported_at.replace('Z', '+00:00'))
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            parser.error(f'--exported-at {args.exported_at!r}: give an ISO 8601 time with its '
                         f'zone, e.g. 2026-12-07T18:00:00+08:00')
    result = land_backfill(args.run_dir, load_config(args.config), exports, at)
    tables = ', '.join(f'{t} {n:,}' for t, n in result['tables'].items())
    left = ', '.join(f'{t} {n:,}' for t, n in result['left_out'].items())
    print(f'{result["rows"]:,} row(s) of {result["customers"]:,} of the {result["listed"]:,} '
          f'customer(s) listed landed ({tables}); the stream delivers them in its next epochs')
    if left:
        print(f'  left out: {left}')
    print(result['path'])
    return 0
