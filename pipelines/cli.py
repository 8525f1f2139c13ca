"""The ``novation`` command.

    novation plan --config FILE [--format text|md|json]   what a run will do, before it runs
    novation plan --diff A B                       compare two plans (configs or plan files)
    novation classify EXPORT [--format F] --out draft.avsc   draft a schema from an export (or
                                                           a change feed: --format cdc --table T)
    novation run --config FILE [Beam options]     migrate a seller export
    novation demo [--workdir DIR] [--customers N]  generate demo data and migrate it
    novation stream --config FILE [--until TIME]   carry live changes until cut-over
    novation keys init DIR [--master-key URI]      create a keyring (KMS-wrapped, or in clear)
    novation keys show|rotate|add|share DIR ...    inspect, rotate, extend or share a keyring
    novation decrypt RUN_DIR --keys DIR --table NAME [--deadletter] [--epoch N] --out FILE
    novation report RUN_DIR --keys DIR [--lang en|zh]   the compliance report of a run, again
    novation verify RUN_DIR --keys DIR             recheck a run and scan it for identifiers
    novation review RUN_DIR --keys DIR [filters] [--out F | --decide D --by NAME]
    novation signoff RUN_DIR --keys DIR --by NAME  sign off a run's review
    novation audit verify|show OUT_DIR [--keys D]  check (and its seals) or show the audit log
    novation clean OUT_DIR [--scratch DIR] [--yes]  what runs that did not finish left behind
    novation notice NOTICE_DIR --keys DIR --out F  the seller's notification list, decrypted
    novation incident --run RUN_DIR --file PATH --keys DIR [--notice DIR --out F]
    novation replay RUN_DIR --config FILE [--only N,...]   move the dead letters marked replay
    novation backfill STREAM_DIR (--keys DIR --list F | --config FILE --export TABLE=PATH...)
    novation detokenize --run RUN_DIR --keys DIR --field TABLE.FIELD (TOKEN... | --in FILE)
    novation pseudonym --keys DIR (--domain D | --run RUN_DIR --field TABLE.FIELD) VALUE...

User errors print one line (``novation: error: ...``) and exit 2; a run aborted on the
dead-letter limit exits 3. Tracebacks are for bugs.
"""

import argparse
import collections
import contextlib
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


