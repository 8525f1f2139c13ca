"""``novation replay RUN_DIR --config FILE [--only N,...]``: a batch run's replay
(``pipelines.replay``) or a stream's (``pipelines.stream_replay``)."""

from pipelines.decrypt import is_stream
from pipelines.migrate import run
from pipelines.stream_replay import run_stream_replay
from transforms.common.errors import NovationError

__all__ = ['run_replay']


def run_replay(argv):
    """``novation replay RUN_DIR --config FILE [--only N,...] [novation run options]``."""
    if not argv or argv[0].startswith('-'):
        raise NovationError('novation replay RUN_DIR --config FILE: give the run directory first')
    run_dir, rest = argv[0].rstrip('/'), list(argv[1:])
    only = None
    if '--only' in rest:
        at = rest.index('--only')
        try:
            only = [int(n) for n in rest[at + 1].split(',')]
        except (IndexError, ValueError):
            raise NovationError('--only N[,N...]: the numbers of replay decisions in the '
                                'review file (1 is the first decision)') from None
        del rest[at:at + 2]
    if is_stream(run_dir):  # a stream's dead letters: pipelines.stream_replay
        return run_stream_replay(run_dir, rest, only)
    return run(rest, replay=run_dir, only=only)
