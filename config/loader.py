"""Load a transfer config (YAML) and validate it, once, into frozen objects.

Every error names the config file, the key and the allowed values. Paths are resolved relative
to the config file's directory unless absolute or a URI (gs://...). Nothing here reads seller
data: only the config and the schema files it names.
"""

import codecs
import dataclasses
import datetime
import functools
import hashlib
import json
import posixpath
import re
import zoneinfo
from typing import Dict, Optional, Tuple

import pyarrow as pa
import yaml

from schemas import LEVELS, FieldSpec, TableSchema, parse_schema
from transforms.conform.casting import NULL_TOKENS
from transforms.stream.cdc_values import DECIMAL_MODES
from transforms.stream.changes import UNITS, TimeRules
from transforms.common.errors import ConfigError
from transforms.common.files import read_text, resolve
from transforms.mask.methods import FORBIDDEN, OPERATORS, Operator, make_operator

__all__ = ['ConsentConfig', 'DeadLetterConfig', 'FieldRule', 'MigrationConfig', 'OutputConfig',
           'Purpose', 'StreamConfig', 'TableConfig', 'Transfer', 'load_config', 'parse_config']

FORMATS = ('csv', 'jsonl', 'avro', 'parquet')
TEXT_FORMATS = ('csv', 'jsonl')
EXTENSIONS = {'csv': 'csv', 'jsonl': 'jsonl', 'ndjson': 'jsonl', 'avro': 'avro',
              'parquet': 'parquet'}
EXTRA_COLUMNS = ('error', 'ignore')
KEEP_DUPLICATES = ('none', 'latest')
ENCODINGS = ('utf-8', 'utf-8-sig', 'gbk', 'gb18030')
LEGAL_BASES = ('consent', 'contract')
OUTPUT_FORMATS = ('parquet', 'avro')


@dataclasses.dataclass(frozen=True)
class Purpose:
    name: str
    legal_basis: str


@dataclasses.dataclass(frozen=True)
class Transfer:
    seller: str
    acquirer: str
    purposes: Tuple[Purpose, ...]
    source_region: str
    destination_region: str
    acquirer_contact: Optional[str] = None  # what the seller tells customers (Art. 22)

    @property
    def cross_border(self) -> bool:
        return self.source_region != self.destination_region

    @property
    def legal_bases(self) -> Dict[str, str]:
        return {p.name: p.legal_basis for p in self.purposes}


@dataclasses.dataclass(frozen=True)
class FieldRule:
    """How one field is delivered: its classification and the operator that masks it."""
    field: FieldSpec
    operator: Operator

    @property
    def delivered(self) -> bool:
        return self.operator.output_type() is not None


@dataclasses.dataclass(frozen=True)
class TableConfig:
    name: str
    path: str
    format: str
    encoding: str
    schema: TableSchema
    subject_key: str
    rules: Tuple[FieldRule, ...]
    delimiter: str = ','
    quote: str = '"'
    header: bool = True
    extra_columns: str = 'error'
    timezone: str = 'Asia/Shanghai'
    null_values: Tuple[str, ...] = NULL_TOKENS
    keep_duplicates: str = 'none'  # none: every copy of a key is refused; latest: by order_by
    order_by: Optional[str] = None

    @property
    def subject_domain(self) -> str:
        """Pseudonym domain of the subject key: the same as its ``hash`` output, if hashed."""
        rule = self.rule(self.subject_key)
        domain = getattr(rule.operator, 'domain', None)
        return domain or rule.field.category or rule.field.name

    def rule(self, field_name: str) -> FieldRule:
        return next(r for r in self.rules if r.field.name == field_name)

    @functools.cached_property
    def key_columns(self) -> Tuple[str, ...]:
        """The columns that may hold the primary key (none without one)."""
        if not self.schema.primary_key:
            return ()
        spec = self.schema.field(self.schema.primary_key)
        return (spec.name,) + spec.aliases

    @functools.cached_property
    def column_kinds(self) -> Dict[str, Tuple[str, Optional[int]]]:
        """Every column name of a field (its name and aliases) -> (kind, scale)."""
        return {column: (f.kind, f.scale) for f in self.schema.fields
                for column in (f.name,) + f.aliases}

    @functools.cached_property
    def subject_columns(self) -> Tuple[str, ...]:
        """The columns that may hold the subject key: its field's name, then its aliases.
        Cached: a stream asks for each event (hashing the frozen config would cost more)."""
        spec = self.schema.field(self.subject_key)
        return (spec.name,) + spec.aliases

    @property
    def quasi_identifiers(self) -> Tuple[str, ...]:
        return tuple(r.field.name for r in self.rules
                     if r.field.quasi_identifier and r.delivered)

    @property
    def sensitive_attributes(self) -> Tuple[str, ...]:
        return tuple(r.field.name for r in self.rules
                     if r.field.sensitive_attribute and r.delivered)

    @property
    def sensitive_fields(self) -> Tuple[str, ...]:
        return tuple(r.field.name for r in self.rules if r.field.classification == 'sensitive')

    @property
    def delivered_schema(self) -> pa.Schema:
        """The schema of the delivered files: masked types, classification and method noted."""
        return pa.schema([
            pa.field(r.field.name, r.operator.output_type(),
                     metadata={'classification': r.field.classification,
                               'masking': r.operator.name})
            for r in self.rules if r.delivered])


