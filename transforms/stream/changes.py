"""Change events as the seller's change data capture tool writes them, read into one form
(pure, no Beam).

One JSON object (a line of a JSON Lines file, an Avro record, a Pub/Sub message) gives a list
of ``Change``s, ``NotAChange`` (a line that is no change: counted by kind) or a
``ChangeProblem`` (a dead letter's reason and problem in words, never a value). Accepted forms:

- **Debezium** (2.x, and Flink CDC, which writes Debezium's JSON): ``op`` (``c``, ``u``,
  ``d``, ``r``), ``before``/``after``, ``source`` with ``connector``, ``name``, ``db``,
  ``table``, the commit time ``ts_ms`` (``ts_us``, ``ts_ns``) and a position (``lsn``;
  ``file`` + ``pos`` + ``row`` of a MySQL binlog; ``change_lsn``; ``scn``; ``sequence``).
  The Kafka Connect wrapper ``{"schema", "payload"}`` is unwrapped and its schema decodes
  Debezium's value encodings (days, epoch ms/us/ns, base64 decimals, ...). Flink CDC's
  snapshot reads (``ts_ms`` 0, ``file`` "") are read at the time they are read.
  Not changes: Kafka tombstones (``null``), heartbeats, transaction metadata, schema changes.
- **Canal** flat messages: ``data`` (rows), ``old``, ``type`` (INSERT, UPDATE, DELETE),
  ``database``, ``table``, ``es`` (binlog time, ms), ``id``, ``isDdl`` (DDL: not a change).
- **Maxwell**: ``type`` (insert, update, delete, bootstrap-insert), ``database``, ``table``,
  ``ts`` (seconds), ``xid``, ``xoffset``, ``position``, ``data``, ``old``.
- **Datastream**: ``source_metadata`` (``table``, ``database``/``schema``, ``change_type``,
  ``is_deleted``, ``log_file``/``log_position``, ``lsn`` or ``scn``), ``source_timestamp``,
  ``read_method``, ``stream_name``, ``payload``.
- **Plain change row**: ``table``, ``op``, ``row``, ``committed_at``, ``position``.

Positions order the changes of one ``source`` (one database's log, as one tool reads it);
commit times order one source against another. Every commit time is checked: an integer is
read in its named unit (``ts_ms``, Maxwell's seconds) or in ``TimeRules.unit``, or else by its
magnitude only when just one unit puts it between ``TimeRules.not_before`` and the clock plus
``TimeRules.max_ahead``; any other time is refused (``implausible_time``), never misread.
"""

import base64
import dataclasses
import datetime
import decimal
import json
import re
from typing import List, NamedTuple, Optional, Tuple, Union

__all__ = ['OPS', 'Change', 'ChangeProblem', 'JsonNumber', 'NotAChange', 'TimeRules',
           'UNITS', 'event_time', 'integer_value', 'parse_change']

OPS = ('c', 'u', 'd', 'r')
UNITS = {'s': 10**6, 'ms': 10**3, 'us': 1, 'ns': 10**-3}  # microseconds per unit
_OP_NAMES = {'create': 'c', 'insert': 'c', 'update': 'u', 'delete': 'd', 'read': 'r',
             'snapshot': 'r'}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_NAIVE_EPOCH = datetime.datetime(1970, 1, 1)
_MAX_MICROS = 253_402_300_799 * 10**6  # 9999-12-31T23:59:59Z: beyond it no time is a time


class JsonNumber(str):
    """A JSON number, kept as its exact text (a decimal's digits must not pass through a
    float); a ``str`` so that it reads as the batch's text does, and told apart from a JSON
    string where an encoding depends on it (Debezium's decimals)."""
    __slots__ = ()


@dataclasses.dataclass(frozen=True)
class TimeRules:
    """How integer times are read and which times are plausible (microseconds)."""
    unit: Optional[str] = None  # 's', 'ms', 'us' or 'ns' for integers of no named unit
    not_before: int = 946_684_800 * 10**6  # 2000-01-01T00:00:00Z
    max_ahead: int = 86_400 * 10**6  # a day ahead of the clock


