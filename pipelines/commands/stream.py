"""``novation stream``: carry live changes to the acquirer until cut-over."""

import argparse

from pipelines.options import stream_parser

SYNOPSIS = (
    'novation stream --config FILE [--snapshot RUN_DIR] [--run-id ID] [--until TIME | '
     '--seconds N] [--plan-hash SHA256] [Beam options]',
)
TAKES_BEAM_OPTIONS = True
RAW_ARGUMENTS = True  # parsed again by the command from the words after it


def add_parser(sub) -> argparse.ArgumentParser:
    command = sub.add_parser(
        'stream', help='carry live changes to the acquirer until cut-over',
        parents=[stream_parser(False)], allow_abbrev=False,
        description="Watch the stream section's feed files (JSON Lines or Avro: Debezium envelopes"
                    ' or change rows, and consent events; see docs/streaming.md) and deliver every'
                    " change with the batch's classification, consent gate, masking and "
                    'encryption, in epochs: encrypted Parquet, dead letters and retractions, and a'
                    ' manifest per epoch chained by sha256, under OUT/<stream id>/epochs. A change'
                    ' committed after a withdrawal is refused; a customer who withdraws after a '
                    'delivery is retracted. Runs on the local runner until --until, --seconds, '
                    'Ctrl-C or SIGTERM (each commits the open epoch, then writes the cut-over '
                    'manifest: the snapshot and every epoch); started again with the same --run-id'
                    ' (after a stop or a crash) it goes on after its last committed epoch and '
                    'delivers nothing twice. With --runner DataflowRunner it submits a streaming '
                    'job, whose feeds may also be Pub/Sub subscriptions (stream.changes, '
                    'stream.consent: projects/P/subscriptions/S); drain the job to cut over. Every'
                    ' epoch and the cut-over manifest name the plan; the audit log records the '
                    'start and the cut-over; a stream never changes plan midway (a resumed stream '
                    'or a snapshot under another plan is refused).')
    return command


def main(call) -> int:
    argv = call.argv
    from pipelines.stream import print_stream_summary, run_stream
    summary = run_stream(argv)
    if summary['status'] == 'dry-run':
        print('dry run: the streaming job was built and not submitted')
    elif summary['status'] == 'submitted':
        job = getattr(summary['result'], 'job_id', lambda: None)()
        print(f'submitted streaming job{f" {job}" if job else ""}: it runs until drained '
              f'(gcloud dataflow jobs drain JOB_ID --region REGION), then commits the open '
              f'epoch and writes {summary["stream_dir"]}/cutover.json')
    else:
        print_stream_summary(summary)
        return 0
    print(summary['stream_dir'])
    return 0