@dataclasses.dataclass(frozen=True)
class ConsentConfig:
    registry: str
    erasures: str
    # (Novation's column name, the seller's) for registry and erasure-list columns named
    # otherwise in the seller's files (consent.columns)
    columns: Tuple[Tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    path: str
    format: str
    keys: str


@dataclasses.dataclass(frozen=True)
class NoticeConfig:
    """Where the seller's notification list goes (``notice.path``): the seller's side, never
    the acquirer's store."""
    path: str


@dataclasses.dataclass(frozen=True)
class DeadLetterConfig:
    max_ratio: float


@dataclasses.dataclass(frozen=True)
class RiskConfig:
    """Re-identification risk (``risk``): each class of customers sharing their delivered
    quasi-identifiers should hold at least ``min_k``; with ``enforce`` a run below it fails
    before its manifest is written."""
    min_k: int = 5
    enforce: bool = False

    def as_dict(self) -> dict:
        return {'min_k': self.min_k, 'enforce': self.enforce}


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """The live feeds (``novation stream``): where change and consent files land, how long an
    epoch is, how late a file may land after its events' commit (lateness), how long a feed
    may stay quiet before the clock moves its watermark (idle), how often to look (poll)."""
    changes: str  # a glob of files, or a Pub/Sub subscription (projects/P/subscriptions/S)
    consent: str
    epoch_seconds: float = 5.0
    lateness_seconds: float = 2.0
    idle_seconds: float = 5.0
    poll_seconds: float = 1.0
    timestamp_attribute: Optional[str] = None  # Pub/Sub: the attribute holding commit times
    # the seller's table names (``db.table`` or ``table``) -> the config's
    tables: Tuple[Tuple[str, str], ...] = ()
    time_unit: Optional[str] = None  # integer times of no named unit: s, ms, us or ns
    not_before: str = '2000-01-01T00:00:00+00:00'  # an earlier time is implausible
    max_ahead_seconds: float = 86_400.0  # so is one further ahead of the clock
    decimal_handling_mode: str = 'precise'  # Debezium's, for feeds without the Connect schema
    # where novation backfill lands the rows of customers who consented again (a directory
    # the stream watches as one more change feed); None: no backfill
    backfill: Optional[str] = None

    @property
    def time_rules(self):
        """The ``transforms.stream.changes.TimeRules`` of these settings."""
        moment = datetime.datetime.fromisoformat(self.not_before)
        return TimeRules(unit=self.time_unit, not_before=int(moment.timestamp() * 10**6),
                         max_ahead=int(self.max_ahead_seconds * 10**6))


@dataclasses.dataclass(frozen=True)
class MigrationConfig:
    source: str  # the config file
    transfer: Transfer
    tables: Tuple[TableConfig, ...]
    consent: ConsentConfig
    output: OutputConfig
    deadletter: DeadLetterConfig
    digest: str  # sha256 of the config and its schemas, for the manifest
    stream: Optional[StreamConfig] = None
    report_lang: str = 'en'  # the run report's language (report.lang): en or zh
    risk: RiskConfig = RiskConfig()
    notice: Optional[NoticeConfig] = None
    # who is given which key roles (holder name, roles), as the plan shows them
    key_holders: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()

    @property
    def risk_tables(self) -> Tuple['TableConfig', ...]:
        """The tables with delivered quasi-identifiers or sensitive attributes."""
        return tuple(t for t in self.tables if t.quasi_identifiers or t.sensitive_attributes)

    def table(self, name: str) -> TableConfig:
        return next(t for t in self.tables if t.name == name)


def load_config(path: str) -> MigrationConfig:
    """Read and validate the config at ``path`` and the schemas it names."""
    text = read_text(path, what='config')
    base_dir = posixpath.dirname(path) or '.'
    return parse_config(text, path, base_dir)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first_line, second_line):
        super().__init__(key)
        self.key, self.lines = key, (first_line, second_line)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping holding a key twice is an error: by
    default the last copy wins silently (a table pasted twice, a key overridden unseen)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == 'tag:yaml.org,2002:merge':
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:
                    continue  # an unhashable key: PyYAML reports it below
        return super().construct_mapping(node, deep)