class Change(NamedTuple):
    """One change of one row (a named tuple: millions of them cross the stream's keyed
    boundary, and a tuple unpickles in a third of a dataclass's time).

    ``committed_at``: microseconds since the epoch (UTC) of the commit at the seller;
    ``source``: the log the position belongs to; ``position``: integers that order the
    changes of one source (with ``part``: 0 for the old key's delete of a key change, then 1);
    ``position_text``: the position as the source gave it; ``before``: the row before an
    update, when the tool sends it (a key change shows there); ``database``: the seller's
    database or schema, for the config's table names.
    """
    table: str
    op: str
    row: dict
    committed_at: int
    position_kind: str
    position: Tuple[int, ...]
    position_text: str
    source: str = ''
    part: int = 1
    before: Optional[dict] = None
    database: str = ''
    encoded: bool = False  # Debezium without its Connect schema: values in its encodings

    @property
    def order(self) -> tuple:
        """Sort key within one source: its position, then the part."""
        return (self.position, self.part)


@dataclasses.dataclass(frozen=True)
class ChangeProblem:
    """Why an event is not a change Novation can apply (a dead letter's ``problem`` and
    ``reason``). ``table``: the table it names, if it names one."""
    problem: str
    table: Optional[str] = None
    reason: str = 'malformed'


class NotAChange(NamedTuple):
    """A line that carries no change of a row: counted by ``kind`` (tombstone, heartbeat,
    transaction, schema_change, blank, snapshot_marker, message)."""
    kind: str


Parsed = Union[Change, ChangeProblem, NotAChange]


def parse_change(event, *, read_at: int, rules: TimeRules = TimeRules()) -> List[Parsed]:
    """What one event says, as a list (a Canal message holds several rows); ``read_at``:
    when it was read (microseconds), for snapshot reads that carry no time and for the
    plausibility of the others."""
    if event is None:
        return [NotAChange('tombstone')]  # Kafka's tombstone after a delete: no change
    if not isinstance(event, dict):
        return [ChangeProblem('the event is not a JSON object')]
    connect = None
    if 'payload' in event and 'schema' in event and len(event) == 2:
        connect, event = event['schema'], event['payload']  # Kafka Connect's JSON converter
        if event is None:
            return [NotAChange('tombstone')]
        if not isinstance(event, dict):
            return [ChangeProblem('the Kafka Connect payload is not a JSON object')]
    try:
        return _dispatch(event, connect, read_at, rules)
    except _Refused as refused:
        return [refused.problem]


class _Refused(Exception):
    def __init__(self, problem: ChangeProblem):
        super().__init__(problem.problem)
        self.problem = problem


def _dispatch(event, connect, read_at, rules):
    if 'source_metadata' in event and 'payload' in event:
        return _datastream(event, read_at, rules)
    if 'isDdl' in event or ('es' in event and 'data' in event and 'type' in event):
        return _canal(event, read_at, rules)
    if isinstance(event.get('source'), dict) and 'op' in event:
        return _debezium(event, connect, read_at, rules)
    if 'table' in event and 'op' in event:
        return [_plain(event, read_at, rules)]
    if 'type' in event and 'database' in event and ('ts' in event or 'data' in event):
        return _maxwell(event, read_at, rules)
    kind = _not_a_change(event, connect)
    if kind:
        return [NotAChange(kind)]
    return [ChangeProblem('not a change event: expected Debezium (op, before/after, source), '
                          'Canal (data, type, es), Maxwell (type, data, ts), Datastream '
                          '(source_metadata, payload) or a change row (table, op, row, '
                          'committed_at, position)')]


def _not_a_change(event, connect) -> Optional[str]:
    """Debezium's lines that are no change of a row, by kind."""
    name = connect.get('name', '') if isinstance(connect, dict) else ''
    if name.endswith('Heartbeat') or set(event) == {'ts_ms'}:
        return 'heartbeat'
    if event.get('status') in ('BEGIN', 'END') and 'id' in event:
        return 'transaction'
    if 'ddl' in event or 'tableChanges' in event or 'databaseName' in event:
        return 'schema_change'
    return None


# ---------------------------------------------------------------------------------------------
# Times

# Compiled once: every change's commit time passes here (as exact JSON number text), and
# re.fullmatch's own pattern cache cost 5% of the stream's time (py-spy, issue 32).
_INTEGER = re.compile(r'-?\d{1,30}')


def integer_value(value) -> Optional[int]:
    """An integer given as a JSON number or as digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def event_time(value, what: str, read_at: int, rules: TimeRules,
               unit: Optional[str] = None) -> Union[int, 'ChangeProblem']:
    """Microseconds since the epoch of an event's time (``_event_time``), or the problem."""
    try:
        return _event_time(value, what, read_at, rules, unit)
    except _Refused as refused:
        return refused.problem


