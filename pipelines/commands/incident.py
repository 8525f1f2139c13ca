"""``novation incident``: a delivered file was exposed: what is in it, and whom to notify."""

import argparse

from pipelines.commands.notice import write_people
from pipelines.options import add_keys

SYNOPSIS = (
    'novation incident --run RUN_DIR --file PATH --keys DIR [--notice NOTICE_DIR --out '
     'FILE.{csv,jsonl,parquet}]',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    incident = sub.add_parser(
        'incident', help='a delivered file was exposed: what is in it, and whom to notify',
        description='For a file of a run (a data or dead-letter file, as the manifest lists '
                    'it, or an exposed copy of one): its table, rows and whether it is the file '
                    'the run wrote; the fields in it with their classification, treatment and '
                    'the key (role and id) that protects each, so what can be read without the '
                    'keys. With --notice (the run\'s notification list) and the notice key, '
                    'and the key of the file\'s subject column (or, for a dead-letter file, the '
                    'deadletter and pseudonym keys): the customers to notify, written to --out; '
                    'only their count is printed.')
    incident.add_argument('--run', required=True, metavar='RUN_DIR', help='the run')
    incident.add_argument('--file', required=True, metavar='PATH',
                          help='the exposed file: its path in the run, or a copy of it')
    add_keys(incident)
    incident.add_argument('--notice', metavar='NOTICE_DIR',
                          help='the run\'s notification list (notice.path/<run_id>)')
    incident.add_argument('--out', metavar='FILE',
                          help='write the customers to notify here (.csv, .jsonl, .parquet)')
    return incident


def main(call) -> int:
    args = call.args
    parser = call.parser
    from pipelines.incident import assess_incident, format_incident
    if args.out and not args.notice:
        parser.error('--out needs --notice (the customers come from the notification list)')
    result = assess_incident(args.run, args.file, args.keys, args.notice)
    print(format_incident(result))
    if result['customers'] is not None and args.out:
        write_people(result['customers'], args.out)
        print(f'  written to {args.out}')
    return 0
