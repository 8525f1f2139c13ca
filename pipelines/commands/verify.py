"""``novation verify``: recheck a run against its manifest and scan its data for identifiers."""

import argparse

from pipelines.options import add_keys

SYNOPSIS = (
    'novation verify RUN_DIR --keys DIR',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    verify = sub.add_parser(
        'verify', help='recheck a run against its manifest and scan its data for identifiers',
        description='Recheck every file of a finished run against its manifest (size, crc32c, '
                    'rows; conservation of every table and source file; files the manifest '
                    'does not list), then decrypt the delivered data in memory and scan it for '
                    'identifiers (resident ID, USCC, bank card, mobile, email, passport, plate) '
                    'in clear where the plan allows none: a mobile number inside a kept text '
                    'column, an ID number in an internal field. Prints counts per table, column '
                    'and kind, never a value; exits 1 if anything is found, 0 if the run is '
                    'clean. Columns under keys the keyring lacks are named, not scanned. Given a '
                    'stream (OUT/<stream id>): every epoch\'s seal, the chain and cutover.json, '
                    'every file, the stream\'s conservation and the scan (with the fields\' '
                    'treatment from its snapshot run).')
    verify.add_argument('run_dir', metavar='RUN_DIR', help='OUT/<run_id> of a finished run')
    add_keys(verify)
    return verify


def main(call) -> int:
    args = call.args
    from pipelines.decrypt import is_stream
    from pipelines.verify import format_verification, verify_run, verify_stream
    result = (verify_stream if is_stream(args.run_dir) else verify_run)(args.run_dir, args.keys)
    print(format_verification(result))
    return 1 if result['problems'] or result['identifiers'] else 0