def _event_time(value, what: str, read_at: int, rules: TimeRules,
                unit: Optional[str] = None) -> int:
    """Microseconds since the epoch of an event's time: ISO 8601 with a zone, or an integer
    in ``unit`` (named by the tool), ``rules.unit``, or the one unit that makes it plausible.
    Raises _Refused with ``malformed`` or ``implausible_time``."""
    number = integer_value(value)
    if number is not None:
        units = [unit or rules.unit] if (unit or rules.unit) else list(UNITS)
        fits = [u for u in units if _plausible(_scaled(number, u), read_at, rules)]
        if len(fits) == 1:
            return _scaled(number, fits[0])
        if len(fits) > 1:  # only with a not_before far back: say which unit it is in
            raise _Refused(ChangeProblem(f'{what} is an integer that reads as a plausible time '
                                         f'in more than one unit: set stream.time_unit',
                                         reason='implausible_time'))
        raise _Refused(ChangeProblem(
            f'{what} is not a plausible time in ' +
            (f'{units[0]} since 1970' if len(units) == 1 else 'seconds, milliseconds, '
             'microseconds or nanoseconds since 1970') +
            ' (before stream.not_before or more than stream.max_ahead_seconds ahead of the '
            'clock)', reason='implausible_time'))
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.strip().replace('Z', '+00:00'))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            delta = moment - _EPOCH
            micros = (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds
            if not _plausible(micros, read_at, rules):
                raise _Refused(ChangeProblem(f'{what} is not a plausible time (before '
                                             f'stream.not_before or more than '
                                             f'stream.max_ahead_seconds ahead of the clock)',
                                             reason='implausible_time'))
            return micros
    raise _Refused(ChangeProblem(f'{what} must be an ISO 8601 time with its zone or an '
                                 f'integer time since 1970'))


def _scaled(number: int, unit: str) -> int:
    return number * UNITS[unit] if unit != 'ns' else number // 1000


def _plausible(micros: int, read_at: int, rules: TimeRules) -> bool:
    return rules.not_before <= micros <= min(read_at + rules.max_ahead, _MAX_MICROS)


# ---------------------------------------------------------------------------------------------
# Debezium (and Flink CDC)

_OP_WORDS = {'c': 'a create', 'u': 'an update', 'd': 'a delete', 'r': 'a snapshot read'}


def _op(value):
    if isinstance(value, str):
        op = _OP_NAMES.get(value.lower(), value.lower())
        if op in OPS:
            return op
    return None


def _debezium(event, connect, read_at, rules):
    source = event['source']
    table = source.get('table')
    if not isinstance(table, str) or not table:
        return [ChangeProblem('source.table is missing')]
    if event['op'] == 't':
        return [ChangeProblem('a truncate (op t) would delete every row of the table: it is '
                              'not applied; the seller must send the deletes, or the '
                              'acquirer empty the table by hand', table)]
    if event['op'] == 'm':
        return [NotAChange('message')]  # PostgreSQL's logical decoding message
    op = _op(event['op'])
    if op is None:
        return [ChangeProblem(f'op must be one of {", ".join(OPS)}', table)]
    name = 'before' if op == 'd' else 'after'  # a delete carries the row as it was
    row = event.get(name)
    if not isinstance(row, dict):
        return [ChangeProblem(f'{_OP_WORDS[op]} needs {name!r} as an object', table)]
    committed = _debezium_time(source, op, read_at, rules, table)
    position = _debezium_position(source, op)
    if isinstance(position, str):
        return [ChangeProblem(position, table)]
    before = event.get('before') if op == 'u' and isinstance(event.get('before'), dict) \
        else None
    if connect is not None:
        decoders = _connect_decoders(connect, name)
        row = _decoded(row, decoders, table)
        if before is not None:
            before = _decoded(before, _connect_decoders(connect, 'before'), table)
    origin = f'{source.get("connector") or "debezium"}:{source.get("name") or ""}'
    return [Change(table, op, row, committed, *position, source=origin, before=before,
                   database=str(source.get('db') or ''), encoded=connect is None)]


def _debezium_time(source, op, read_at, rules, table):
    for key, unit in (('ts_us', 'us'), ('ts_ns', 'ns'), ('ts_ms', 'ms')):
        value = source.get(key)
        if value is None:
            continue
        if op == 'r' and integer_value(value) == 0:
            return read_at  # Flink CDC's snapshot reads carry no time: read now
        try:
            return _event_time(value, f'source.{key}', read_at, rules, unit)
        except _Refused as refused:
            raise _Refused(dataclasses.replace(refused.problem, table=table)) from None
    raise _Refused(ChangeProblem('source.ts_ms (the commit time, milliseconds since 1970) is '
                                 'missing', table))


def _debezium_position(source, op):
    """(kind, integers, text) of the source's position, or a problem in words."""
    if source.get('lsn') is not None:
        lsn = integer_value(source['lsn'])
        return ('lsn', (lsn,), f'lsn:{lsn}') if lsn is not None else \
            'source.lsn must be an integer'
    if source.get('file') is not None or source.get('pos') is not None:
        file = str(source.get('file') or '')
        match = re.fullmatch(r'.*?(\d+)', file)
        pos, row = integer_value(source.get('pos')), integer_value(source.get('row') or 0)
        if file == '' and pos is not None and row is not None:
            number = 0  # Flink CDC's snapshot reads: before every position of the log
        elif not match or pos is None or row is None:
            return 'a binlog position needs source.file (ending in its number) and source.pos'
        else:
            number = int(match.group(1))
        return ('binlog', (number, pos, row), f'binlog:{file}:{pos}' + (f':{row}' if row else ''))
    if source.get('change_lsn') is not None:
        parts = str(source['change_lsn']).split(':')
        try:
            numbers = tuple(int(p, 16) for p in parts)
        except ValueError:
            return 'source.change_lsn must be hexadecimal parts separated by ":"'
        return 'change_lsn', numbers, f'change_lsn:{source["change_lsn"]}'
    if source.get('scn') is not None:
        scn = integer_value(source['scn'])
        return ('scn', (scn,), f'scn:{scn}') if scn is not None else \
            'source.scn must be an integer'
    if source.get('sequence') is not None:
        return _sequence(source['sequence'])
    if op == 'r':
        return 'snapshot', (), 'snapshot'
    return ('the event has no position: expected source.lsn, source.file and source.pos, '
            'source.change_lsn, source.scn or source.sequence')


def _sequence(value):
    """Debezium's PostgreSQL ``sequence`` is a JSON list of two LSNs as text; elsewhere an
    integer."""
    if isinstance(value, str) and value.startswith('['):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return 'source.sequence is not valid JSON'
    items = value if isinstance(value, list) else [value]
    numbers = tuple(integer_value(v) for v in items if v is not None)
    if not numbers or any(n is None for n in numbers):
        return 'source.sequence must be an integer or a list of integers'
    return 'sequence', numbers, 'sequence:' + ','.join(map(str, numbers))


# Debezium's logical types (Kafka Connect schema ``name``) -> how its JSON value reads as text
def _days(value, _):
    return (_NAIVE_EPOCH + datetime.timedelta(days=int(value))).date().isoformat()


def _epoch(per_second):
    def decode(value, _):
        micros = int(value) * 10**6 // per_second
        return (_NAIVE_EPOCH + datetime.timedelta(microseconds=micros)).isoformat(sep=' ')
    return decode


def _time_of_day(per_second):
    def decode(value, _):
        micros = int(value) * 10**6 // per_second
        return (datetime.datetime.min + datetime.timedelta(microseconds=micros)).time() \
            .isoformat()
    return decode


def _decimal(value, parameters):
    unscaled = int.from_bytes(base64.b64decode(value, validate=True), 'big', signed=True)
    scale = int((parameters or {}).get('scale', 0))
    return str(decimal.Decimal(unscaled).scaleb(-scale))


def _variable_decimal(value, _):
    return _decimal(value['value'], {'scale': value['scale']})


_LOGICAL = {
    'io.debezium.time.Date': _days, 'org.apache.kafka.connect.data.Date': _days,
    'io.debezium.time.Timestamp': _epoch(10**3),
    'org.apache.kafka.connect.data.Timestamp': _epoch(10**3),
    'io.debezium.time.MicroTimestamp': _epoch(10**6),
    'io.debezium.time.NanoTimestamp': _epoch(10**9),
    'io.debezium.time.Time': _time_of_day(10**3),
    'org.apache.kafka.connect.data.Time': _time_of_day(10**3),
    'io.debezium.time.MicroTime': _time_of_day(10**6),
    'io.debezium.time.NanoTime': _time_of_day(10**9),
    'org.apache.kafka.connect.data.Decimal': _decimal,
    'io.debezium.data.VariableScaleDecimal': _variable_decimal,
}


def _connect_decoders(schema, name) -> dict:
    """{column: (decode, parameters)} for the columns of the envelope's ``name`` struct whose
    logical type Debezium encodes."""
    decoders = {}
    for part in (schema.get('fields') or []) if isinstance(schema, dict) else []:
        if isinstance(part, dict) and part.get('field') == name:
            for field in part.get('fields') or []:
                if isinstance(field, dict) and field.get('name') in _LOGICAL:
                    decoders[field.get('field')] = (_LOGICAL[field['name']],
                                                    field.get('parameters'))
    return decoders


def _decoded(row, decoders, table):
    if not decoders:
        return row
    out = dict(row)
    for column, (decode, parameters) in decoders.items():
        value = out.get(column)
        if value is None:
            continue
        try:
            out[column] = decode(value, parameters)
        except (ValueError, TypeError, KeyError, OverflowError, decimal.InvalidOperation):
            raise _Refused(ChangeProblem('a value of a column is not in the encoding its Kafka '
                                         'Connect schema names', table)) from None
    return out


# ---------------------------------------------------------------------------------------------
# Canal, Maxwell, Datastream, plain rows

_CANAL_OPS = {'INSERT': 'c', 'UPDATE': 'u', 'DELETE': 'd'}


def _canal(event, read_at, rules):
    if event.get('isDdl') is True:
        return [NotAChange('schema_change')]
    table = event.get('table')
    if not isinstance(table, str) or not table:
        return [ChangeProblem('a Canal message needs its table')]
    op = _CANAL_OPS.get(str(event.get('type', '')).upper())
    if op is None:
        return [ChangeProblem('a Canal message\'s type must be INSERT, UPDATE or DELETE', table)]
    rows, old = event.get('data'), event.get('old') or []
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows) \
            or not isinstance(old, list):
        return [ChangeProblem('a Canal message needs data as a list of rows', table)]
    committed = _named_time(event, 'es', 'ms', read_at, rules, table)
    message = integer_value(event.get('id'))
    if message is None:
        return [ChangeProblem('a Canal message needs its id (an integer)', table)]
    database = str(event.get('database') or '')
    out = []
    for index, row in enumerate(rows):
        before = None
        if op == 'u' and index < len(old) and isinstance(old[index], dict):
            before = {**row, **old[index]}  # old holds the changed columns' old values
        out.append(Change(table, op, row, committed, 'canal', (message, index),
                          f'canal:{message}:{index}', source=f'canal:{database}',
                          before=before, database=database))
    return out