_PROGRESS_HELP = ('Progress (the step, rows read, written and refused, the rate and the time '
                  'left) goes to stderr: a live line on a terminal, else a line every 10 s.')


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='novation',
        description='Move a customer book from a seller to an acquirer: classified, '
                    'consent-filtered, masked and encrypted, with encrypted dead letters and a '
                    'manifest that proves nothing was lost.')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='also log the run id, its directory and how many workers read '
                             '(may also follow the command)')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    from pipelines.options import add_verbose_flag, run_parser
    sub.add_parser(
        'run', help='run a migration from a transfer config', parents=[run_parser(False)],
        allow_abbrev=False,
        description='Run a migration. Options not listed here are Beam pipeline options; one '
                    'that Beam does not know either stops the run before it starts. '
                    'Without --runner it runs locally: in this process, or with one worker '
                    'process per core when the seller\'s CSV files that workers can share (32 '
                    'MB or more each, uncompressed) total 128 MB or more '
                    '(--direct_num_workers and --direct_running_mode override); '
                    '--runner DataflowRunner --project P --region R --temp_location gs://... '
                    '--setup_file ./setup.py runs it on Dataflow (see docs/dataflow.md); '
                    '--runner PortableRunner --job_endpoint HOST:PORT on a portable job '
                    'service. The run keeps per-customer state, and the rows of tables with a '
                    'primary key while their duplicates are found, in encrypted scratch files '
                    'under --temp_location (default: this machine\'s temporary directory; about '
                    '0.2 KB a row) and removes them when it ends. ' + _PROGRESS_HELP)

    plan = sub.add_parser(
        'plan', help='print what a run will do to every field, before any data moves',
        description='Read the config and its schemas (no seller data) and print the plan: for '
                    'every field of every table its classification and category, the masking '
                    'method and its parameters, the delivered type, the key that protects it '
                    '(so who can read it), and whether it is dropped, withheld without '
                    'separate consent or delivered in clear; the consent rules and the reason '
                    'codes the run can give. The plan has a sha256: every run records it in '
                    'its manifest, and novation run --plan-hash H refuses to start if the config '
                    'no longer gives the approved plan. With --diff, compare two plans, each a '
                    'config or a plan saved with --format json; exits 1 if they differ.')
    plan.add_argument('--config', help='transfer config (YAML)')
    plan.add_argument('--format', dest='plan_format', choices=('text', 'md', 'json'),
                      default='text', help='text (default), md (Markdown) or json')
    plan.add_argument('--out', metavar='FILE', help='write the plan to FILE instead of stdout')
    plan.add_argument('--diff', nargs=2, metavar=('A', 'B'),
                      help='compare plan A with plan B (configs or plan JSON files)')

    classify = sub.add_parser(
        'classify', help='draft an annotated schema from a sample of an unknown export',
        description='Sample an export (the first --sample rows) and write a draft annotated '
                    'schema: per column a type, and a category and classification proposed from '
                    'what the identifier detectors find in the values and what the column\'s '
                    'name says (English or Chinese; values decide over names). Columns with no '
                    'evidence are proposed personal. Chinese column names become aliases of '
                    'English field names. The draft holds "draft": true, which novation run '
                    'refuses until a person has confirmed every field and removed it. Prints '
                    'the proposals with their evidence, as counts, never values.')
    classify.add_argument('export', metavar='EXPORT_FILE', help='a seller export (local or gs://)')
    classify.add_argument('--format', dest='export_format',
                          choices=('csv', 'jsonl', 'avro', 'parquet', 'cdc'),
                          help='default: from the file name; cdc: a change feed file (any form '
                               'novation stream reads), with --table')
    classify.add_argument('--table', metavar='NAME',
                          help='with --format cdc: the seller\'s table (as the CDC tool names '
                               'it, or db.table) whose rows to sample, e.g. to draft the '
                               'field for a column the stream holds back')
    classify.add_argument('--encoding', default='utf-8',
                          help='text encoding of csv/jsonl (utf-8, gbk, gb18030; default utf-8)')
    classify.add_argument('--sample', type=int, default=1000, metavar='N',
                          help='rows to sample (default 1000)')
    classify.add_argument('--name', help='the table (record) name (default: from the file name)')
    classify.add_argument('--out', required=True, metavar='FILE', help='the draft .avsc to write')

    from pipelines.options import stream_parser
    sub.add_parser(
        'stream', help='carry live changes to the acquirer until cut-over',
        parents=[stream_parser(False)], allow_abbrev=False,
        description='Watch the stream section\'s feed files (JSON Lines or Avro: Debezium '
                    'envelopes or change rows, and consent events; see docs/streaming.md) and deliver '
                    'every change with the batch\'s classification, consent gate, masking and '
                    'encryption, in epochs: encrypted Parquet, dead letters and retractions, '
                    'and a manifest per epoch chained by sha256, under OUT/<stream id>/epochs. '
                    'A change committed after a withdrawal is refused; a customer who withdraws '
                    'after a delivery is retracted. Runs on the local runner until --until, '
                    '--seconds, Ctrl-C or SIGTERM (each commits the open epoch, then writes the '
                    'cut-over manifest: the snapshot and every epoch); started again with the '
                    'same --run-id (after a stop or a crash) it goes on after its last '
                    'committed epoch and delivers nothing twice. With --runner DataflowRunner '
                    'it submits a streaming job, whose feeds may also be Pub/Sub subscriptions '
                    '(stream.changes, stream.consent: projects/P/subscriptions/S); drain the '
                    'job to cut over. Every epoch and the cut-over manifest name the plan; '
                    'the audit log records the start and the cut-over; a stream never changes '
                    'plan midway (a resumed stream or a snapshot under another plan is '
                    'refused).')

    demo = sub.add_parser(
        'demo', help='generate demo exports, keys and config, then migrate them',
        allow_abbrev=False,
        description='Generate a demo seller export in all four formats (customers as GBK CSV, '
                    'contracts as Parquet, repayments as JSON Lines with Chinese keys, '
                    'collection calls as Avro with legacy field names), a consent registry and '
                    'an erasure list, with planted problems of every kind; a demo keyring (in '
                    'clear, demo only) and the config, all under WORKDIR; then migrate it. '
                    'Prints the run directory last. Other options are Beam pipeline options. '
                    + _PROGRESS_HELP)
    demo.add_argument('--workdir', help='where to put everything (default: a new temporary '
                                        'directory)')
    demo.add_argument('--customers', type=int, default=10_000,
                      help='number of customers to generate (default 10000)')
    demo.add_argument('--seed', type=int, default=20261123,
                      help='random seed: the same seed gives the same data (default 20261123)')
    demo.add_argument('--live', action='store_true',
                      help='then stream the seller\'s live changes: waves of change and '
                           'consent files land under WORKDIR/feeds for about 10 s while '
                           'novation stream carries them on from the migration (a line per '
                           'epoch committed), then cut over; prints the stream directory '
                           'before the run directory')

    keys = sub.add_parser('keys', help='create, inspect, rotate and extend keyrings',
                          description='Manage keyrings: one Tink keyset per role, stored '
                                      'encrypted under a KMS master key or, for demos and '
                                      'tests, in clear.')
    keys_sub = keys.add_subparsers(dest='keys_command', required=True, metavar='ACTION')
    init = keys_sub.add_parser(
        'init', help='create a new keyring',
        description='Create a keyring with the roles pseudonym, token, data.footer, '
                    'data.internal, data.personal, data.sensitive, data.avro, deadletter, '
                    'notice and manifest (and column.NAME for each --column). With --master-key every keyset is '
                    'encrypted under that master key (Tink KMS envelope); without it keysets '
                    'are stored in clear JSON, for demos and tests only.')
    init.add_argument('directory', help='new or empty local directory')
    init.add_argument('--master-key', metavar='URI',
                      help='gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K (needs '
                           "novation[gcp]) or local-kms://PATH (an AEAD keyset file kept apart "
                           'from the keyring; created if missing)')
    init.add_argument('--column', action='append', default=[], metavar='NAME',
                      help='also create column.NAME, the own key of columns masked with '
                           '"encrypt" (NAME is TABLE.FIELD unless the policy names a key); '
                           'repeatable')
    show = keys_sub.add_parser(
        'show', help='list roles, key ids, status and creation times (never key material)',
        description='List every role of a keyring with its key ids, which one is primary, '
                    'their status and creation times. Key material is never printed.')
    show.add_argument('directory', help='keyring directory (local or gs://)')
    rotate = keys_sub.add_parser(
        'rotate', help='add a new primary key; files written before stay decryptable',
        description='Give roles a new primary key. Old keys stay in the keyset, so files '
                    'written before still decrypt; new files use the new key. By default '
                    'every role but pseudonym and token rotates (data.*, column.*, deadletter, '
                    'notice, manifest). pseudonym and token rotate '
                    'only when named: that changes every pseudonym and token, and joins with '
                    'earlier deliveries break.')
    rotate.add_argument('directory', help='local keyring directory')
    rotate.add_argument('--role', action='append', default=[], metavar='ROLE',
                        help='a role to rotate (repeatable; default: every role but '
                             'pseudonym and token)')
    rotate.add_argument('--audit', metavar='OUT_DIR',
                        help='record the rotation (roles, new key ids) in the audit log of '
                             'this output root')
    add = keys_sub.add_parser(
        'add', help='add keysets for new roles (e.g. column.customers.mobile)',
        description='Add a keyset for each new role, e.g. column.customers.mobile for a '
                    'column masked with "encrypt", under the keyring\'s protection.')
    add.add_argument('directory', help='local keyring directory')
    add.add_argument('roles', nargs='+', metavar='ROLE', help='role to add')
    share = keys_sub.add_parser(
        'share', help='copy some roles into a new keyring for a key holder',
        description='Create a keyring at DEST holding the named roles of the keyring at '
                    'SOURCE (same keys, same protection), to give a key holder only what they '
                    'read: the acquirer\'s data team data.* (or data.avro), a compliance '
                    'operator deadletter. The manifest role is always added as its public '
                    'half: it checks the seal of every manifest and cannot make one. Share '
                    'again after rotating the manifest key. Give the roles with --role, or '
                    'name a holder of the config\'s key_holders (the plan\'s "Who can read '
                    'what") with --holder and --config.')
    share.add_argument('directory', metavar='SOURCE', help='local keyring directory')
    share.add_argument('destination', metavar='DEST', help='new local directory')
    share.add_argument('--role', action='append', metavar='ROLE', dest='roles',
                       help='a role to give (repeatable)')
    share.add_argument('--holder', metavar='NAME',
                       help='give the roles the config\'s key_holders name for NAME')
    share.add_argument('--config', metavar='FILE', help='the migration config (with --holder)')

    decrypt = sub.add_parser(
        'decrypt', help='decrypt a table (or its dead letters) of a finished run or a stream',
        description='Check a run against its manifest (crc32c of every file) and write one '
                    'table, decrypted, to a file: .csv, .jsonl or .parquet by extension. Of a '
                    'stream: every epoch (seals and chain checked, and once it has cut over '
                    'exactly the epochs cutover.json lists), in the order to apply them, or one '
                    '(--epoch N).')
    decrypt.add_argument('run_dir', metavar='RUN_DIR',
                         help='OUT/<run_id> of a finished run, or OUT/<stream id> of a stream')
    decrypt.add_argument('--keys', required=True, help='keyring directory')
    decrypt.add_argument('--table', required=True, help='table name')
    decrypt.add_argument('--deadletter', action='store_true',
                         help="the table's dead letters (needs the deadletter key)")
    decrypt.add_argument('--out', required=True, help='output file (.csv, .jsonl, .parquet)')
    decrypt.add_argument('--epoch', type=int, metavar='N',
                         help='of a stream (RUN_DIR = OUT/<stream id>): that epoch only; by '
                              'default every epoch, in the order to apply them, with an '
                              '__epoch column')

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
    report.add_argument('--keys', required=True,
                        help='keyring directory (its manifest key checks the manifest\'s seal; '
                             'the public half is enough)')

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
    verify.add_argument('--keys', required=True, help='keyring directory')

    review = sub.add_parser(
        'review', help='show, export or decide on the dead letters of a run (compliance)',
        description='Decrypt the dead letters of a run (with the deadletter key only) and show '
                    'those the filters select as a table, or write them to --out (.csv or '
                    '.jsonl) for your own tools. With --decide, record a decision for that '
                    'group in the run\'s review.json: replay (move them once their problem is '
                    'fixed), discard (with --note) or hold. An erased customer\'s dead letter '
                    'has no raw row, whatever the filter.')
    review.add_argument('run_dir', metavar='RUN_DIR',
                        help='OUT/<run_id> of a finished run, or OUT/<stream id> (the dead '
                             'letters of every epoch, each with its epoch)')
    review.add_argument('--keys', required=True, help='keyring directory (its deadletter key)')
    review.add_argument('--table', help='only this table')
    review.add_argument('--reason', help='only this reason code (e.g. malformed, no_consent)')
    review.add_argument('--field', help='only dead letters about this field')
    review.add_argument('--epoch', type=int, metavar='N', help='of a stream: only this epoch')
    review.add_argument('--source', dest='source_file', metavar='FILE',
                        help='only this source file (its name, as the report shows it, or '
                             'its path)')
    review.add_argument('--out', metavar='FILE', help='write them all to FILE (.csv, .jsonl)')
    review.add_argument('--limit', type=int, default=50,
                        help='rows shown in the terminal (default 50)')
    review.add_argument('--decide', choices=('replay', 'discard', 'hold'),
                        help='record this decision for the dead letters selected')
    review.add_argument('--note', help='why (required to discard)')
    review.add_argument('--by', help='who decides (required with --decide)')

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

    clean = sub.add_parser(
        'clean', help='list, and with --yes remove, what runs that did not finish left behind',
        description='A run killed or aborted leaves its run directory without a manifest '
                    '(nothing in it was delivered) and may leave its encrypted scratch '
                    'directory and temporary folders. This lists each, with its size and why it '
                    'may go; --yes removes them. A run still going holds a lock and is never '
                    'touched; streams are left alone (a restarted stream cleans its own '
                    'unfinished epoch). Local output roots only.')
    clean.add_argument('out_dir', metavar='OUT_DIR', help='the output root (output.path)')
    clean.add_argument('--scratch', metavar='DIR',
                       help='where runs put their scratch directories (--temp_location; '
                            'default: this machine\'s temporary directory)')
    clean.add_argument('--yes', action='store_true', help='remove what is listed')

    audit = sub.add_parser(
        'audit', help='verify or show the audit log of an output root',
        description='Every run, stream, review decision, sign-off, replay, clean (and key '
                    'rotation given --audit) appends a record to OUT_DIR/audit/: one JSON file '
                    'each, holding the sha256 of the record before it. verify checks the chain '
                    '(an edited, removed or reordered record breaks it) and that each committed '
                    'run\'s manifest.json and each stream\'s cutover.json is the one recorded; '
                    'exits 1 on any problem. show lists the records. The log holds ids, hashes, '
                    'counts and staff names, no customer data.')
    audit_sub = audit.add_subparsers(dest='audit_command', required=True, metavar='ACTION')
    for action, text in (('verify', 'check the chain and the manifests it names'),
                         ('show', 'list the records, oldest first')):
        a = audit_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + '.')
        a.add_argument('out_dir', metavar='OUT_DIR', help='an output root (output.path)')
        if action == 'verify':
            a.add_argument('--keys', metavar='DIR',
                           help='a keyring holding the manifest key (its public half, as '
                                'shared, suffices): also check the seals that anchor the chain')

    notice = sub.add_parser(
        'notice', help='decrypt the seller\'s notification list of a run (notice key)',
        description='A run whose config has notice.path writes there, under <run_id>, the '
                    'seller\'s notification list (PIPL Art. 22), encrypted under the notice key: '
                    'a row per customer (the seller\'s own id) and table, with the categories of '
                    'data that moved and the recipient\'s name and contact, or why the table\'s '
                    'records were refused; moved says whether anything about them moved. '
                    'Customers who asked for erasure are counted, not listed. This command '
                    'checks the files against notice.json and writes the list decrypted to '
                    '--out (.csv, .jsonl or .parquet); it prints counts only.')
    notice.add_argument('notice_dir', metavar='NOTICE_DIR', help='notice.path/<run_id>')
    notice.add_argument('--keys', required=True, help='keyring directory (its notice key)')
    notice.add_argument('--out', required=True, metavar='FILE', help='.csv, .jsonl or .parquet')

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
    incident.add_argument('--keys', required=True, help='keyring directory')
    incident.add_argument('--notice', metavar='NOTICE_DIR',
                          help='the run\'s notification list (notice.path/<run_id>)')
    incident.add_argument('--out', metavar='FILE',
                          help='write the customers to notify here (.csv, .jsonl, .parquet)')

    backfill = sub.add_parser(
        'backfill', help='deliver the rows of customers who consented again, through the '
                         'running stream',
        description='A customer whose rows the acquirer lacks (refused at the snapshot, '
                    'retracted after a withdrawal, or delivered without their sensitive '
                    'fields) and who consents again is listed by the stream in the epoch that '
                    'saw the consent (backfill in its manifest). With --list, write the '
                    'customers every epoch listed (ids in clear: the deadletter key) for the '
                    'seller to export their current rows. With --export TABLE=PATH (one per '
                    'table, any format the table\'s export may have), read that targeted export '
                    'with the batch\'s readers and land the rows of listed customers as one '
                    'file of snapshot reads, committed at --exported-at (default now), in '
                    'stream.backfill, which the stream watches as one more change feed: it '
                    'decides, masks, encrypts and commits them as epochs of its own, its key '
                    'order keeping the newest change of each row. Rows of customers not listed '
                    'are left out and counted; an export with unreadable rows lands nothing.')
    backfill.add_argument('run_dir', metavar='STREAM_DIR', help='OUT/<stream id>')
    backfill.add_argument('--keys', help='keyring directory (its deadletter and manifest keys; '
                                         'with --list)')
    backfill.add_argument('--list', metavar='FILE', dest='list_out',
                          help='write the customers to backfill to FILE (.csv or .jsonl)')
    backfill.add_argument('--config', help='the stream\'s config (with --export)')
    backfill.add_argument('--export', action='append', metavar='TABLE=PATH', default=[],
                          help='the targeted export of a table (repeat for each table)')
    backfill.add_argument('--exported-at', metavar='TIME',
                          help='when the export was taken, ISO 8601 with its zone (default: '
                               'now); its rows are committed then')

    signoff = sub.add_parser(
        'signoff', help='sign off the review of a run or a stream',
        description='Record in the run\'s review.json that NAME signed off its review: the '
                    'time, the sha256 of its manifest and of its config, and the decisions in '
                    'force. Of a stream: the sha256 of its cutover.json, or while it runs of '
                    'its last epoch\'s manifest (the chain ties it to the others), and how many '
                    'epochs it covers.')
    signoff.add_argument('run_dir', metavar='RUN_DIR',
                         help='OUT/<run_id> of a finished run, or OUT/<stream id>')
    signoff.add_argument('--keys', required=True,
                         help='keyring directory (its manifest key checks the manifest\'s '
                              'seal; the public half is enough)')
    signoff.add_argument('--by', required=True, help='who signs off')

    detok = sub.add_parser(
        'detokenize', help='reverse tokenized values of a run (token key holders only)',
        description='Turn tokens of a tokenized field back into the original values, with the '
                    'token key. Prints "token<TAB>value" lines, or writes a CSV (token,value) '
                    'with --out. Invalid tokens are reported and left empty. Fields masked with '
                    '"hash" cannot be reversed: their pseudonyms are one-way.')
    detok.add_argument('--run', required=True, metavar='RUN_DIR',
                       help='OUT/<run_id> of the run that delivered the tokens (its manifest '
                            'says how the field was masked)')
    detok.add_argument('--keys', required=True, help='keyring directory (needs the token key)')
    detok.add_argument('--field', required=True, metavar='TABLE.FIELD', help='tokenized field')
    detok.add_argument('tokens', nargs='*', metavar='TOKEN', help='tokens to reverse')
    detok.add_argument('--in', dest='infile', metavar='FILE',
                       help='read tokens from FILE, one per line (the batch form)')
    detok.add_argument('--out', metavar='FILE', help='write token,value CSV to FILE')
    pseudo = sub.add_parser(
        'pseudonym', help='compute the pseudonym of a value you already hold (pseudonym key)',
        description='Print the pseudonym that method hash gives each value: hex of the first 16 '
                    'bytes of HMAC-SHA256 under the keyring\'s pseudonym key, over the domain '
                    '(its UTF-8 length as 2 bytes big-endian, then the domain) followed by the '
                    'value\'s UTF-8 text. The domain is the field\'s (its category unless the '
                    'policy names one; --run and --field read it from a run\'s manifest); '
                    'pseudonyms in text scrubbed with replace: pseudonym use the identifier\'s '
                    'kind (e.g. cn_mobile). One pseudonym a line, in the order given; the '
                    'values are not printed.')
    pseudo.add_argument('--keys', required=True, help='keyring directory (needs the pseudonym key)')
    pseudo.add_argument('--domain', help='pseudonym domain, e.g. customer_id or cn_mobile')
    pseudo.add_argument('--run', metavar='RUN_DIR', help='a run whose manifest gives the domain')
    pseudo.add_argument('--field', metavar='TABLE.FIELD', help='hashed field (with --run)')
    pseudo.add_argument('values', nargs='*', metavar='VALUE', help='values to pseudonymize')
    pseudo.add_argument('--in', dest='infile', metavar='FILE',
                        help='read values from FILE, one per line')

    for command in [*sub.choices.values(), *keys_sub.choices.values()]:
        if not any('-v' in a.option_strings for a in command._actions):
            add_verbose_flag(command)
    return parser