def parse_config(text: str, source: str, base_dir: str) -> MigrationConfig:
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # safe: SafeLoader's constructors only
    except _DuplicateKey as e:
        raise ConfigError(f'{source}: key {e.key!r} is given twice, at lines {e.lines[0]} and '
                          f'{e.lines[1]}; keep one') from None
    except RecursionError:
        raise ConfigError(f'{source}: nested too deeply to be a config (lists or mappings '
                          f'inside each other thousands of times)') from None
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        at = f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''
        raise ConfigError(f'{source}: not valid YAML{at}') from None
    c = _Checker(source)
    root = c.mapping(doc, '', required=('transfer', 'tables', 'consent', 'masking', 'output'),
                     optional=('deadletter', 'stream', 'report', 'risk', 'notice',
                               'key_holders'))
    transfer = _transfer(c, root['transfer'])
    schema_texts = []
    tables_raw = c.mapping(root['tables'], 'tables')
    if not tables_raw:
        raise ConfigError(f'{source}: tables: at least one table is needed')
    masking = c.mapping(root['masking'], 'masking', required=('defaults',), optional=('fields',))
    defaults = c.mapping(masking['defaults'], 'masking.defaults', optional=LEVELS)
    _check_defaults(c, defaults)
    overrides = c.mapping(masking.get('fields') or {}, 'masking.fields')
    tables = []
    for name, raw in tables_raw.items():
        table, schema_text = _table(c, name, raw, base_dir, defaults, overrides)
        tables.append(table)
        schema_texts.append(schema_text)
    _check_overrides_exist(c, overrides, tables)
    consent_raw = c.mapping(root['consent'], 'consent', required=('registry', 'erasures'),
                            optional=('columns',))
    consent = ConsentConfig(
        registry=c.path(base_dir, consent_raw['registry'], 'consent.registry'),
        erasures=c.path(base_dir, consent_raw['erasures'], 'consent.erasures'),
        columns=_consent_columns(c, consent_raw.get('columns')))
    out_raw = c.mapping(root['output'], 'output', required=('path', 'keys'), optional=('format',))
    output = OutputConfig(
        path=c.path(base_dir, out_raw['path'], 'output.path'),
        format=c.choice(out_raw.get('format', 'parquet'), 'output.format', OUTPUT_FORMATS),
        keys=c.path(base_dir, out_raw['keys'], 'output.keys'))
    if output.format == 'avro':
        for table in tables:
            for rule in table.rules:
                if rule.operator.name == 'encrypt':
                    c.fail('output.format', f'avro files are encrypted whole, so a column cannot '
                                            f'have its own key ({table.name}.{rule.field.name} '
                                            f'uses method encrypt): use parquet, or another '
                                            f'method such as tokenize')
    dl_raw = c.mapping(root.get('deadletter') or {}, 'deadletter', optional=('max_ratio',))
    max_ratio = dl_raw.get('max_ratio', 0.05)
    if not isinstance(max_ratio, (int, float)) or isinstance(max_ratio, bool) or \
            not 0 <= max_ratio <= 1:
        raise ConfigError(f'{source}: deadletter.max_ratio must be a number between 0 and 1, '
                          f'got {max_ratio!r}')
    digest = hashlib.sha256(json.dumps([text] + schema_texts, ensure_ascii=False)
                            .encode('utf-8')).hexdigest()
    stream = _stream(c, root['stream'], base_dir, {t.name for t in tables}) \
        if root.get('stream') is not None else None
    report = c.mapping(root.get('report') or {}, 'report', optional=('lang',))
    lang = c.choice(report.get('lang', 'en'), 'report.lang', REPORT_LANGS)
    risk = _risk(c, root.get('risk'), tables)
    notice = None
    if root.get('notice') is not None:
        n = c.mapping(root['notice'], 'notice', required=('path',), optional=())
        notice = NoticeConfig(path=c.path(base_dir, n['path'], 'notice.path'))
        if notice.path.rstrip('/') == output.path.rstrip('/') or \
                notice.path.startswith(output.path.rstrip('/') + '/'):
            c.fail('notice.path', f'must be outside output.path ({output.path}): the '
                                  f'notification list names the seller\'s customers and is '
                                  f'never given to the acquirer')
        if transfer.acquirer_contact is None:
            c.fail('transfer', 'acquirer_contact is needed with notice: the seller tells each '
                               'customer who the recipient is and how to reach it (PIPL '
                               'Art. 22)')
    return MigrationConfig(source=source, transfer=transfer, tables=tuple(tables),
                           consent=consent, output=output,
                           deadletter=DeadLetterConfig(float(max_ratio)), digest=digest,
                           stream=stream, report_lang=lang, risk=risk, notice=notice,
                           key_holders=_key_holders(c, root.get('key_holders'), tables))


