"""``novation decrypt``: decrypt a table (or its dead letters) of a run or a stream."""

import argparse

from pipelines.options import add_keys

SYNOPSIS = (
    'novation decrypt RUN_DIR --keys DIR --table NAME [--deadletter] [--epoch N] --out '
     'FILE.{csv,jsonl,parquet}',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    decrypt = sub.add_parser(
        'decrypt', help='decrypt a table (or its dead letters) of a finished run or a stream',
        description='Check a run against its manifest (crc32c of every file) and write one '
                    'table, decrypted, to a file: .csv, .jsonl or .parquet by extension. Of a '
                    'stream: every epoch (seals and chain checked, and once it has cut over '
                    'exactly the epochs cutover.json lists), in the order to apply them, or one '
                    '(--epoch N).')
    decrypt.add_argument('run_dir', metavar='RUN_DIR',
                         help='OUT/<run_id> of a finished run, or OUT/<stream id> of a stream')
    add_keys(decrypt)
    decrypt.add_argument('--table', required=True, help='table name')
    decrypt.add_argument('--deadletter', action='store_true',
                         help="the table's dead letters (needs the deadletter key)")
    decrypt.add_argument('--out', required=True, help='output file (.csv, .jsonl, .parquet)')
    decrypt.add_argument('--epoch', type=int, metavar='N',
                         help='of a stream (RUN_DIR = OUT/<stream id>): that epoch only; by '
                              'default every epoch, in the order to apply them, with an '
                              '__epoch column')
    return decrypt


def main(call) -> int:
    args = call.args
    from pipelines.decrypt import decrypt_table
    rows, withheld = decrypt_table(args.run_dir, keys=args.keys, table=args.table,
                                   deadletter=args.deadletter, out=args.out, epoch=args.epoch)
    what = 'dead letters' if args.deadletter else 'rows'
    print(f'{rows} {what} of {args.table} written to {args.out}')
    for column, role in sorted(withheld.items()):
        print(f'  withheld: {column} (under {role}, which this keyring does not hold)')
    return 0
