"""``novation classify``: a draft annotated schema from a sample of a seller's unknown export.

For each column it proposes a type (from the sampled values, or the file's own types for Avro
and Parquet), a category and so a classification, from two kinds of evidence: what the
detectors find in the values (a column whose values are mobile numbers is ``cn_mobile``,
whatever its name) and what the column's name says, in English or Chinese (``手机号``,
``证件号码``, ``备注``). Values decide over names; where they disagree the field's doc says so.
A column with no evidence is proposed ``personal``: unknown data is treated as personal until a
person says otherwise.

The draft carries ``"draft": true``, which the config loader refuses: a person confirms every
field, then removes it. Evidence is described by counts, never by values.
"""

import csv
import io
import json
import posixpath
import re

import pyarrow as pa

from schemas import CATEGORIES
from pipelines.review import display_pad, display_width
from transforms.detect.detectors import KINDS, scan
from transforms.common.errors import ConfigError
from transforms.common.files import read_bytes
from transforms.write.tables import avro_type_of

__all__ = ['classify_export', 'draft_schema', 'propose_column']

SAMPLE_ROWS = 1000
_SAMPLE_BYTES = 8 << 20  # enough for the sample of any sane text export

# Column-name evidence: (pattern, category), first match wins; lower-cased names.
_NAME_RULES = [
    (r'password|passwd|pwd|密码|口令|pin_?code|cvv', 'auth_credential'),
    (r'身份证|证件号|national_?id|id_?(card|no|number)|identity', 'cn_resident_id'),
    (r'信用代码|uscc|credit_?code', 'cn_uscc'),
    (r'护照|passport', 'cn_passport'),
    (r'银行卡|卡号|账号|bank_?card|card_?no|account_?no|repayment_?account', 'bank_card'),
    (r'开户行|银行|bank', 'bank_name'),
    (r'手机|电话|联系方式|mobile|phone|tel', 'cn_mobile'),
    (r'邮箱|e-?mail', 'email'),
    (r'车牌|plate', 'cn_vehicle_plate'),
    (r'车架|vin', 'vehicle_vin'),
    (r'客户编号|客户号|客户id|cust(omer)?_?(id|no)', 'customer_id'),
    (r'合同|contract', 'contract_id'),
    (r'姓名|名字|客户名称|担保人|(^|_)name$|full_?name', 'person_name'),
    (r'性别|gender|(^|_)sex$', 'gender'),
    (r'出生|生日|birth|dob', 'birth_date'),
    (r'地址|住址|address|addr', 'address'),
    (r'城市|city', 'city'),
    (r'职业|occupation|job', 'occupation'),
    (r'单位|雇主|employer|company', 'employer'),
    (r'收入|月薪|工资|income|salary', 'income'),
    (r'评分|信用分|credit_?score|score', 'credit_score'),
    (r'备注|说明|记录|remark|note|comment|memo', 'free_text'),
    (r'利率|rate', 'rate'),
    (r'金额|本金|余额|amount|principal|balance|(^|_)payment$', 'amount'),
    (r'状态|status', 'status'),
    (r'产品|product', 'product'),
    (r'(时间|日期)$|_at$|time|date', 'timestamp'),
]
# A field name for a column whose own name is not an Avro name (e.g. 手机号).
_FIELD_NAMES = {'cn_resident_id': 'national_id', 'cn_mobile': 'mobile', 'person_name': 'name',
                'bank_card': 'bank_card', 'customer_id': 'customer_id', 'free_text': 'remarks'}
_IDENTIFIERS = set(KINDS) | {'customer_id', 'contract_id', 'vehicle_vin'}
_AVRO_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
_WHOLE_VALUE_SHARE = 0.5  # values that are identifiers of one kind: the column is of that kind


def name_category(column: str):
    lowered = column.lower()
    for pattern, category in _NAME_RULES:
        if re.search(pattern, lowered):
            return category
    return None


def _text_type(values):
    """An Avro type for text values (``None`` for empty values)."""
    present = [v.strip() for v in values if v is not None and v.strip() != '']
    if not present:
        return 'string'
    if all(re.fullmatch(r'-?(0|[1-9]\d{0,17})', v) for v in present):
        return 'long'
    decimals = [re.fullmatch(r'-?(\d+)\.(\d+)', v) for v in present]
    if all(re.fullmatch(r'-?\d+(\.\d+)?', v) for v in present) and any(decimals):
        scale = max(len(m.group(2)) for m in decimals if m)
        digits = max(len(v.lstrip('-').split('.')[0]) for v in present)
        return {'type': 'bytes', 'logicalType': 'decimal', 'precision': min(38, digits + scale
                                                                            + 2),
                'scale': scale}
    if all(re.fullmatch(r'\d{4}[-/]\d{2}[-/]\d{2}', v) for v in present):
        return {'type': 'int', 'logicalType': 'date'}
    if all(re.fullmatch(r'\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?',
                        v) for v in present):
        return {'type': 'long', 'logicalType': 'timestamp-micros'}
    if all(v.lower() in ('true', 'false') for v in present):
        return 'boolean'
    return 'string'