# Methods whose delivered subject key is the same for the same customer in every table.
_JOINING_METHODS = ('hash', 'tokenize', 'keep', 'encrypt')


def _risk(c, raw, tables) -> RiskConfig:
    r = c.mapping(raw or {}, 'risk', optional=('min_k', 'enforce'))
    min_k = r.get('min_k', 5)
    if isinstance(min_k, bool) or not isinstance(min_k, int) or not 2 <= min_k <= 1_000_000:
        c.fail('risk.min_k', f'must be a whole number from 2 to 1000000, got {min_k!r}')
    enforce = r.get('enforce', False)
    if not isinstance(enforce, bool):
        c.fail('risk.enforce', f'must be true or false, got {enforce!r}')
    marked = [(t, rule) for t in tables for rule in t.rules
              if rule.field.quasi_identifier or rule.field.sensitive_attribute]
    for t, rule in marked:
        if not rule.delivered:
            mark = 'quasi_identifier' if rule.field.quasi_identifier else 'sensitive_attribute'
            c.fail(f'masking.fields.{t.name}.{rule.field.name}',
                   f'is marked {mark} in {t.schema.source} but dropped, so it cannot add to '
                   f'the risk; deliver it or remove the mark')
    # Customers are told apart by their delivered subject key: it must join across tables.
    subjects = {}
    for t in {t.name: t for t, _ in marked}.values():
        op = t.rule(t.subject_key).operator
        if op.name not in _JOINING_METHODS:
            c.fail(f'masking.fields.{t.name}.{t.subject_key}',
                   f'the subject key of a table with quasi-identifiers must be delivered with '
                   f'one of {", ".join(_JOINING_METHODS)} (the risk is counted per customer), '
                   f'not {op.name}')
        subjects[t.name] = (op.name, getattr(op, 'domain', None))
    if len(set(subjects.values())) > 1:
        how = ', '.join(f'{name}: {method}' + (f' ({domain})' if domain else '')
                        for name, (method, domain) in subjects.items())
        c.fail('masking.fields', f'the tables with quasi-identifiers deliver their subject keys '
                                 f'differently ({how}), so their customers cannot be matched; '
                                 f'use one method and domain')
    return RiskConfig(min_k=min_k, enforce=enforce)


