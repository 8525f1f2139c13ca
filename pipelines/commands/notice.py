"""``novation notice``: the seller's notification list of a run, decrypted."""

import argparse

from pipelines.options import add_keys

SYNOPSIS = (
    'novation notice NOTICE_DIR --keys DIR --out FILE.{csv,jsonl,parquet}',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    notice = sub.add_parser(
        'notice', help='decrypt the seller\'s notification list of a run (notice key)',
        description='A run whose config has notice.path writes there, under <run_id>, the '
                    'seller\'s notification list (PIPL Art. 22), encrypted under the notice key: '
                    'a row per customer (the seller\'s own id) and table, with the categories of '
                    'data that moved and the recipient\'s name and contact, or why the table\'s '
                    'records were refused; moved says whether anything about them moved. '
                    'Customers who asked for erasure are counted, not listed. This command '
                    'checks the files against notice.json and writes the list decrypted to '
                    '--out (.csv, .jsonl or .parquet); it prints counts only.')
    notice.add_argument('notice_dir', metavar='NOTICE_DIR', help='notice.path/<run_id>')
    add_keys(notice, 'its notice key')
    notice.add_argument('--out', required=True, metavar='FILE', help='.csv, .jsonl or .parquet')
    return notice


def main(call) -> int:
    args = call.args
    from pipelines.decrypt import read_notice
    rows = read_notice(args.notice_dir, args.keys)
    write_people(rows, args.out)
    customers = {r['customer_id'] for r in rows}
    moved = {r['customer_id'] for r in rows if r['moved']}
    print(f'{len(rows):,} rows about {len(customers):,} customers written to {args.out}: '
          f'{len(moved):,} whose data moved, {len(customers) - len(moved):,} whose data did '
          f'not')
    return 0


def write_people(rows, out):
    """Notification rows to ``out``: .csv, .jsonl or .parquet."""
    import pyarrow as pa

    from pipelines.decrypt import write_rows
    from transforms.commit.notice import NOTICE_SCHEMA
    write_rows(pa.Table.from_pylist(rows, schema=NOTICE_SCHEMA), out)
