"""The plan of a run (pure): what it will do to every field, read from the config alone.

``build_plan(config)`` reads no seller data. It says, per field of every table: its
classification and category, the masking method and its parameters, the delivered type, the key
role that protects it (and so who can read it), and whether it is dropped, withheld without
separate consent, or delivered with its value in clear; then the consent rules and the reason
codes the run can give. The plan's sha256 is over its canonical JSON: a run records it in its
manifest, and ``novation run --plan-hash H`` refuses to start when the config no longer gives the
plan that was approved.

What the hash covers: the transfer, the tables' fields and treatment, the consent rules, the
output format and the dead-letter limit. Not covered: where files are (export, output and key
paths), so the same plan can be run on a new export or a test copy.
"""

import difflib
import hashlib
import json

from transforms.common.reasons import REASONS
from transforms.keys.roles import key_role

__all__ = ['PLAN_FORMAT', 'PLAN_FORMATS', 'build_plan', 'diff_plans', 'plan_sha256',
           'render_plan']

PLAN_FORMAT = 'novation.plan/2'  # /2: who holds each key (key_holders), readable_by a list
PLAN_FORMATS = ('novation.plan/1', PLAN_FORMAT)  # what --diff reads

# What holding a key role lets one do, in words for the people approving the plan.
_KEY_ALLOWS = {
    'data.footer': 'opens the delivered Parquet files (footer: schema, row counts) and reads '
                   'their public columns; needed with every other data key',
    'data.internal': 'reads the delivered internal columns',
    'data.personal': 'reads the delivered personal columns',
    'data.sensitive': 'reads the delivered sensitive columns',
    'data.avro': 'reads the delivered Avro files whole',
    'deadletter': 'reads the refused records, with the seller\'s raw rows (compliance review)',
    'pseudonym': 'computes the pseudonym of a value it already holds (novation pseudonym), '
                 'so can confirm a guessed identity; derives the date shifts',
    'token': 'turns tokens back into the seller\'s values (novation detokenize)',
    'notice': 'reads the seller\'s notification list: the seller\'s own customer ids',
    'manifest': 'seals manifests (its private half, the running side); its public half '
                'checks seals',
}

# How a method leaves the value, in words for the people approving the plan.
_TREATMENT = {
    'keep': 'delivered in clear',
    'encrypt': 'delivered in clear, under its own column key',
    'drop': 'dropped: never leaves the seller',
    'redact': 'redacted: delivered empty',
    'mask': 'partly masked',
    'hash': 'one-way keyed pseudonym (HMAC-SHA256): joins kept, not reversible',
    'tokenize': 'reversible token (AES-SIV): reversible by holders of the token key',
    'generalize': 'generalized: coarsened',
    'date_shift': 'date shifted per customer (keyed)',
    'scrub': 'free text with identifiers found in it masked or pseudonymized',
}
# Methods after which the delivered value is the seller's value itself.
CLEAR_METHODS = ('keep', 'encrypt')


def _params(operator) -> dict:
    return {k: getattr(operator, k) for k in operator.params}


def _holders_of(roles, key_holders):
    """Who holds every role of ``roles``: the named holders, or (no key_holders in the
    config) the roles themselves in words."""
    if not key_holders:
        return [f'holders of key {" and ".join(roles)}']
    return [name for name, held in key_holders if set(roles) <= set(held)]


def field_plan(table, rule, output_format: str, key_holders=()) -> dict:
    spec, op = rule.field, rule.operator
    delivered = rule.delivered
    role, needs = None, ()
    if delivered:
        role = 'data.avro' if output_format == 'avro' else key_role(rule)
        # a Parquet column is read through its file's footer, under data.footer
        needs = (role,) if role in ('data.avro', 'data.footer') else ('data.footer', role)
    entry = {
        'name': spec.name,
        'classification': spec.classification,
        'category': spec.category,
        'method': op.name,
        'params': _params(op),
        'treatment': _TREATMENT[op.name],
        'delivered_type': str(op.output_type()) if delivered else None,
        'key_role': role,
        'readable_by': _holders_of(needs, key_holders) if role else [],
        'in_clear': delivered and op.name in CLEAR_METHODS,
        'withheld_without_separate_consent': delivered and spec.classification == 'sensitive',
        'quasi_identifier': getattr(spec, 'quasi_identifier', False),
        'sensitive_attribute': getattr(spec, 'sensitive_attribute', False),
    }
    if op.name in ('hash', 'tokenize'):
        entry['domain'] = op.domain
    if spec.name == table.subject_key:
        entry['subject_key'] = True
    return entry


def _reasons(config, table) -> list:
    """The reason codes a row of ``table`` can be refused with."""
    bases = {p.legal_basis for p in config.transfer.purposes}
    codes = ['malformed', 'missing_required', 'erasure_requested', 'consent_withdrawn']
    if 'consent' in bases:
        codes.append('no_consent')
    if config.transfer.cross_border:
        codes.append('no_cross_border_consent')
    if table.schema.primary_key:
        codes.append('duplicate_key')
    return [c for c in REASONS if c in codes]