_MAXWELL_OPS = {'insert': 'c', 'update': 'u', 'delete': 'd', 'bootstrap-insert': 'r'}


def _maxwell(event, read_at, rules):
    kind = str(event.get('type', ''))
    if kind in ('bootstrap-start', 'bootstrap-complete'):
        return [NotAChange('snapshot_marker')]
    table = event.get('table')
    op = _MAXWELL_OPS.get(kind)
    if op is None:
        if kind.startswith(('table-', 'database-')) or 'sql' in event:
            return [NotAChange('schema_change')]
        return [ChangeProblem('a Maxwell event\'s type must be insert, update, delete or '
                              'bootstrap-insert', table if isinstance(table, str) else None)]
    if not isinstance(table, str) or not table:
        return [ChangeProblem('a Maxwell event needs its table')]
    row = event.get('data')
    if not isinstance(row, dict):
        return [ChangeProblem('a Maxwell event needs data as an object', table)]
    committed = _named_time(event, 'ts', 's', read_at, rules, table)
    xoffset = integer_value(event.get('xoffset') or 0) or 0
    position = event.get('position')
    match = re.fullmatch(r'.*?(\d+):(\d+)', position) if isinstance(position, str) else None
    if match:
        kind_, numbers, text = 'binlog', (int(match.group(1)), int(match.group(2)), xoffset), \
            f'binlog:{position}:{xoffset}'
    elif integer_value(event.get('xid')) is not None:
        xid = integer_value(event['xid'])
        kind_, numbers, text = 'xid', (xid, xoffset), f'xid:{xid}:{xoffset}'
    elif op == 'r':
        kind_, numbers, text = 'snapshot', (), 'snapshot'
    else:
        return [ChangeProblem('a Maxwell event needs its position or xid', table)]
    old = event.get('old')
    before = {**row, **old} if op == 'u' and isinstance(old, dict) else None
    database = str(event.get('database') or '')
    return [Change(table, op, row, committed, kind_, numbers, text,
                   source=f'maxwell:{event.get("server_id") or ""}', before=before,
                   database=database)]