def _key_holders(c, raw, tables) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    """``key_holders``: holder name -> the key roles they are given (``novation keys share``).
    A role is a keyring role, or the ``column.`` role of a field of these tables (or of an
    ``encrypt`` key): a field whose method changed away from ``encrypt`` keeps its holders."""
    if raw is None:
        return ()
    from transforms.keys.roles import BASE_ROLES, column_role
    columns = {column_role(f'{t.name}.{r.field.name}') for t in tables for r in t.rules}
    columns |= {column_role(r.operator.key) for t in tables for r in t.rules
                if r.operator.name == 'encrypt'}
    allowed = ', '.join(BASE_ROLES) + ', column.TABLE.FIELD (a field of tables)'
    holders = c.mapping(raw, 'key_holders')
    if not holders:
        c.fail('key_holders', 'name at least one holder, e.g. "acquirer data team: '
                              '[data.internal, data.personal]"')
    out = []
    for name, roles in holders.items():
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            c.fail('key_holders', 'each holder is named by a text of 1 to 100 characters')
        key = f'key_holders.{name}'
        if not isinstance(roles, list) or not roles:
            c.fail(key, f'must be a list of key roles; allowed: {allowed}')
        for role in roles:
            if not isinstance(role, str) or (role not in BASE_ROLES and role not in columns):
                c.fail(key, f'{str(role)[:60]!r} is not a key role of this transfer; allowed: '
                            f'{allowed}')
        if len(set(roles)) < len(roles):
            c.fail(key, 'a role is listed twice')
        out.append((name.strip(), tuple(roles)))
    return tuple(out)


# The consent registry's and erasure list's columns, as consent.columns may rename them.
CONSENT_COLUMNS = ('subject_id', 'purpose', 'granted', 'granted_at', 'withdrawn_at',
                   'sensitive_consent', 'cross_border_consent', 'requested_at')


def _consent_columns(c, raw) -> Tuple[Tuple[str, str], ...]:
    if raw is None:
        return ()
    mapping = c.mapping(raw, 'consent.columns', optional=CONSENT_COLUMNS)
    for ours, theirs in mapping.items():
        c.string(theirs, f'consent.columns.{ours}')
    theirs = list(mapping.values())
    for name in theirs:
        if theirs.count(name) > 1:
            c.fail('consent.columns', f'{name!r} is given for two columns')
    return tuple(mapping.items())


REPORT_LANGS = ('en', 'zh')
# A Pub/Sub subscription's full name (project ids: 6-30 characters; names: 3-255)
SUBSCRIPTION = re.compile(r'projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/subscriptions/'
                          r'[A-Za-z][-A-Za-z0-9._~%+]{2,254}')