def _arrow_avro_type(t: pa.DataType):
    try:
        return avro_type_of(t)
    except ValueError:  # lists, structs, binary: proposed as text for a person to decide
        return 'string'


def propose_column(column: str, values, avro_type=None) -> dict:
    """The proposal for one column from its sampled values (pure): type, nullable, category,
    classification and the evidence, in counts."""
    texts = [None if v is None else str(v) for v in values]
    present = [t for t in texts if t is not None and t.strip() != '']
    avro_type = avro_type or _text_type(texts)
    evidence = []
    whole, inside = {}, {}
    for f in scan(present):
        if present[f.row].strip() == present[f.row][f.start:f.end]:
            whole[f.kind] = whole.get(f.kind, set()) | {f.row}
        else:
            inside[f.kind] = inside.get(f.kind, set()) | {f.row}
    by_values = None
    if present and whole:
        kind, rows = max(whole.items(), key=lambda kv: len(kv[1]))
        share = len(rows) / len(present)
        if share >= _WHOLE_VALUE_SHARE:
            by_values = kind
            evidence.append(f'{share:.0%} of {len(present):,} sampled values are {kind}')
    by_name = name_category(column)
    if by_name == 'timestamp' and not isinstance(avro_type, dict):
        by_name = None  # a time by its name, but its values are not times
    category = by_values or by_name
    if by_name and not by_values:
        evidence.append(f'the name suggests {by_name}')
    elif by_name and by_name != by_values:
        evidence.append(f'the name suggests {by_name}: the values decide')
    if inside and category in (None, 'free_text'):
        kinds = ', '.join(f'{k} in {len(r):,}' for k, r in sorted(inside.items()))
        evidence.append(f'free text holding identifiers ({kinds} of {len(present):,} values): '
                        f'consider method scrub')
        category = category or 'free_text'
    if category in _IDENTIFIERS and avro_type in ('int', 'long'):
        avro_type = 'string'  # identifiers are text: leading zeros, X check digits
    if category is None:
        evidence.append('no evidence: proposed personal until a person says otherwise')
    classification = CATEGORIES[category] if category else 'personal'
    return {'column': column, 'type': avro_type, 'nullable': len(present) < len(texts),
            'category': category, 'classification': classification, 'evidence': evidence,
            'sampled': len(texts)}


def draft_schema(name: str, proposals, source: str) -> dict:
    """The draft annotated Avro schema of a table from its column proposals."""
    fields, used = [], set()
    for i, p in enumerate(proposals):
        field_name = p['column'] if _AVRO_NAME.fullmatch(p['column']) else \
            _FIELD_NAMES.get(p['category']) or p['category'] or f'column_{i + 1}'
        base, n = field_name, 2
        while field_name in used:
            field_name, n = f'{base}_{n}', n + 1
        used.add(field_name)
        field = {'name': field_name,
                 'type': ['null', p['type']] if p['nullable'] else p['type'],
                 'classification': p['classification']}
        if p['category']:
            field['category'] = p['category']
        if field_name != p['column']:
            field['aliases'] = [p['column']]
        field['doc'] = 'DRAFT: ' + '; '.join(p['evidence'])
        fields.append(field)
    subject = next((f['name'] for f, p in zip(fields, proposals)
                    if p['category'] == 'customer_id'), fields[0]['name'])
    return {'type': 'record', 'name': name, 'draft': True,
            'doc': f'Draft from novation classify of {source}: confirm every field '
                   f'(classification, category, type), the subject key and any primary key, '
                   f'then remove "draft".',
            'subject_key': subject, 'fields': fields}


