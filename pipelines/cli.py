"""The ``novation`` command.

    novation run --config FILE [Beam options]     migrate a seller export
    novation demo [--workdir DIR] [--customers N]  generate demo data and migrate it
    novation keys init DIR                         create a keyring (demo/test only: clear JSON)
    novation decrypt RUN_DIR --keys DIR --table NAME [--deadletter] --out FILE

User errors print one line (``novation: error: ...``) and exit 2; a run aborted on the
dead-letter limit exits 3. Tracebacks are for bugs.
"""

import argparse
import logging
import sys

__all__ = ['main']


class _CleanLogs(logging.Filter):
    """Keep stderr for the user: drop Beam's import-time warning about optional GCP client
    libraries we do not use, and Beam's traceback of a user error we report in one line."""

    def filter(self, record):
        from transforms.errors import NovationError
        if record.exc_info and isinstance(record.exc_info[1], NovationError):
            return False
        return 'apitools not found' not in record.getMessage()


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('novation: %(message)s'))
    handler.addFilter(_CleanLogs())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger('novation').setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger('novation.progress').setLevel(logging.INFO)  # long runs show progress


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='novation',
        description='Move a customer book from a seller to an acquirer: classified, '
                    'consent-filtered, masked and encrypted, with encrypted dead letters and a '
                    'manifest that proves nothing was lost.')
    parser.add_argument('-v', '--verbose', action='store_true', help='log progress steps')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    run = sub.add_parser(
        'run', help='run a migration from a transfer config',
        description='Run a migration. Options not listed here are Beam pipeline options, '
                    'e.g. --runner DataflowRunner --project P --region R --temp_location '
                    'gs://... ; without --runner it runs locally.')
    run.add_argument('--config', required=True, help='transfer config (YAML)')
    run.add_argument('--run-id', help='name of the run directory (default: UTC time + random)')

    demo = sub.add_parser(
        'demo', help='generate demo exports, keys and config, then migrate them',
        description='Generate a demo seller export (GBK CSV customers, Parquet contracts, '
                    'consent registry, erasure list, planted problems), a demo keyring and '
                    'config under WORKDIR, and migrate it. Prints the run directory last. '
                    'Other options are Beam pipeline options.')
    demo.add_argument('--workdir', help='where to put everything (default: a new temporary '
                                        'directory)')
    demo.add_argument('--customers', type=int, default=10_000,
                      help='number of customers to generate (default 10000)')
    demo.add_argument('--seed', type=int, default=20261123, help='random seed (default: fixed)')

    keys = sub.add_parser('keys', help='manage keyrings',
                          description='Manage keyrings (Tink keysets, one per role).')
    keys_sub = keys.add_subparsers(dest='keys_command', required=True, metavar='ACTION')
    init = keys_sub.add_parser(
        'init', help='create a new cleartext keyring (demo/test only)',
        description='Create a keyring with the roles pseudonym, token, data.footer, '
                    'data.internal, data.personal, data.sensitive and deadletter. Keysets are '
                    'stored in clear JSON (file mode 0600): for demos and tests only.')
    init.add_argument('directory', help='new or empty directory')

    decrypt = sub.add_parser(
        'decrypt', help='decrypt a table (or its dead letters) of a finished run',
        description='Check a run against its manifest (crc32c of every file) and write one '
                    'table, decrypted, to a file: .csv, .jsonl or .parquet by extension.')
    decrypt.add_argument('run_dir', metavar='RUN_DIR', help='OUT/<run_id> of a finished run')
    decrypt.add_argument('--keys', required=True, help='keyring directory')
    decrypt.add_argument('--table', required=True, help='table name')
    decrypt.add_argument('--deadletter', action='store_true',
                         help="the table's dead letters (needs the deadletter key)")
    decrypt.add_argument('--out', required=True, help='output file (.csv, .jsonl, .parquet)')
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ('run', 'demo'):
        parser.error(f'unrecognized arguments: {" ".join(extra)}')
    if args.command == 'demo' and args.customers < 1:
        parser.error('--customers must be at least 1')
    _configure_logging(args.verbose)
    from transforms.errors import DeadLetterLimitExceeded, NovationError
    try:
        if args.command == 'run':
            return _cmd_run(args, extra)
        if args.command == 'demo':
            return _cmd_demo(args, extra)
        if args.command == 'keys':
            return _cmd_keys(args)
        return _cmd_decrypt(args)
    except DeadLetterLimitExceeded as e:
        print(f'novation: aborted: {e}', file=sys.stderr)
        return 3
    except NovationError as e:
        print(f'novation: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('novation: interrupted', file=sys.stderr)
        return 130


def _cmd_run(args, beam_args):
    from pipelines.migrate import run
    from pipelines.summary import print_summary
    argv = ['--config', args.config] + (['--run-id', args.run_id] if args.run_id else [])
    result = run(argv + beam_args)
    print_summary(result.manifest, result.run_dir, result.seconds)
    print(result.run_dir)
    return 0


def _cmd_demo(args, beam_args):
    from pipelines.demo import run_demo
    run_demo(workdir=args.workdir, customers=args.customers, seed=args.seed,
             beam_args=beam_args)
    return 0


def _cmd_keys(args):
    from transforms.crypto import CLEARTEXT_WARNING, init_keyring
    ids = init_keyring(args.directory)
    print(f'keyring created in {args.directory}')
    for role, info in ids.items():
        print(f'  {role:15s} key id {info["primary"]}')
    print(f'warning: {CLEARTEXT_WARNING}')
    return 0


def _cmd_decrypt(args):
    from pipelines.decrypt import decrypt_table
    rows = decrypt_table(args.run_dir, keys=args.keys, table=args.table,
                         deadletter=args.deadletter, out=args.out)
    what = 'dead letters' if args.deadletter else 'rows'
    print(f'{rows} {what} of {args.table} written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
