"""Change events of the seller's change data capture, read into one form (pure, no Beam).

Accepted forms, one JSON object each (a line of a JSON Lines file, an Avro record, a Pub/Sub
message):

- **Debezium** envelope: ``op`` (``c`` create, ``u`` update, ``d`` delete, ``r`` snapshot read),
  ``before``/``after`` (rows in the table's export column names or aliases), ``source`` with
  ``table`` and the commit time ``ts_ms`` (or ``ts_us``, ``ts_ns``), and a position:
  ``lsn`` (PostgreSQL), ``file`` + ``pos`` (+ ``row``) of a MySQL binlog, ``change_lsn``
  (SQL Server, ``hex:hex:hex``), ``scn`` (Oracle) or ``sequence``. The Kafka Connect wrapper
  (``{"schema": ..., "payload": {...}}``) is unwrapped.
- **Plain change row**: ``table``, ``op`` (``c``/``u``/``d``/``r``, or ``create``, ``update``,
  ``delete``, ``read``), ``row``, ``committed_at`` (ISO 8601 with a zone, or epoch
  milliseconds) and ``position`` (an integer sequence number).

A create, update or snapshot read carries the row after the change; a delete carries the row
before it (Debezium's ``before``; a plain row's ``row``), of which only the keys are used.
Anything else is a ``ChangeProblem`` naming what is wrong, never a value.
"""

import dataclasses
import datetime
import json
import re
from typing import NamedTuple, Optional, Tuple, Union

__all__ = ['OPS', 'Change', 'ChangeProblem', 'integer_value', 'parse_change', 'timestamp_micros']

OPS = ('c', 'u', 'd', 'r')
_OP_NAMES = {'create': 'c', 'insert': 'c', 'update': 'u', 'delete': 'd', 'read': 'r',
             'snapshot': 'r'}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class Change(NamedTuple):
    """One change of one row, in a form that orders (a named tuple: millions of them cross
    the stream's keyed boundary, and a tuple unpickles in a third of a dataclass's time).

    ``committed_at``: microseconds since the epoch (UTC) of the commit at the seller;
    ``position``: integers that order the changes of one source (compare only positions of the
    same ``position_kind``); ``position_text``: the position as the source gave it, for the
    delivery and the manifest.
    """
    table: str
    op: str
    row: dict
    committed_at: int
    position_kind: str
    position: Tuple[int, ...]
    position_text: str

    @property
    def order(self) -> tuple:
        """Sort key: commit time, then the source's own position."""
        return (self.committed_at, self.position_kind, self.position)


@dataclasses.dataclass(frozen=True)
class ChangeProblem:
    """Why an event is not a change Novation can apply (a dead letter's ``problem``).
    ``table``: the table it names, if it names one."""
    problem: str
    table: Optional[str] = None


def parse_change(event) -> Union[Change, ChangeProblem]:
    """The change an event describes, or the problem that keeps it from being one."""
    if not isinstance(event, dict):
        return ChangeProblem('the event is not a JSON object')
    if isinstance(event.get('payload'), dict) and 'schema' in event:
        event = event['payload']  # Kafka Connect's JSON converter with schemas
    if isinstance(event.get('source'), dict) and 'op' in event:
        return _debezium(event)
    if 'table' in event and 'op' in event:
        return _plain(event)
    return ChangeProblem('not a change event: expected a Debezium envelope (op, before/after, '
                         'source) or a change row (table, op, row, committed_at, position)')


def _op(value):
    if isinstance(value, str):
        op = _OP_NAMES.get(value.lower(), value.lower())
        if op in OPS:
            return op
    return None


_OP_WORDS = {'c': 'a create', 'u': 'an update', 'd': 'a delete', 'r': 'a snapshot read'}


def _debezium(event):
    source = event['source']
    table = source.get('table')
    if not isinstance(table, str) or not table:
        return ChangeProblem("source.table is missing")
    op = _op(event['op'])
    if op is None:
        return ChangeProblem(f'op must be one of {", ".join(OPS)}', table)
    name = 'before' if op == 'd' else 'after'  # a delete carries the row as it was
    row = event.get(name)
    if not isinstance(row, dict):
        return ChangeProblem(f'{_OP_WORDS[op]} needs {name!r} as an object', table)
    committed = _debezium_time(source)
    if committed is None:
        return ChangeProblem('source.ts_ms (the commit time, milliseconds since 1970) is '
                             'missing or not a number', table)
    position = _debezium_position(source)
    if isinstance(position, str):
        return ChangeProblem(position, table)
    return Change(table, op, row, committed, *position)


def _debezium_time(source):
    for key, per_second in (('ts_us', 10**6), ('ts_ns', 10**9), ('ts_ms', 10**3)):
        value = integer_value(source.get(key))
        if value is not None:
            return value * 10**6 // per_second
    return None


def _debezium_position(source):
    """(kind, integers, text) of the source's position, or a problem in words."""
    if source.get('lsn') is not None:
        lsn = integer_value(source['lsn'])
        return ('lsn', (lsn,), f'lsn:{lsn}') if lsn is not None else \
            'source.lsn must be an integer'
    if source.get('file') is not None or source.get('pos') is not None:
        match = re.fullmatch(r'.*?(\d+)', str(source.get('file') or ''))
        pos, row = integer_value(source.get('pos')), integer_value(source.get('row', 0))
        if not match or pos is None or row is None:
            return 'a binlog position needs source.file (ending in its number) and source.pos'
        return ('binlog', (int(match.group(1)), pos, row),
                f'binlog:{source["file"]}:{pos}' + (f':{row}' if row else ''))
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
    return ('the event has no position: expected source.lsn, source.file and source.pos, '
            'source.change_lsn, source.scn or source.sequence')


def _sequence(value):
    """Debezium's PostgreSQL ``sequence`` is a JSON list of two LSNs as text; elsewhere an
    integer."""
    if isinstance(value, str) and value.startswith('['):
        try:
            value = json.loads(value)
        except ValueError:
            return 'source.sequence is not valid JSON'
    items = value if isinstance(value, list) else [value]
    numbers = tuple(integer_value(v) for v in items)
    if not numbers or any(n is None for n in numbers):
        return 'source.sequence must be an integer or a list of integers'
    return 'sequence', numbers, 'sequence:' + ','.join(map(str, numbers))


def _plain(event):
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
    committed = timestamp_micros(event.get('committed_at'))
    if committed is None:
        return ChangeProblem('committed_at must be an ISO 8601 time with its zone or '
                             'milliseconds since 1970', table)
    position = integer_value(event.get('position'))
    if position is None:
        return ChangeProblem('position must be an integer (the change\'s sequence number)',
                             table)
    return Change(table, op, row, committed, 'seq', (position,), f'seq:{position}')


def integer_value(value) -> Optional[int]:
    """An integer given as a JSON number or as digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r'-?\d{1,30}', value.strip()):
        return int(value)
    return None


def timestamp_micros(value) -> Optional[int]:
    """Microseconds since the epoch of an ISO 8601 time with a zone, or of epoch ms."""
    millis = integer_value(value)
    if millis is not None:
        return millis * 1000
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace('Z', '+00:00'))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a commit time without a zone cannot be ordered against another feed
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds
