"""``novation replay``: move the dead letters a review marked replay, through the same path."""

import argparse

from pipelines.options import run_parser
from pipelines.progress import showing_progress

SYNOPSIS = (
    'novation replay RUN_DIR --config FILE [--only N,...] [--run-id ID] [Beam options]',
)
TAKES_BEAM_OPTIONS = True
RAW_ARGUMENTS = True  # parsed again by the command from the words after it


def add_parser(sub) -> argparse.ArgumentParser:
    replay = sub.add_parser(
        'replay', help='move the dead letters a review marked replay, through the same path',
        parents=[run_parser(False)],
        allow_abbrev=False,
        description='Re-process the dead letters that review.json marks "replay", from their '
                    'encrypted raw rows (read by the workers, never written in clear), through '
                    'the same conform, dedup, consent, mask and write path, with the config and '
                    'consent registry as they are now (a withdrawal since wins). Writes a new '
                    'run directory (replay_of in its manifest) with the same keys and '
                    'pseudonyms, and records in the original review.json which dead letters it '
                    'consumed: replaying again moves nothing twice. Erased customers\' rows and '
                    'restricted fields were never kept, so they are never replayed. Given a '
                    'stream (OUT/<stream id>): its changes refused for consent, decided again '
                    'with the consent known now (the registry and erasure list as they are '
                    'now, every event of the consent feed), a change older than one delivered '
                    'for its row superseded, the rest delivered as a linked stream '
                    'OUT/<stream id>-replay-N of one epoch, applied after the epoch its '
                    'cutover.json names.')
    replay.add_argument('run_dir', metavar='RUN_DIR',
                        help='the reviewed run, or stream (OUT/<stream id>)')
    replay.add_argument('--only', metavar='N[,N...]',
                        help='only these replay decisions (their numbers in review.json, 1 '
                             'first)')
    return replay


def main(call) -> int:
    argv = call.argv
    console = call.console
    from pipelines.summary import print_summary
    with showing_progress(console):
        result = run_replay(argv)
    if isinstance(result, dict):  # a stream's: a linked stream of one epoch
        again = ', '.join(f'{r} {n}' for t in result['dead_letters'].values()
                          for r, n in sorted(t.items()))
        print(f'replay of stream {result["stream_id"]} (after its epoch '
              f'{result["after_epoch"]}): {result["replayed"]:,} dead letter(s) replayed: '
              f'{result["delivered"]:,} delivered, {result["dead_letters_again"]:,} refused '
              f'again{f" ({again})" if again else ""}, {result["superseded"]:,} superseded by a '
              f'newer change delivered; recorded in its review.json')
        if result['not_replayable']:
            print('  not replayed (no change refused for consent): ' + ', '.join(
                f'{r} {n}' for r, n in result['not_replayable'].items()))
        print(result['replay_dir'])
        return 0
    print_summary(result.manifest, result.run_dir, result.seconds)
    print(f'replay of {result.manifest["replay_of"]}: recorded in its review.json')
    print(result.run_dir)
    return 0


def run_replay(argv):
    """A batch run's replay (``pipelines.replay``) or a stream's (``pipelines.stream_replay``).
    ``argv``: the words after ``replay``."""
    from pipelines.decrypt import is_stream
    from pipelines.migrate import run
    from pipelines.stream_replay import run_stream_replay
    from transforms.common.errors import NovationError
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