def _subparser(parser, args):
    """The parser of the subcommand ``args`` were parsed for: its errors show its usage."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices[args.command]
    if args.command == 'keys':
        keys_sub = next(a for a in command._actions
                        if isinstance(a, argparse._SubParsersAction))
        command = keys_sub.choices[args.keys_command]
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
        return stop.exit_code


def _main(argv) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    command = _subparser(parser, args)
    if extra and args.command not in ('run', 'demo', 'stream', 'replay'):
        command.error(f'unrecognized arguments: {" ".join(extra)}')
    if args.command == 'demo' and args.customers < 1:
        command.error('--customers must be at least 1')
    console = _configure_logging(args.verbose)
    from transforms.common.errors import DeadLetterLimitExceeded, NovationError
    try:
        if args.command == 'run':
            return _cmd_run(argv[argv.index('run') + 1:], console)
        if args.command == 'demo':
            from pipelines.migrate import check_beam_args
            check_beam_args(extra, command)  # before the demo spends time generating data
            return _cmd_demo(args, extra, console)
        if args.command == 'stream':
            return _cmd_stream(argv[argv.index('stream') + 1:])
        if args.command == 'replay':
            return _cmd_replay(argv[argv.index('replay') + 1:], console)
        if args.command == 'plan':
            return _cmd_plan(args, command)
        if args.command == 'classify':
            return _cmd_classify(args, command)
        if args.command == 'keys':
            return _cmd_keys(args)
        if args.command == 'detokenize':
            return _cmd_detokenize(args, command)
        if args.command == 'pseudonym':
            return _cmd_pseudonym(args, command)
        if args.command == 'report':
            return _cmd_report(args)
        if args.command == 'review':
            return _cmd_review(args)
        if args.command == 'verify':
            return _cmd_verify(args)
        if args.command == 'backfill':
            return _cmd_backfill(args, command)
        if args.command == 'signoff':
            return _cmd_signoff(args)
        if args.command == 'audit':
            return _cmd_audit(args)
        if args.command == 'clean':
            return _cmd_clean(args)
        if args.command == 'notice':
            return _cmd_notice(args)
        if args.command == 'incident':
            return _cmd_incident(args, command)
        return _cmd_decrypt(args)
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


@contextlib.contextmanager
def _showing_progress(console):
    """Count progress in this process and the local worker processes it starts (they inherit
    the environment), and show it until the command ends."""
    from transforms.common.progress import ENABLE
    os.environ[ENABLE] = '1'
    console.start()
    try:
        yield
    finally:
        console.stop()
        del os.environ[ENABLE]


def _cmd_run(argv, console):
    from pipelines.migrate import run
    from pipelines.summary import print_summary
    with _showing_progress(console):
        result = run(argv)
    if result.status == 'done':
        print_summary(result.manifest, result.run_dir, result.seconds)
    elif result.status == 'dry-run':
        print('dry run: the job was built and not submitted')
    else:
        job = getattr(result.pipeline_result, 'job_id', lambda: None)()
        print(f'submitted{f" job {job}" if job else ""}; the manifest is written to '
              f'{result.run_dir}/manifest.json as the job\'s last step')
    print(result.run_dir)
    return 0


def _cmd_stream(argv):
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


def _load_plan(path):
    """A plan from a config (YAML) or a plan saved with --format json."""
    import json
    from config import load_config
    from config.plan import PLAN_FORMATS, build_plan, plan_sha256
    from transforms.common.errors import ConfigError
    from transforms.common.files import read_text
    if path.lower().endswith('.json'):
        try:
            plan = json.loads(read_text(path, what='plan'))
        except json.JSONDecodeError as e:
            raise ConfigError(f'{path}: not valid JSON (line {e.lineno})') from None
        if not isinstance(plan, dict) or plan.get('format') not in PLAN_FORMATS:
            raise ConfigError(f'{path}: not a plan (novation plan --format json writes one)')
        saved = plan.pop('sha256', None)
        if saved is not None and saved != plan_sha256(plan):
            raise ConfigError(f'{path}: the plan was edited after it was written (its sha256 '
                              f'does not match its content)')
        return plan
    return build_plan(load_config(path))


def _cmd_plan(args, parser):
    from config import load_config
    from config.plan import build_plan, diff_plans, plan_sha256, render_plan
    if bool(args.config) == bool(args.diff):
        parser.error('give --config FILE, or --diff A B')
    if args.diff:
        a, b = (_load_plan(p) for p in args.diff)
        text = diff_plans(a, b, *args.diff)
        if not text:
            print(f'the plans are the same (sha256 {plan_sha256(a)})')
            return 0
        print(f'the plans differ: {plan_sha256(a)[:16]}... -> {plan_sha256(b)[:16]}...')
        print(text, end='')
        return 1
    config = load_config(args.config)
    from transforms.common.files import exists
    if exists(config.consent.registry) and exists(config.consent.erasures):
        from pipelines.migrate import check_consent_files
        check_consent_files(config)  # a run would stop on it: say so now
    plan = build_plan(config)
    text = render_plan(plan, args.plan_format)
    if args.out:
        import posixpath
        from transforms.common.files import write_whole
        write_whole(posixpath.dirname(args.out) or '.', posixpath.basename(args.out),
                    text.encode('utf-8'))
        print(f'plan sha256 {plan_sha256(plan)} written to {args.out}')
    else:
        print(text, end='' if text.endswith('\n') else '\n')
    return 0


def _cmd_classify(args, parser):
    import json
    import posixpath
    from pipelines.classify import classify_export, format_proposals
    from transforms.common.files import write_whole
    if args.sample < 1:
        parser.error('--sample must be at least 1')
    if args.encoding not in ('utf-8', 'utf-8-sig', 'gbk', 'gb18030'):
        parser.error(f'--encoding {args.encoding}: allowed: utf-8, utf-8-sig, gbk, gb18030')
    draft, proposals = classify_export(args.export, fmt=args.export_format,
                                       encoding=args.encoding, rows=args.sample, name=args.name,
                                       table=args.table)
    write_whole(posixpath.dirname(args.out) or '.', posixpath.basename(args.out),
                json.dumps(draft, ensure_ascii=False, indent=2).encode('utf-8') + b'\n')
    print(format_proposals(proposals))
    print(f'draft schema of {len(proposals)} columns written to {args.out}: confirm every '
          f'field, then remove "draft": true')
    return 0


def _cmd_demo(args, beam_args, console):
    from pipelines.demo import run_demo
    with _showing_progress(console):
        run_demo(workdir=args.workdir, customers=args.customers, seed=args.seed,
                 beam_args=beam_args, out=lambda text: console.say(text, sys.stdout),
                 live=args.live)
    return 0


def _roles_to_share(args):
    """The roles ``keys share`` gives: --role, or the config's key_holders entry for --holder."""
    from transforms.common.errors import ConfigError
    if bool(args.roles) == bool(args.holder):
        raise ConfigError('keys share: give the roles with --role, or a holder with --holder '
                          'and --config (not both)')
    if args.roles:
        return args.roles
    if not args.config:
        raise ConfigError('keys share: --holder needs --config, whose key_holders name the '
                          'holder\'s roles')
    from config import load_config
    held = dict(load_config(args.config).key_holders)
    if args.holder not in held:
        raise ConfigError(f'{args.config}: key_holders: no holder {args.holder[:100]!r}; '
                          f'holders: {", ".join(held) or "none named"}')
    return list(held[args.holder])