def _sample(path, fmt, encoding, rows, table=None):
    """(columns, {column: values}, {column: avro type or None}) of the first ``rows`` rows
    (for a change feed, ``cdc``: of the rows of the seller's ``table``)."""
    data = read_bytes(path, what='export')
    if fmt == 'cdc':
        return _feed_sample(data, table, rows)
    if fmt == 'csv':
        text = data[:_SAMPLE_BYTES].decode(encoding, errors='replace').lstrip('\ufeff')
        reader = csv.reader(io.StringIO(text, newline=''))
        header = next(reader, None)
        if not header:
            raise ConfigError(f'{path}: the file is empty')
        body = [r for _, r in zip(range(rows), reader)]
        return header, {c: [r[i] if i < len(r) else None for r in body]
                        for i, c in enumerate(header)}, {}
    if fmt == 'jsonl':
        lines = data[:_SAMPLE_BYTES].decode(encoding, errors='replace').splitlines()
        records = []
        for line in lines:
            if len(records) >= rows:
                break
            try:
                value = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                records.append(value)
        columns = list(dict.fromkeys(k for r in records for k in r))
        return columns, {c: [None if r.get(c) is None else str(r.get(c)) for r in records]
                         for c in columns}, {}
    if fmt == 'parquet':
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(pa.BufferReader(data))
        batch = next(pf.iter_batches(batch_size=rows), None)
        table = pa.Table.from_batches([batch]) if batch is not None else \
            pf.schema_arrow.empty_table()
        return table.column_names, {c: table.column(c).to_pylist()
                                    for c in table.column_names}, \
            {f.name: _arrow_avro_type(f.type) for f in table.schema}
    import fastavro
    reader = fastavro.reader(io.BytesIO(data))
    records = [r for _, r in zip(range(rows), reader)]
    fields = reader.writer_schema['fields']
    types = {}
    for f in fields:  # the file's own Avro types, unions with null unwrapped
        branches = [t for t in f['type'] if t != 'null'] if isinstance(f['type'], list) \
            else [f['type']]
        if len(branches) == 1:
            types[f['name']] = branches[0]
    columns = [f['name'] for f in fields]
    return columns, {c: [r.get(c) for r in records] for c in columns}, types


def _feed_sample(data, table, rows):
    """The rows of ``table`` (its name as the CDC tool gives it, or ``db.table``) in a
    change feed file, in any form the stream reads: a new column shows with its values."""
    import time
    from transforms.stream.changes import Change, parse_change
    read_at = int(time.time() * 10**6)
    records = []
    for line in data[:_SAMPLE_BYTES].decode('utf-8', errors='replace').splitlines():
        if len(records) >= rows:
            break
        try:
            raw = json.loads(line) if line.strip() else None
        except (ValueError, RecursionError):
            continue
        for change in parse_change(raw, read_at=read_at):
            if isinstance(change, Change) and table in (
                    change.table, f'{change.database}.{change.table}'):
                records.append(change.row)
    columns = list(dict.fromkeys(k for r in records for k in r))
    return columns, {c: [None if r.get(c) is None else str(r.get(c)) for r in records]
                     for c in columns}, {}


FORMATS = {'csv': 'csv', 'jsonl': 'jsonl', 'ndjson': 'jsonl', 'json': 'jsonl',
           'parquet': 'parquet', 'avro': 'avro'}


def classify_export(path: str, *, fmt=None, encoding='utf-8', rows=SAMPLE_ROWS,
                    name=None, table=None) -> tuple:
    """(draft schema, proposals) for the export at ``path``, or for the rows of the seller's
    ``table`` in a change feed file (``fmt`` cdc)."""
    ext = posixpath.splitext(path)[1].lower().lstrip('.')
    fmt = fmt or FORMATS.get(ext)
    if fmt not in ('csv', 'jsonl', 'parquet', 'avro', 'cdc'):
        raise ConfigError(f'{path}: cannot tell the format from the name; give --format '
                          f'csv|jsonl|avro|parquet|cdc')
    if (fmt == 'cdc') != (table is not None):
        raise ConfigError('--table names the seller\'s table in a change feed: give it with '
                          '--format cdc, and only then')
    try:
        columns, values, types = _sample(path, fmt, encoding, rows, table)
    except (ValueError, OSError, pa.ArrowException) as e:
        raise ConfigError(f'{path}: cannot be read as {fmt}'
                          f'{" in " + encoding if fmt in ("csv", "jsonl") else ""} '
                          f'({type(e).__name__})') from None
    if not columns:
        raise ConfigError(f'{path}: no row of table {table!r} in the sampled lines')
    proposals = [propose_column(c, values[c], types.get(c)) for c in columns]
    record = name or re.sub(r'[^A-Za-z0-9_]', '_', (table or '').split('.')[-1] or
                            posixpath.basename(path).split('.')[0]) or 'table'
    if not _AVRO_NAME.fullmatch(record):
        record = f't_{record}'
    return draft_schema(record, proposals, posixpath.basename(path)), proposals


def format_proposals(proposals) -> str:
    rows = [(p['column'], json.dumps(p['type']) if isinstance(p['type'], dict) else p['type'],
             p['classification'], p['category'] or '', '; '.join(p['evidence']))
            for p in proposals]
    headers = ('column', 'type', 'classification', 'category', 'evidence')
    widths = [max(display_width(h), *(display_width(r[i]) for r in rows))
              for i, h in enumerate(headers[:4])]
    lines = ['  ' + '  '.join(display_pad(h, w) for h, w in zip(headers, widths)) +
             '  evidence']
    for r in rows:
        lines.append('  ' + '  '.join(display_pad(c, w) for c, w in zip(r, widths)) + '  ' +
                     r[4])
    return '\n'.join(lines)