def _stream_reasons(table) -> list:
    """The reason codes a change of ``table`` can be refused with besides the table's own."""
    codes = ['implausible_time'] + ([] if table.schema.primary_key else ['no_primary_key'])
    return [c for c in REASONS if c in codes]


def build_plan(config) -> dict:
    """The plan of ``config`` (a MigrationConfig), as JSON-ready data (pure)."""
    t = config.transfer
    fmt = config.output.format
    tables = []
    for table in sorted(config.tables, key=lambda tb: tb.name):  # not the YAML's order
        tables.append({
            'name': table.name,
            'format': table.format,
            'subject_key': table.subject_key,
            'primary_key': table.schema.primary_key,
            'duplicates': table.keep_duplicates if table.schema.primary_key else None,
            'fields': [field_plan(table, r, fmt, config.key_holders) for r in table.rules],
            'reasons': _reasons(config, table),
        })
    purposes = sorted(t.purposes, key=lambda p: p.name)
    consent_purposes = [p.name for p in purposes if p.legal_basis == 'consent']
    rules = [
        'a customer who asked for erasure never moves, in any table (PIPL Art. 47)',
        'a customer who withdrew consent for a purpose of the transfer does not move '
        '(Art. 15)',
    ]
    if consent_purposes:
        rules.append(f'a customer without live consent for {", ".join(consent_purposes)} '
                     f'does not move (Art. 13)')
    if t.cross_border:
        rules.append(f'the transfer leaves {t.source_region} for {t.destination_region}: a '
                     f'customer without separate consent to it does not move (Art. 39)')
    rules.append('a customer without separate consent for sensitive data moves with every '
                 'sensitive field empty (Art. 29)')
    risk = getattr(config, 'risk', None)
    return {
        'format': PLAN_FORMAT,
        'transfer': {'seller': t.seller, 'acquirer': t.acquirer,
                     'acquirer_contact': t.acquirer_contact,
                     'purposes': [{'name': p.name, 'legal_basis': p.legal_basis}
                                  for p in purposes],
                     'source_region': t.source_region,
                     'destination_region': t.destination_region,
                     'cross_border': t.cross_border},
        'consent_rules': rules,
        'output_format': fmt,
        'deadletter_max_ratio': config.deadletter.max_ratio,
        'risk': risk.as_dict() if risk is not None else None,
        'notification_list': ({'key_role': 'notice', 'where': 'notice.path (the seller\'s side)'}
                              if getattr(config, 'notice', None) else None),
        'tables': tables,
        'keys': _keys(config, tables),
        'reason_codes': {code: REASONS[code] for code in REASONS
                         if any(code in tb['reasons'] for tb in tables)},
        # What the live stream adds; outside the plan's sha256, so adding a stream section
        # to a config leaves the approved plan of its batch (and the snapshot's) as it was.
        'stream': None if config.stream is None else {
            'reasons': {tb.name: _stream_reasons(tb) for tb in config.tables},
            'reason_codes': {code: REASONS[code] for code in REASONS
                             if any(code in _stream_reasons(tb) for tb in config.tables)}},
    }


def _keys(config, tables) -> list:
    """The key roles a run uses, what holding each allows, and who is named to hold it
    (``holders`` None: the config names no key holders)."""
    used = {f['key_role'] for t in tables for f in t['fields'] if f['key_role']}
    if config.output.format == 'parquet':
        used.add('data.footer')
    used |= {'deadletter', 'pseudonym', 'manifest'}  # dead letters, their subjects, seals
    if any(f['method'] == 'tokenize' for t in tables for f in t['fields']):
        used.add('token')
    if getattr(config, 'notice', None):
        used.add('notice')
    named = config.key_holders
    out = []
    for role in sorted(used, key=lambda r: (r.startswith('column.'), r)):
        allows = _KEY_ALLOWS.get(role) or 'reads ' + ', '.join(
            f'{t["name"]}.{f["name"]}' for t in tables for f in t['fields']
            if f['key_role'] == role) + ' (its own key)'
        out.append({'role': role, 'allows': allows,
                    'holders': [n for n, held in named if role in held] if named else None})
    return out


def canonical(plan: dict) -> bytes:
    return json.dumps(plan, sort_keys=True, ensure_ascii=False, separators=(',', ':'),
                      default=str).encode('utf-8')


def plan_sha256(plan: dict) -> str:
    """The sha256 of the plan's batch part (all of it but ``stream``)."""
    return hashlib.sha256(canonical({k: v for k, v in plan.items() if k != 'stream'}
                                    )).hexdigest()


def _param_text(params: dict) -> str:
    return ', '.join(f'{k}={v}' for k, v in params.items() if v is not None)


def _field_row(f) -> list:
    flags = []
    if f.get('subject_key'):
        flags.append('subject key')
    if f['in_clear']:
        flags.append('IN CLEAR')
    if f['withheld_without_separate_consent']:
        flags.append('withheld without separate consent')
    if f['quasi_identifier']:
        flags.append('quasi-identifier')
    if f['sensitive_attribute']:
        flags.append('sensitive attribute')
    method = f['method'] + (f' ({_param_text(f["params"])})' if _param_text(f['params']) else '')
    return [f['name'], f['classification'], f['category'] or '', method,
            f['delivered_type'] or '-', f['key_role'] or '-', '; '.join(flags)]