def _cmd_keys(args):
    from transforms.keys import keyring as kr
    from transforms.keys.roles import DETERMINISTIC_ROLES
    path = args.directory
    if args.keys_command == 'init':
        uri = args.master_key
        if uri and uri.startswith(kr.LOCAL_KMS):
            local = uri[len(kr.LOCAL_KMS):]
            if not local:
                raise kr.KeyringError(f'--master-key {uri}: give the path of the master key '
                                      f'file after {kr.LOCAL_KMS}')
            if not os.path.exists(local):
                kr.create_local_master_key(local)
                print(f'created local master key {local}: keep it apart from the keyring '
                      f'and back it up; without it the keyring cannot be opened')
        keyring = kr.init_keyring(path, master_key_uri=uri, columns=args.column)
        print(f'keyring created in {path}')
        _print_keys(keyring)
        if keyring.protection == 'cleartext':
            print(f'warning: {kr.CLEARTEXT_WARNING}')
    elif args.keys_command == 'show':
        _print_keys(kr.load_keyring(path))
    elif args.keys_command == 'add':
        kr.add_roles(path, args.roles)
        print(f'added {", ".join(args.roles)} to {path}')
    elif args.keys_command == 'share':
        shared = kr.share_keyring(path, args.destination, _roles_to_share(args))
        print(f'keyring {args.destination} created with {", ".join(shared.roles)} of {path} '
              f'(manifest: the public half, to check seals)')
    else:
        roles = args.role or [r for r in kr.load_keyring(path, warn=False).roles
                              if r not in DETERMINISTIC_ROLES]
        rotated = kr.rotate_keyring(path, roles)
        for role, (old, new) in rotated.items():
            print(f'  {role:24s} primary key {old} -> {new}')
        if args.audit:
            from transforms.commit.audit import append_event
            append_event(args.audit, 'keys_rotated', keys=path,
                         keyring=os.path.basename(path.rstrip('/')),
                         roles={role: {'from': old, 'to': new}
                                for role, (old, new) in rotated.items()})
        changed = sorted(set(roles) & set(DETERMINISTIC_ROLES))
        if changed:
            print(f'warning: {", ".join(changed)} rotated: new pseudonyms/tokens differ from '
                  f'those of earlier deliveries, so joins with them break')
        print(f'rotated {len(roles)} role(s) in {path}; files written before still decrypt')
    return 0


