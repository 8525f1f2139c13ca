"""``novation report``: the compliance report of a run or a stream, again."""

import argparse

from pipelines.options import SEAL_CHECK, add_keys

SYNOPSIS = (
    'novation report RUN_DIR --keys DIR [--lang en|zh] [--epoch N]',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    report = sub.add_parser(
        'report', help='write the compliance report of a finished run again (e.g. in another '
                       'language)',
        description='Every run writes report.html and report.json next to its manifest, for '
                    'compliance operators: what moved, what was refused and why (with the law '
                    'behind each reason), per table and source file, sensitive fields '
                    'withheld, how each field was treated, the keys used (ids only) and the '
                    'reconciliation of every count, with charts; one self-contained page that '
                    'opens offline. This command writes them again from the manifest. They '
                    'hold no personal data. Given a stream (OUT/<stream id>), it writes the '
                    'stream\'s report over its epochs, at cut-over or so far (per epoch: '
                    'changes delivered and refused, retractions, feed events a second, and the '
                    'lag from a change at the seller to its epoch), or with --epoch N that '
                    'epoch\'s report again.')
    report.add_argument('run_dir', metavar='RUN_DIR',
                        help='OUT/<run_id> of a finished run, or OUT/<stream id>')
    report.add_argument('--epoch', type=int, metavar='N',
                        help='of a stream: that epoch\'s report')
    report.add_argument('--lang', choices=('en', 'zh'), default='en',
                        help='language of the report (default en; a run writes it in its '
                             'config\'s report.lang)')
    add_keys(report, SEAL_CHECK)
    return report


def main(call) -> int:
    args = call.args
    from pipelines.decrypt import is_stream, load_manifest
    from transforms.commit.report import REPORT_HTML
    from transforms.common.errors import NovationError
    from transforms.common.files import join
    if is_stream(args.run_dir):
        return _stream_report(args)
    if args.epoch is not None:
        raise NovationError(f'--epoch: {args.run_dir} is a batch run; --epoch selects a '
                            f'stream\'s epoch')
    from transforms.commit.manifest import write_report
    report = write_report(args.run_dir, load_manifest(args.run_dir, args.keys), args.lang)
    print(report['summary']['moved'])
    print(join(args.run_dir, REPORT_HTML))
    return 0


def _stream_report(args):
    from pipelines.decrypt import stream_epochs
    from transforms.commit.report import REPORT_HTML
    from transforms.common.errors import NovationError
    from transforms.common.files import exists, join
    from transforms.stream.chain import (
        CUTOVER_FILE,
        epoch_dir,
        write_epoch_report,
        write_stream_report,
    )
    manifests = stream_epochs(args.run_dir, args.keys, args.epoch)  # seals and chain checked
    if args.epoch is not None:
        report = write_epoch_report(args.run_dir, manifests[0], args.lang)
        print(report['summary'])
        print(join(epoch_dir(args.run_dir, args.epoch), REPORT_HTML))
        return 0
    if not manifests:
        raise NovationError(f'{args.run_dir}: the stream has committed no epoch yet: nothing '
                            f'to report')
    report = write_stream_report(args.run_dir, manifests[-1]['run_id'], manifests, args.lang,
                                 cut_over=exists(join(args.run_dir, CUTOVER_FILE)))
    print(report['summary'])
    print(report['pace'])
    print(join(args.run_dir, REPORT_HTML))
    return 0
