"""``novation classify``: draft an annotated schema from a sample of an unknown export."""

import argparse

SYNOPSIS = (
    'novation classify EXPORT_FILE [--format F] [--encoding E] [--sample N] [--name T] '
     '[--table SELLER_TABLE] --out draft.avsc',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
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
    return classify


def main(call) -> int:
    args = call.args
    parser = call.parser
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