def _datastream(event, read_at, rules):
    meta, payload = event['source_metadata'], event['payload']
    if not isinstance(meta, dict) or not isinstance(payload, dict):
        return [ChangeProblem('a Datastream event needs source_metadata and payload as '
                              'objects')]
    table = meta.get('table') or event.get('object')
    if not isinstance(table, str) or not table:
        return [ChangeProblem('source_metadata.table is missing')]
    change = str(meta.get('change_type') or 'INSERT').upper()
    backfill = 'backfill' in str(event.get('read_method', ''))
    part = 0 if change == 'UPDATE-DELETE' else 1
    op = 'd' if meta.get('is_deleted') is True or change in ('DELETE', 'UPDATE-DELETE') else \
        'r' if backfill else 'u' if change.startswith('UPDATE') else 'c'
    committed = _named_time(event, 'source_timestamp', 'ms', read_at, rules, table)
    if meta.get('log_file') is not None or meta.get('log_position') is not None:
        file = str(meta.get('log_file') or '')
        match = re.fullmatch(r'.*?(\d+)', file)
        pos = integer_value(meta.get('log_position'))
        if pos is None or (file and not match):
            return [ChangeProblem('a binlog position needs log_file (ending in its number) '
                                  'and log_position', table)]
        numbers = (int(match.group(1)) if match else 0, pos)
        kind, text = 'binlog', f'binlog:{file}:{pos}'
    elif meta.get('lsn') is not None:
        lsn = _pg_lsn(meta['lsn'])
        if lsn is None:
            return [ChangeProblem('source_metadata.lsn must be an LSN (hex/hex) or an integer',
                                  table)]
        kind, numbers, text = 'lsn', (lsn,), f'lsn:{meta["lsn"]}'
    elif meta.get('scn') is not None and integer_value(meta['scn']) is not None:
        scn = integer_value(meta['scn'])
        kind, numbers, text = 'scn', (scn, integer_value(meta.get('ssn')) or 0), f'scn:{scn}'
    elif backfill:
        kind, numbers, text = 'snapshot', (), 'snapshot'
    else:
        return [ChangeProblem('a Datastream event needs its log_file and log_position, lsn '
                              'or scn', table)]
    database = str(meta.get('database') or meta.get('schema') or '')
    return [Change(table, op, payload, committed, kind, numbers, text,
                   source=f'datastream:{event.get("stream_name") or ""}', part=part,
                   database=database)]