_HEADERS = ['field', 'classification', 'category', 'method', 'delivered as', 'key', 'notes']


def render_plan(plan: dict, fmt: str = 'text') -> str:
    """The plan as ``text`` (a terminal), ``md`` (Markdown for an approval record) or json."""
    if fmt == 'json':
        return json.dumps({**plan, 'sha256': plan_sha256(plan)}, ensure_ascii=False, indent=2)
    t = plan['transfer']
    md = fmt == 'md'
    lines = [f'{"# " if md else ""}Plan: {t["seller"]} -> {t["acquirer"]}', '',
             f'plan sha256: {"`" if md else ""}{plan_sha256(plan)}{"`" if md else ""}',
             'purposes: ' + ', '.join(f'{p["name"]} ({p["legal_basis"]})'
                                       for p in t['purposes']),
             f'regions: {t["source_region"]} -> {t["destination_region"]}'
             + (' (cross-border)' if t['cross_border'] else ''),
             f'output: encrypted {plan["output_format"]}; a run stops if more than '
             f'{plan["deadletter_max_ratio"] * 100:g}% of a table\'s rows are bad data', '',
             f'{"## " if md else ""}Consent rules']
    lines += [f'- {r}' for r in plan['consent_rules']]
    lines.append('notification list (Art. 22): ' + (
        'written for the seller under notice.path, encrypted under key notice'
        if plan.get('notification_list') else 'not written (no notice in the config)'))
    if plan.get('risk'):
        r = plan['risk']
        lines += ['', f'{"## " if md else ""}Re-identification risk',
                  f'- every class of quasi-identifiers should hold at least {r["min_k"]} '
                  f'customers; ' + ('a run below it fails' if r['enforce'] else
                                    'a run below it is reported, not stopped')]
    for table in plan['tables']:
        lines += ['', f'{"## " if md else ""}Table {table["name"]}',
                  f'subject key {table["subject_key"]}'
                  + (f', primary key {table["primary_key"]} (duplicates: '
                     f'{table["duplicates"]})' if table['primary_key'] else ''), '']
        rows = [_field_row(f) for f in table['fields']]
        lines += _table(rows, md, _HEADERS)
        lines += ['', 'a delivered field is readable only by holders of the key shown'
                  + (' (and of data.footer, which opens the file)'
                     if plan['output_format'] == 'parquet' else ''),
                  'can be refused with: ' + ', '.join(table['reasons'])]
    if plan.get('stream'):
        lines += ['', f'{"## " if md else ""}Live stream (outside the plan sha256)',
                  'a change can also be refused with:']
        by_table = plan['stream']['reasons']
        lines += [f'- {code} ({", ".join(n for n in sorted(by_table) if code in by_table[n])}'
                  f'): {text}' for code, text in plan['stream']['reason_codes'].items()]
    lines += ['', f'{"## " if md else ""}Who can read what', '']
    rows = [[k['role'], k['allows'], 'not named (no key_holders in the config)'
             if k['holders'] is None else ', '.join(k['holders']) or 'NO ONE NAMED']
            for k in plan.get('keys', ())]
    lines += _table(rows, md, ['key', 'allows its holder to', 'held by'])
    lines += ['', f'{"## " if md else ""}Reason codes']
    lines += [f'- {code}: {text}' for code, text in plan['reason_codes'].items()]
    return '\n'.join(lines) + '\n'


def _table(rows, md, headers):
    if md:
        out = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
        return out + ['| ' + ' | '.join(c.replace('|', '\\|') for c in r) + ' |'
                      for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = '  '.join(f'{{:{w}s}}' for w in widths)
    return ['  ' + fmt.format(*headers).rstrip()] + \
           ['  ' + fmt.format(*r).rstrip() for r in rows]


def _flatten(value, prefix=''):
    """Leaves of a plan as 'path: value' lines, fields and tables keyed by name."""
    if isinstance(value, dict):
        for k in sorted(value):
            yield from _flatten(value[k], f'{prefix}.{k}' if prefix else str(k))
    elif isinstance(value, list) and value and all(isinstance(v, dict) and 'name' in v
                                                   for v in value):
        for v in value:
            yield from _flatten({k: x for k, x in v.items() if k != 'name'},
                                f'{prefix}[{v["name"]}]')
    else:
        yield f'{prefix}: {json.dumps(value, ensure_ascii=False, sort_keys=True)}'


def diff_plans(a: dict, b: dict, a_name='A', b_name='B') -> str:
    """What changed from plan ``a`` to plan ``b``, one line per changed leaf; '' if none."""
    left = [line for line in _flatten({k: v for k, v in a.items() if k != 'sha256'})]
    right = [line for line in _flatten({k: v for k, v in b.items() if k != 'sha256'})]
    if left == right:
        return ''
    return '\n'.join(line for line in difflib.unified_diff(
        left, right, fromfile=a_name, tofile=b_name, lineterm='', n=0)
        if not line.startswith('@@')) + '\n'