def _stream(c, raw, base_dir, known_tables=()) -> StreamConfig:
    timings = ('epoch_seconds', 'lateness_seconds', 'idle_seconds', 'poll_seconds',
               'max_ahead_seconds')
    s = c.mapping(raw, 'stream', required=('changes', 'consent'),
                  optional=timings + ('timestamp_attribute', 'tables', 'time_unit',
                                      'not_before', 'decimal_handling_mode', 'backfill'))
    values = {}
    for key in ('changes', 'consent'):
        place = c.string(s[key], f'stream.{key}')
        if place.startswith('projects/'):
            if not SUBSCRIPTION.fullmatch(place):
                c.fail(f'stream.{key}', f'a Pub/Sub subscription is '
                                        f'projects/PROJECT/subscriptions/NAME, got {place!r}')
            values[key] = place
        else:
            values[key] = c.path(base_dir, place, f'stream.{key}')
    if 'backfill' in s:
        values['backfill'] = c.path(base_dir, s['backfill'], 'stream.backfill')
    if 'timestamp_attribute' in s:
        values['timestamp_attribute'] = c.string(s['timestamp_attribute'],
                                                 'stream.timestamp_attribute')
    for key in timings:
        if key in s:
            value = s[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not 0 < value <= 86_400 or value != value:
                c.fail(f'stream.{key}', f'must be a number of seconds above 0 and at most '
                                        f'86400, got {value!r}')
            values[key] = float(value)
    if s.get('time_unit') is not None:
        values['time_unit'] = c.choice(s['time_unit'], 'stream.time_unit', UNITS)
    if 'decimal_handling_mode' in s:
        values['decimal_handling_mode'] = c.choice(s['decimal_handling_mode'],
                                                   'stream.decimal_handling_mode',
                                                   DECIMAL_MODES)
    if 'not_before' in s:
        text = c.string(s['not_before'], 'stream.not_before')
        try:
            moment = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            c.fail('stream.not_before', f'must be an ISO 8601 time with its zone, e.g. '
                                        f'2015-01-01T00:00:00+08:00, got {text!r}')
        values['not_before'] = moment.isoformat()
    if 'tables' in s:
        names = c.mapping(s['tables'], 'stream.tables')
        pairs = []
        for seller, table in names.items():
            table = c.string(table, f'stream.tables.{seller}')
            if table not in known_tables:
                c.fail(f'stream.tables.{seller}', f'names no table of the config; allowed: '
                                                  f'{", ".join(sorted(known_tables))}')
            pairs.append((str(seller), table))
        values['tables'] = tuple(pairs)
    return StreamConfig(**values)


class _Checker:
    """Type and key checks whose errors name the config file and the key."""

    def __init__(self, source):
        self.source = source

    def fail(self, key, message):
        raise ConfigError(f'{self.source}: {key + ": " if key else ""}{message}')

    def mapping(self, value, key, *, required=(), optional=None):
        if not isinstance(value, dict):
            self.fail(key, f'must be a mapping, got {type(value).__name__}')
        missing = [k for k in required if k not in value]
        if missing:
            self.fail(key, f'missing {", ".join(missing)}')
        if optional is not None:
            allowed = tuple(required) + tuple(optional)
            unknown = [k for k in value if k not in allowed]
            if unknown:
                self.fail(key, f'unknown key(s) {", ".join(map(str, unknown))}; allowed: '
                               f'{", ".join(allowed)}')
        return value

    def string(self, value, key):
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f'must be a non-empty string, got {value!r}')
        return value

    def path(self, base_dir, value, key):
        """A local path (relative to the config) or a gs:// URI: the places Novation reads
        and writes (file:// and other schemes are refused here, not mid-run)."""
        text = self.string(value, key)
        scheme = text.split('://', 1)[0] if '://' in text else None
        if scheme is not None and scheme != 'gs':
            hint = f' (write {text[len("file://"):]!r})' if scheme == 'file' else ''
            self.fail(key, f'{scheme}:// is not supported: give a local path or gs://BUCKET/...'
                           f'{hint}')
        return resolve(base_dir, text)

    def choice(self, value, key, allowed):
        if value not in allowed:
            self.fail(key, f'{value!r} is not allowed; allowed: {", ".join(allowed)}')
        return value


def _encoding_name(value):
    """An encoding under its usual name: utf8 and UTF-8 are utf-8, GBK and cp936 are gbk."""
    if not isinstance(value, str):
        return value
    try:
        return codecs.lookup(value.strip()).name
    except (LookupError, ValueError):  # an unknown name, or one holding a NUL
        return value


def _region(c, value, key):
    """A region code as written, compared without case: cn and CN are one region."""
    return c.string(value, key).strip().upper()


def _transfer(c, raw):
    t = c.mapping(raw, 'transfer', required=('seller', 'acquirer', 'purposes', 'source_region',
                                             'destination_region'),
                  optional=('acquirer_contact',))
    if not isinstance(t['purposes'], list) or not t['purposes']:
        c.fail('transfer.purposes', 'must be a non-empty list of {name, legal_basis}')
    purposes = []
    for i, p in enumerate(t['purposes']):
        key = f'transfer.purposes[{i}]'
        p = c.mapping(p, key, required=('name', 'legal_basis'), optional=())
        purposes.append(Purpose(c.string(p['name'], f'{key}.name'),
                                c.choice(p['legal_basis'], f'{key}.legal_basis', LEGAL_BASES)))
    names = [p.name for p in purposes]
    if len(set(names)) != len(names):
        c.fail('transfer.purposes', 'a purpose is listed twice')
    return Transfer(seller=c.string(t['seller'], 'transfer.seller'),
                    acquirer=c.string(t['acquirer'], 'transfer.acquirer'),
                    purposes=tuple(purposes),
                    source_region=_region(c, t['source_region'], 'transfer.source_region'),
                    destination_region=_region(c, t['destination_region'],
                                               'transfer.destination_region'),
                    acquirer_contact=c.string(t['acquirer_contact'], 'transfer.acquirer_contact')
                    if 'acquirer_contact' in t else None)