def _print_keys(keyring):
    from transforms.keys.keyring import display_uri
    print(f'protection: {keyring.protection}'
          + (f' (master key {display_uri(keyring.master_key_uri)})'
             if keyring.protection == 'kms' else ''))
    rows = keyring.describe()
    width = max(len(r['role']) for r in rows)
    print(f'  {"role":{width}s} {"key id":>10s}  {"primitive":22s} {"status":8s} created')
    for row in rows:
        mark = '*' if row['primary'] else ' '
        print(f'  {row["role"]:{width}s} {row["key_id"]:>10d}{mark} {row["primitive"]:22s} '
              f'{row["status"]:8s} {row["created_at"]}')
    print('  (* primary: new data uses it; the others still decrypt)')


def _cmd_decrypt(args):
    from pipelines.decrypt import decrypt_table
    rows, withheld = decrypt_table(args.run_dir, keys=args.keys, table=args.table,
                                   deadletter=args.deadletter, out=args.out, epoch=args.epoch)
    what = 'dead letters' if args.deadletter else 'rows'
    print(f'{rows} {what} of {args.table} written to {args.out}')
    for column, role in sorted(withheld.items()):
        print(f'  withheld: {column} (under {role}, which this keyring does not hold)')
    return 0


def _cmd_replay(argv, console):
    from pipelines.commands.replay import run_replay
    from pipelines.summary import print_summary
    with _showing_progress(console):
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


