"""The options of the commands that run pipelines (``novation run``, ``stream``, ``replay``):
plain argparse, no Beam, so ``novation --help`` and every subcommand's help start at once."""

import argparse

__all__ = ['PROGRESS_HELP', 'add_keys', 'add_verbose_flag', 'run_parser', 'stream_parser']

PROGRESS_HELP = ('Progress (the step, rows read, written and refused, the rate and the time '
                 'left) goes to stderr: a live line on a terminal, else a line every 10 s.')


def run_parser(add_help=True) -> argparse.ArgumentParser:
    """The options of ``novation run``; everything else is a Beam pipeline option."""
    # No abbreviations: a prefix of ours could swallow a Beam option, as Beam allows none.
    parser = argparse.ArgumentParser(prog='novation run', add_help=add_help, allow_abbrev=False)
    add_verbose_flag(parser)
    parser.add_argument('--config', required=True,
                        help='transfer config (YAML; local path or gs://)')
    parser.add_argument('--run-id', help='name of the run directory (default: UTC time + random)')
    parser.add_argument('--output', metavar='PATH',
                        help='where run directories are created, instead of output.path')
    parser.add_argument('--keys', metavar='PATH',
                        help='keyring directory, instead of output.keys')
    parser.add_argument('--plan-hash', metavar='SHA256',
                        help='the sha256 of the approved plan (novation plan): refuse to start '
                             'if the config no longer gives that plan')
    parser.add_argument('--detach', action='store_true',
                        help='return once the job is submitted (Dataflow); the pipeline still '
                             'writes the manifest as its last step')
    return parser


def add_keys(parser: argparse.ArgumentParser, roles: str = '', *, required: bool = True,
             metavar: str = 'DIR') -> None:
    """``--keys``: the keyring a command reads with; ``roles`` says which of its keys it uses."""
    parser.add_argument('--keys', required=required, metavar=metavar,
                        help='keyring directory' + (f' ({roles})' if roles else ''))


SEAL_CHECK = 'its manifest key checks the manifest\'s seal; the public half is enough'


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """``-v``, accepted after a subcommand as well as before it (where ``novation`` reads it)."""
    parser.add_argument('-v', '--verbose', action='store_true', default=argparse.SUPPRESS,
                        help='also log the run id, its directory and how many workers read')


def stream_parser(add_help=True) -> argparse.ArgumentParser:
    """The options of ``novation stream``; the rest are Beam pipeline options."""
    parser = argparse.ArgumentParser(prog='novation stream', add_help=add_help,
                                     allow_abbrev=False)
    add_verbose_flag(parser)
    parser.add_argument('--config', required=True,
                        help='transfer config with a stream section (YAML; local or gs://)')
    parser.add_argument('--snapshot', metavar='RUN_DIR',
                        help='the batch run this stream continues: its keys must be the '
                             'keyring\'s (same pseudonyms), and a customer who withdraws or is '
                             'erased is retracted from every table')
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument('--until', metavar='TIME',
                      help='cut-over: stop at this time (ISO 8601 with its zone, e.g. '
                           '2026-12-31T18:00:00+08:00), committing the open epoch')
    stop.add_argument('--seconds', type=float, metavar='N', help='stop after N seconds')
    parser.add_argument('--run-id', '--run_id', dest='run_id',
                        help='name of the stream directory (default: stream- + UTC '
                             'time + random); an existing stream\'s id resumes it '
                                         'after its last committed epoch')
    parser.add_argument('--output', metavar='PATH',
                        help='where stream directories are created, instead of output.path')
    parser.add_argument('--keys', metavar='PATH', help='keyring directory, instead of '
                                                       'output.keys')
    parser.add_argument('--plan-hash', metavar='SHA256',
                        help='the sha256 of the approved plan (novation plan): refuse to start '
                             'if the config no longer gives it')
    link = parser.add_mutually_exclusive_group()
    link.add_argument('--continues', metavar='STREAM_ID',
                      help='a new stream that goes on after that stream\'s cut-over (a '
                           'cut-over is final: the business went on)')
    link.add_argument('--replaces', metavar='STREAM_ID',
                      help='a new stream over the same snapshot that replaces that stream '
                           '(the acquirer must not apply its epochs)')
    return parser