def _table(c, name, raw, base_dir, defaults, overrides):
    key = f'tables.{name}'
    if not isinstance(name, str) or not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', name):
        c.fail(key, 'a table name may hold only letters, digits and "_", and not start with a '
                    'digit (it names directories and the Avro record)')
    t = c.mapping(raw, key, required=('path', 'schema'),
                  optional=('format', 'encoding', 'subject_key', 'delimiter', 'quote', 'header',
                            'extra_columns', 'timezone', 'null_values', 'duplicates'))
    path = c.path(base_dir, t['path'], f'{key}.path')
    fmt = t.get('format') or _format_from_extension(c, path, key)
    c.choice(fmt, f'{key}.format', FORMATS)
    encoding = c.choice(_encoding_name(t.get('encoding', 'utf-8')), f'{key}.encoding',
                        ENCODINGS)
    if fmt not in TEXT_FORMATS and 'encoding' in t:
        c.fail(f'{key}.encoding', f'applies to text formats ({", ".join(TEXT_FORMATS)}) only, '
                                  f'not {fmt}')
    for option in ('delimiter', 'quote', 'header'):
        if option in t and fmt != 'csv':
            c.fail(f'{key}.{option}', f'applies to csv only, not {fmt}')
    delimiter = t.get('delimiter', ',')
    quote = t.get('quote', '"')
    for option, value in (('delimiter', delimiter), ('quote', quote)):
        if not isinstance(value, str) or len(value) != 1 or value.isalnum() or not (
                value.isprintable() or value == '\t' and option == 'delimiter'):
            c.fail(f'{key}.{option}', f'must be one character, a punctuation mark or a space '
                                      f'(or a tab, as the delimiter), got {value!r:.20}')
    if delimiter == quote:
        c.fail(f'{key}.quote', 'must differ from the delimiter')
    header = t.get('header', True)
    if not isinstance(header, bool):
        c.fail(f'{key}.header', f'must be true or false, got {header!r}')
    extra_columns = c.choice(t.get('extra_columns', 'error'), f'{key}.extra_columns',
                             EXTRA_COLUMNS)
    timezone = c.string(t.get('timezone', 'Asia/Shanghai'), f'{key}.timezone')
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        c.fail(f'{key}.timezone', f'{timezone!r} is not a time zone; use an IANA name such as '
                                  f'Asia/Shanghai or UTC')
    null_values = t.get('null_values', list(NULL_TOKENS))
    if not isinstance(null_values, list) or not all(isinstance(v, str) for v in null_values):
        c.fail(f'{key}.null_values', 'must be a list of strings, e.g. ["", "NULL", "N/A"]')
    schema_path = c.path(base_dir, t['schema'], f'{key}.schema')
    schema_text = read_text(schema_path, what=f'schema of table {name}')
    schema = parse_schema(schema_text, schema_path)
    subject_key = t.get('subject_key', schema.subject_key)
    if subject_key not in schema.field_names:
        c.fail(f'{key}.subject_key', f'{subject_key!r} is not a field of {schema_path}; '
                                     f'fields: {", ".join(schema.field_names)}')
    for f in schema.fields:
        if f.name.startswith('__'):
            c.fail(key, f'field {f.name!r} in {schema_path}: names starting with "__" are '
                        f'reserved')
    rules = tuple(_rule(c, name, f, defaults, overrides) for f in schema.fields)
    keep, order_by = _duplicates(c, key, t.get('duplicates'), schema)
    return TableConfig(name=name, path=path, format=fmt, encoding=encoding, schema=schema,
                       subject_key=subject_key, rules=rules, delimiter=delimiter, quote=quote,
                       header=header, extra_columns=extra_columns, timezone=timezone,
                       null_values=tuple(null_values), keep_duplicates=keep,
                       order_by=order_by), schema_text


