"""The ``novation`` command: the top-level options, logging and the dispatch to
``pipelines.commands`` (one module per command, with its options and what it does).

User errors print one line (``novation: error: ...``) and exit 2; a run aborted on the
dead-letter limit exits 3. Tracebacks are for bugs.
"""

import argparse
import logging
import os
import sys

__all__ = ['main']


class _CleanLogs(logging.Filter):
    """Keep stderr for the user: drop Beam's import-time warning about optional GCP client
    libraries we do not use, Beam's traceback of a user error we report in one line, and
    Beam's lines after a Ctrl-C or SIGTERM (the command says it was interrupted), and a
    warning said already (a command that loads its keyring for each table warns once)."""

    def __init__(self):
        super().__init__()
        self._warned = set()

    def filter(self, record):
        from transforms.common import interrupts
        from transforms.common.errors import NovationError
        if record.exc_info and isinstance(record.exc_info[1], NovationError):
            return False
        if record.levelno == logging.WARNING and record.name.startswith('novation.'):
            text = record.getMessage()
            if text in self._warned:
                return False
            self._warned.add(text)
        if interrupts.received() and not record.name.startswith('novation'):
            return False  # Beam, unwinding, reports the workers the command stopped
        return 'apitools not found' not in record.getMessage()


# Where Novation's own modules are (not apache_beam/transforms/, which logs too).
_OUR_PACKAGES = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   package) + os.sep for package in ('transforms', 'pipelines'))


class _WorkerLogs(logging.Filter):
    """Worker processes (a local run on several cores) send their log lines to Beam's job
    service, which logs each as a dump of the Fn API entry. Keep Novation's own lines (progress)
    and warnings, as their message alone; drop the rest and Beam's start-up notice about a
    missing semi-persistent directory, which concerns Dataflow's containers only."""

    def filter(self, record):
        if record.msg != 'Worker: %s' or not record.args:
            return record.levelno >= logging.WARNING
        from apache_beam.portability.api import beam_fn_api_pb2
        from google.protobuf import text_format
        entry = beam_fn_api_pb2.LogEntry()
        try:
            text_format.Parse(record.args[0], entry)
        except text_format.ParseError:
            return record.levelno >= logging.WARNING
        ours = entry.log_location.startswith(_OUR_PACKAGES)
        if 'semi_persistent_directory' in entry.message or not (
                ours or record.levelno >= logging.WARNING):
            return False
        record.msg, record.args = entry.message, ()
        return True


def _configure_logging(verbose: bool):
    """Log lines to stderr, through the handler that also shows a run's progress."""
    from pipelines.progress import ProgressConsole
    handler = ProgressConsole(sys.stderr, live=sys.stderr.isatty())
    handler.setFormatter(logging.Formatter('novation: %(message)s'))
    handler.addFilter(_CleanLogs())
    workers = logging.getLogger('apache_beam.runners.portability.local_job_service')
    workers.setLevel(logging.INFO)
    workers.filters[:] = [_WorkerLogs()]  # one, however often main() runs in a process
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger('novation').setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger('novation.progress').setLevel(logging.INFO)  # long runs show progress
    return handler


def _commands() -> dict:
    """Command name -> its module (argparse only: help starts at once)."""
    import importlib

    from pipelines.commands import COMMANDS
    return {name: importlib.import_module(f'pipelines.commands.{name}') for name in COMMANDS}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='novation',
        description='Move a customer book from a seller to an acquirer: classified, '
                    'consent-filtered, masked and encrypted, with encrypted dead letters and a '
                    'manifest that proves nothing was lost.',
        epilog='novation COMMAND --help describes a command and its options; docs/commands.md '
               'has them all.')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='also log the run id, its directory and how many workers read '
                             '(may also follow the command)')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    from pipelines.options import add_verbose_flag
    for module in _commands().values():
        command = module.add_parser(sub)
        for nested in [command, *_subcommands(command)]:
            if not any('-v' in a.option_strings for a in nested._actions):
                add_verbose_flag(nested)
    return parser


def _subcommands(parser) -> list:
    """The parsers of a command's actions (``keys init``, ``audit verify``), if it has any."""
    return [p for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for p in a.choices.values()]


def _subparser(parser, args):
    """The parser of the (sub)command ``args`` were parsed for: its errors show its usage."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices[args.command]
    action = getattr(args, f'{args.command}_command', None)
    if action is not None:
        command = next(a for a in command._actions
                       if isinstance(a, argparse._SubParsersAction)).choices[action]
    return command


def main(argv=None) -> int:
    from transforms.common import interrupts
    interrupts.install()  # first: Ctrl-C or SIGTERM at any moment ends in one line
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
        if argv is None:  # the program, not a caller in this process, ends here
            interrupts.settle()
        return code
    except interrupts.Interrupted as stop:
        print(f'novation: interrupted ({stop.name})', file=sys.stderr)
        if argv is None:
            interrupts.end_now(stop.exit_code)
        return stop.exit_code


def _main(argv) -> int:
    from pipelines.commands import Call
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    command = _subparser(parser, args)
    module = _commands()[args.command]
    if extra and not module.TAKES_BEAM_OPTIONS:
        command.error(f'unrecognized arguments: {" ".join(extra)}')
    console = _configure_logging(args.verbose)
    from transforms.common.errors import DeadLetterLimitExceeded, NovationError
    try:
        return module.main(Call(args, command, argv[argv.index(args.command) + 1:], extra,
                                console))
    except DeadLetterLimitExceeded as e:
        print(f'novation: aborted: {e}', file=sys.stderr)
        return 3
    except NovationError as e:
        print(f'novation: error: {e}', file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0
    except OSError as e:  # a full disk, a folder that cannot be written: not a bug
        from transforms.common.errors import os_problem
        print(f'novation: error: {os_problem(e)}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