def _pg_lsn(value) -> Optional[int]:
    number = integer_value(value)
    if number is not None:
        return number
    match = re.fullmatch(r'([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})', str(value))
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16) if match else None


def _named_time(event, key, unit, read_at, rules, table):
    try:
        return _event_time(event.get(key), key, read_at, rules, unit)
    except _Refused as refused:
        raise _Refused(dataclasses.replace(refused.problem, table=table)) from None


def _plain(event, read_at, rules):
    table = event['table']
    if not isinstance(table, str) or not table:
        return ChangeProblem('table must be a non-empty string')
    op = _op(event['op'])
    if op is None:
        return ChangeProblem(f'op must be one of {", ".join(OPS)} (or create, update, delete, '
                             f'read)', table)
    row = event.get('row')
    if not isinstance(row, dict):
        return ChangeProblem(f'{_OP_WORDS[op]} needs \'row\' as an object', table)
    committed = _named_time(event, 'committed_at', None, read_at, rules, table)
    position = integer_value(event.get('position'))
    if position is None:
        return ChangeProblem('position must be an integer (the change\'s sequence number)',
                             table)
    before = event.get('before') if op == 'u' and isinstance(event.get('before'), dict) \
        else None
    return Change(table, op, row, committed, 'seq', (position,), f'seq:{position}',
                  source=str(event.get('source') or ''), before=before)