def _duplicates(c, key, raw, schema):
    """(keep, order_by) for a table; duplicates are looked for only with a primary key."""
    if raw is None:
        return 'none', None
    key = f'{key}.duplicates'
    if schema.primary_key is None:
        c.fail(key, f'{schema.source} declares no "primary_key", so there are no duplicates '
                    f'to resolve')
    d = c.mapping(raw, key, required=('keep',), optional=('order_by',))
    keep = c.choice(d['keep'], f'{key}.keep', KEEP_DUPLICATES)
    order_by = d.get('order_by')
    if keep == 'latest':
        if order_by not in schema.field_names:
            c.fail(f'{key}.order_by', f'keep: latest needs order_by naming a field of '
                                      f'{schema.source}; got {order_by!r}')
    elif order_by is not None:
        c.fail(f'{key}.order_by', 'applies to keep: latest only')
    return keep, order_by


def _format_from_extension(c, path, key):
    ext = posixpath.splitext(path)[1].lower().lstrip('.')
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    c.fail(f'{key}.format', f'not given and cannot be told from the file name; allowed: '
                            f'{", ".join(FORMATS)}')


def _rule(c, table, field: FieldSpec, defaults, overrides) -> FieldRule:
    key = f'masking.fields.{table}.{field.name}'
    if key[len('masking.fields.'):] in overrides:
        spec = overrides[key[len('masking.fields.'):]]
    elif field.classification == 'restricted':
        spec = 'drop'  # C3 authentication data is never transferred, whatever the defaults say
        key = f'masking.defaults.{field.classification}'
    elif field.classification in defaults:
        spec = defaults[field.classification]
        key = f'masking.defaults.{field.classification}'
    else:
        c.fail('masking.defaults', f'no method for classification {field.classification!r} '
                                   f'(needed by {table}.{field.name}); give one of the levels '
                                   f'{", ".join(LEVELS)}')
    if isinstance(spec, str):
        method, params = spec, {}
    elif isinstance(spec, dict) and 'method' in spec:
        params = dict(spec)
        method = params.pop('method')
    else:
        c.fail(key, 'must be a method name or a mapping with "method"')
    if method == 'encrypt' and 'key' not in params:
        params['key'] = f'{table}.{field.name}'  # the column's own key: column.TABLE.FIELD
    return FieldRule(field=field, operator=make_operator(method, field, f'{c.source}: {key}',
                                                         params))


def _check_defaults(c, defaults) -> None:
    """Every default is a method allowed for its level, used or not: a default that no field
    needs today is still a mistake waiting for the schema that does."""
    for level, spec in defaults.items():
        key = f'masking.defaults.{level}'
        method = spec.get('method') if isinstance(spec, dict) else spec
        if not isinstance(method, str):
            c.fail(key, f'must be a method name or a mapping with "method"; allowed methods: '
                        f'{", ".join(OPERATORS)}')
        if method not in OPERATORS:
            c.fail(key, f'unknown masking method {method!r:.60}; allowed: '
                        f'{", ".join(OPERATORS)}')
        if level == 'restricted' and method != 'drop':
            c.fail(key, f'{method!r} is not allowed: restricted data (authentication data) is '
                        f'never transferred; allowed: drop')
        if method in FORBIDDEN.get(level, ()):
            c.fail(key, f'{method!r} is not allowed for {level} fields; allowed: '
                        f'{", ".join(sorted(set(OPERATORS) - FORBIDDEN[level]))}')


def _check_overrides_exist(c, overrides, tables):
    known = {t.name: t.schema for t in tables}
    for ref in overrides:
        table, dot, field = str(ref).partition('.')
        if not dot or not field:
            nested = ' (written as a nested map? write each as TABLE.FIELD: METHOD)' \
                if table in known and isinstance(overrides[ref], dict) else ''
            c.fail(f'masking.fields.{ref}', f'keys are TABLE.FIELD, e.g. '
                                            f'{next(iter(known), "customers")}.FIELD{nested}')
        if table not in known:
            c.fail(f'masking.fields.{ref}', f'no table {table!r}; tables: {", ".join(known)}')
        if field not in known[table].field_names:
            c.fail(f'masking.fields.{ref}', f'no field {field!r} in table {table} '
                                            f'({known[table].source}); fields: '
                                            f'{", ".join(known[table].field_names)}')
