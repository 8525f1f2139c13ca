"""A change's row values as the batch's conform reads them (pure, no Beam).

Debezium without its Kafka Connect schema (``value.converter.schemas.enable=false``) still
encodes values by their column type: DATE as days since 1970, DATETIME/TIMESTAMP as epoch
milliseconds, microseconds or nanoseconds (by the column's precision), DECIMAL as the base64
bytes of its unscaled value (``decimal.handling.mode=precise``, the default). The table's
schema types say which: ``plain_row`` turns such values into the text the batch's casts read,
and every JSON number into plain text. An integer in a timestamp column is read by its
magnitude (Debezium never sends seconds there): under 10^13 milliseconds, under 10^16
microseconds, else nanoseconds, which puts any time from 1970 + 4 months to 2286 in its one
unit.
"""

import base64
import binascii
import datetime
import decimal
import re
from typing import Optional, Tuple

from transforms.stream.changes import JsonNumber

__all__ = ['DECIMAL_MODES', 'plain_row']

DECIMAL_MODES = ('precise', 'string', 'double')  # Debezium's decimal.handling.mode
_NAIVE_EPOCH = datetime.datetime(1970, 1, 1)
_INTEGER = re.compile(r'-?\d{1,19}')


def plain_row(row: dict, kinds: dict, encoded: bool, decimals: str = 'precise') -> \
        Tuple[dict, Optional[str]]:
    """(the row with plain text values, the column whose value could not be decoded or None).

    ``kinds``: column -> (kind, scale) of the table's fields and aliases; ``encoded``: the
    row comes from Debezium without its Connect schema, so its values carry Debezium's
    encodings; ``decimals``: the connector's ``decimal.handling.mode``."""
    out = {}
    for column, value in row.items():
        if encoded and value is not None:
            kind = kinds.get(column)
            if kind is not None:
                try:
                    value = _decode(value, kind, decimals)
                except (ValueError, binascii.Error, OverflowError, decimal.InvalidOperation):
                    return row, column
        out[column] = str.__str__(value) if isinstance(value, JsonNumber) else value
    return out, None


def _decode(value, kind, decimals):
    name, scale = kind
    if name == 'date' and isinstance(value, JsonNumber) and _INTEGER.fullmatch(value):
        return (_NAIVE_EPOCH + datetime.timedelta(days=int(value))).date().isoformat()
    if name == 'timestamp' and isinstance(value, JsonNumber) and _INTEGER.fullmatch(value):
        number = int(value)
        micros = number * 1000 if abs(number) < 10**13 else number if abs(number) < 10**16 \
            else number // 1000
        return (_NAIVE_EPOCH + datetime.timedelta(microseconds=micros)).isoformat(sep=' ')
    if name == 'decimal' and decimals == 'precise' and isinstance(value, str) and \
            not isinstance(value, JsonNumber):
        unscaled = int.from_bytes(base64.b64decode(value, validate=True), 'big', signed=True)
        return str(decimal.Decimal(unscaled).scaleb(-(scale or 0)))
    return value