def _cmd_review(args):
    from pipelines.review import decide, format_table, select, write_records
    from transforms.common.errors import NovationError
    group = {k: getattr(args, k) for k in ('table', 'reason', 'field', 'source_file', 'epoch')}
    if args.decide:
        if not args.by:
            raise NovationError('--decide needs --by NAME (who decides)')
        entry = decide(args.run_dir, args.keys, group, args.decide, by=args.by,
                       note=args.note)
        print(f'{entry["decision"]}: {entry["dead_letters"]:,} dead letter(s) of '
              f'{", ".join(f"{k} {v}" for k, v in group.items() if v) or "the whole run"}, '
              f'recorded in {args.run_dir}/review.json')
        return 0
    records = select(args.run_dir, args.keys, group)
    if args.out:
        write_records(records, args.out)
        print(f'{len(records):,} dead letter(s) written to {args.out}')
    else:
        print(format_table(records, args.limit))
    return 0


def _cmd_verify(args):
    from pipelines.decrypt import is_stream
    from pipelines.verify import format_verification, verify_run, verify_stream
    result = (verify_stream if is_stream(args.run_dir) else verify_run)(args.run_dir, args.keys)
    print(format_verification(result))
    return 1 if result['problems'] or result['identifiers'] else 0


def _write_people(rows, out):
    """Notification rows to ``out``: .csv, .jsonl or .parquet."""
    import pyarrow as pa
    from pipelines.decrypt import write_rows
    from transforms.commit.notice import NOTICE_SCHEMA
    write_rows(pa.Table.from_pylist(rows, schema=NOTICE_SCHEMA), out)


