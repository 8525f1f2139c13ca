"""One module per ``novation`` command, in the order ``novation --help`` lists them.

Each module has ``SYNOPSIS`` (its lines of docs/commands.md; a test keeps the two equal),
``add_parser(sub)`` (its options: plain argparse, no Beam, so help starts at once),
``TAKES_BEAM_OPTIONS`` (options it does not define go to Beam), ``RAW_ARGUMENTS`` (it parses
the words after its name again itself) and ``main(call) -> int`` (its exit code). Whatever a
command needs beyond argparse it imports inside ``main``. ``pipelines.cli`` only dispatches.
"""

from typing import NamedTuple

__all__ = ['COMMANDS', 'Call']

COMMANDS = ('run', 'plan', 'classify', 'stream', 'demo', 'keys', 'decrypt', 'report', 'verify',
            'review', 'replay', 'clean', 'audit', 'notice', 'incident', 'backfill', 'signoff',
            'detokenize', 'pseudonym')


class Call(NamedTuple):
    """What a command's ``main`` is given."""
    args: object      # the parsed options (argparse.Namespace)
    parser: object    # the command's own parser: its errors show its usage
    argv: list        # the words after the command's name
    extra: list       # words no option of the command took (Beam options, where it takes them)
    console: object   # the log handler that also shows progress (pipelines.progress)