def _cmd_notice(args):
    from pipelines.decrypt import read_notice
    rows = read_notice(args.notice_dir, args.keys)
    _write_people(rows, args.out)
    customers = {r['customer_id'] for r in rows}
    moved = {r['customer_id'] for r in rows if r['moved']}
    print(f'{len(rows):,} rows about {len(customers):,} customers written to {args.out}: '
          f'{len(moved):,} whose data moved, {len(customers) - len(moved):,} whose data did '
          f'not')
    return 0


def _cmd_incident(args, parser):
    from pipelines.incident import assess_incident, format_incident
    if args.out and not args.notice:
        parser.error('--out needs --notice (the customers come from the notification list)')
    result = assess_incident(args.run, args.file, args.keys, args.notice)
    print(format_incident(result))
    if result['customers'] is not None and args.out:
        _write_people(result['customers'], args.out)
        print(f'  written to {args.out}')
    return 0


def _cmd_audit(args):
    from transforms.commit.audit import read_log, verify_log
    if args.audit_command == 'show':
        for r in read_log(args.out_dir):
            facts = ', '.join(f'{k} {v}' for k, v in r.items()
                              if k not in ('seq', 'at', 'event', 'sha256', 'prev_sha256',
                                           'seal'))
            print(f'{r.get("seq", "?"):>6}  {r.get("at", "")}  {r.get("event", "?"):15s} '
                  f'{facts}' + ('  [sealed]' if 'seal' in r else ''))
        return 0
    keyring = None
    if args.keys:
        from transforms.keys.keyring import READ_HINT, load_keyring
        from transforms.keys.seal import SEAL_ROLE
        keyring = load_keyring(args.keys, hint=READ_HINT, warn=False)
        keyring.require([SEAL_ROLE], ' (it checks the seals of the audit log)')
    result = verify_log(args.out_dir, keyring)
    if result['problems']:
        print(f'audit log of {args.out_dir}: BROKEN ({len(result["problems"])} problem(s) in '
              f'{result["records"]} records)')
        for p in result['problems']:
            print(f'  {p}')
        return 1
    print(f'audit log of {args.out_dir}: intact ({result["records"]} records, chain unbroken; '
          f'{result["runs"]} committed run(s) and {result["streams"]} cut-over stream(s), '
          f'each manifest the one recorded)')
    if result['anchored'] is None:
        print('  seals not checked: give --keys DIR to check that no record was edited and the '
              'chain recomputed')
    elif result['unanchored']:
        print(f'  sealed under the manifest key up to record {result["anchored"]}; the newest '
              f'{len(result["unanchored"])} record(s) ({", ".join(result["unanchored"])}) are '
              f'not sealed (written without the manifest key\'s private half): the next run '
              f'seals them')
    else:
        print(f'  sealed under the manifest key up to its newest record ({result["anchored"]})')
    return 0


def _cmd_clean(args):
    from pipelines.clean import find_leftovers, remove_leftovers
    found = find_leftovers(args.out_dir, args.scratch)
    for item in found:
        print(f'  {item["path"]}  {item["bytes"] / 1e6:,.1f} MB  {item["what"]}')
    total = sum(item['bytes'] for item in found) / 1e6
    if not found:
        print(f'nothing to clean under {args.out_dir}')
    elif args.yes:
        from transforms.commit.audit import append_event
        remove_leftovers(found)
        runs = sorted({os.path.basename(f['path']).removeprefix('novation-').removesuffix(
            '.running') for f in found if not os.path.basename(f['path']).startswith('.temp-')})
        append_event(args.out_dir, 'cleaned', runs=runs, removed=len(found),
                     bytes=sum(item['bytes'] for item in found))
        print(f'removed {len(found)} leftover(s), {total:,.1f} MB (recorded in the audit log)')
    else:
        print(f'{len(found)} leftover(s), {total:,.1f} MB: run again with --yes to remove them')
    return 0


def _cmd_backfill(args, parser):
    import datetime
    from config import load_config
    from pipelines.backfill import backfill_list, land_backfill, write_list
    if bool(args.list_out) == bool(args.export):
        parser.error('give --keys DIR --list FILE, or --config FILE --export TABLE=PATH ...')
    if args.list_out:
        if not args.keys:
            parser.error('--list needs --keys DIR (its deadletter key)')
        records = backfill_list(args.run_dir, args.keys)
        write_list(records, args.list_out)
        kinds = ', '.join(f'{k} {n:,}' for k, n in sorted(collections.Counter(
            r['kind'] for r in records).items())) or 'none'
        print(f'{len(records):,} customer(s) to backfill ({kinds}) written to {args.list_out}')
        return 0
    if not args.config:
        parser.error('--export needs --config FILE (the stream\'s)')
    exports = {}
    for item in args.export:
        table, sep, path = item.partition('=')
        if not sep or not table or not path:
            parser.error(f'--export {item}: give TABLE=PATH')
        exports[table] = path
    at = None
    if args.exported_at:
        try:
            at = datetime.datetime.fromisoformat(args.exported_at.replace('Z', '+00:00'))
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            parser.error(f'--exported-at {args.exported_at!r}: give an ISO 8601 time with its '
                         f'zone, e.g. 2026-12-07T18:00:00+08:00')
    result = land_backfill(args.run_dir, load_config(args.config), exports, at)
    tables = ', '.join(f'{t} {n:,}' for t, n in result['tables'].items())
    left = ', '.join(f'{t} {n:,}' for t, n in result['left_out'].items())
    print(f'{result["rows"]:,} row(s) of {result["customers"]:,} of the {result["listed"]:,} '
          f'customer(s) listed landed ({tables}); the stream delivers them in its next epochs')
    if left:
        print(f'  left out: {left}')
    print(result['path'])
    return 0


def _cmd_signoff(args):
    from pipelines.review import signoff
    entry = signoff(args.run_dir, keys=args.keys, by=args.by)
    covers = '' if 'epochs' not in entry else \
        f'{entry["epochs"]} epoch(s){", cut over" if entry["cut_over"] else " so far"}, '
    print(f'signed off by {entry["by"]} at {entry["at"]} ({covers}'
          f'{"cutover.json" if entry.get("cut_over") else "manifest"} sha256 '
          f'{entry["manifest_sha256"][:16]}..., {entry["decisions"]} decision(s) in force)')
    return 0


def _cmd_report(args):
    from pipelines.decrypt import is_stream, load_manifest
    from transforms.common.errors import NovationError
    from transforms.common.files import join
    from transforms.commit.report import REPORT_HTML
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
    from transforms.stream.epochs import (CUTOVER_FILE, epoch_dir, write_epoch_report,
                                   write_stream_report)
    from transforms.common.errors import NovationError
    from transforms.common.files import exists, join
    from transforms.commit.report import REPORT_HTML
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


def _cmd_pseudonym(args, parser):
    from pipelines.decrypt import hash_domain, load_manifest, pseudonyms
    from transforms.common.files import read_text
    if bool(args.domain) == bool(args.run or args.field) or bool(args.run) != bool(args.field):
        parser.error('give --domain D, or --run RUN_DIR with --field TABLE.FIELD')
    if bool(args.values) == bool(args.infile):
        parser.error('give values or --in FILE (not both)')
    domain = args.domain or hash_domain(load_manifest(args.run, args.keys), args.field)
    values = args.values or [line.rstrip('\r\n') for line in
                             read_text(args.infile, what='value file').splitlines()
                             if line.strip()]
    for pseudonym in pseudonyms(args.keys, domain, values):
        print(pseudonym)
    return 0


def _cmd_detokenize(args, parser):
    from pipelines.decrypt import detokenize
    from transforms.common.files import read_text
    if bool(args.tokens) == bool(args.infile):
        parser.error('give tokens or --in FILE (not both)')
    tokens = args.tokens or [line.strip() for line in
                             read_text(args.infile, what='token file').splitlines()
                             if line.strip()]
    pairs = detokenize(args.run, keys=args.keys, field=args.field, tokens=tokens)
    bad = sum(1 for _, value in pairs if value is None)
    if args.out:
        import csv
        with open(args.out, 'w', encoding='utf-8', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['token', 'value'])
            writer.writerows((t, '' if v is None else v) for t, v in pairs)
        print(f'{len(pairs) - bad} of {len(pairs)} tokens of {args.field} reversed into '
              f'{args.out}')
    else:
        for token, value in pairs:
            print(f'{token}\t{"" if value is None else value}')
    if bad:
        print(f'novation: {bad} token(s) are not valid tokens of {args.field} under this key',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
