"""Change events as each CDC tool writes them, from its documentation (for the tests): Canal's
flat message, Maxwell's JSON, Google Datastream's JSON files and Debezium's JSON with the
Kafka Connect schema (``value.converter.schemas.enable=true``) and its default encodings."""

import base64


def canal(kind, rows, *, old=None, es=1_767_225_600_000, message_id=1, database='loan_db',
          table='t_customer', ddl=False):
    """A Canal flat message (canal.mq.flatMessage=true): every value as text."""
    return {'data': rows or None, 'database': database, 'es': es, 'id': message_id,
            'isDdl': ddl, 'mysqlType': {}, 'old': old, 'pkNames': ['id'],
            'sql': 'ALTER TABLE t ADD c INT' if ddl else '', 'sqlType': {}, 'table': table,
            'ts': es + 150, 'type': kind}


def maxwell(kind, data, *, ts, position=None, xid=940786, xoffset=None, old=None,
            database='loan_db', table='t_customer'):
    """A Maxwell event: ``ts`` in seconds; ``position`` with output_binlog_position."""
    event = {'database': database, 'table': table, 'type': kind, 'ts': ts, 'xid': xid,
             'commit': True, 'server_id': 1}
    if data is not None:
        event['data'] = data
    if old is not None:
        event['old'] = old
    if position is not None:
        event['position'] = position
    if xoffset is not None:
        event['xoffset'] = xoffset
    if kind.startswith('bootstrap'):
        event.pop('xid')
    return event


def datastream(payload, change_type, deleted, source_ms, *, backfill=False,
               table='t_customer'):
    """A record of a Datastream JSON file from a MySQL source."""
    return {'uuid': '5ac6a3f6-0000-4000-8000-000000000001',
            'read_timestamp': source_ms + 900, 'source_timestamp': source_ms,
            'object': f'loan_db_{table}',
            'read_method': 'mysql-backfill-fulldump' if backfill else 'mysql-cdc-binlog',
            'stream_name': 'projects/p/locations/asia-east2/streams/seller',
            'schema_key': 'a1b2', 'sort_keys': [source_ms, 'mysql-bin.000003', 777],
            'source_metadata': {'table': table, 'database': 'loan_db',
                                'primary_keys': ['customer_id'],
                                'log_file': None if backfill else 'mysql-bin.000003',
                                'log_position': None if backfill else 777,
                                'change_type': change_type, 'is_deleted': deleted},
            'payload': payload}


def decimal_bytes(unscaled: int) -> str:
    """Debezium's precise decimal: the unscaled value's big-endian two's complement, base64."""
    length = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(length, 'big', signed=True)).decode()


_CONNECT_FIELDS = [
    {'type': 'string', 'optional': False, 'field': 'customer_id'},
    {'type': 'int32', 'optional': True, 'name': 'io.debezium.time.Date', 'version': 1,
     'field': 'birth_date'},
    {'type': 'int64', 'optional': True, 'name': 'io.debezium.time.Timestamp', 'version': 1,
     'field': 'signed_at'},
    {'type': 'int64', 'optional': True, 'name': 'io.debezium.time.MicroTimestamp',
     'version': 1, 'field': 'opened_at'},
    {'type': 'bytes', 'optional': True, 'name': 'org.apache.kafka.connect.data.Decimal',
     'version': 1, 'parameters': {'scale': '2', 'connect.decimal.precision': '10'},
     'field': 'income'},
    {'type': 'int16', 'optional': True, 'field': 'vip'},
    {'type': 'string', 'optional': True, 'name': 'io.debezium.time.ZonedTimestamp',
     'version': 1, 'field': 'updated_at'},
]


def debezium_connect(after, ts_ms, *, op='c', lsn=24023928):
    """A Debezium PostgreSQL change with the Kafka Connect schema, values encoded."""
    value = {'type': 'struct', 'optional': True, 'name': 'seller.public.customers.Value',
             'fields': _CONNECT_FIELDS}
    schema = {'type': 'struct', 'name': 'seller.public.customers.Envelope', 'optional': False,
              'fields': [{**value, 'field': 'before'}, {**value, 'field': 'after'},
                         {'type': 'struct', 'field': 'source', 'fields': []},
                         {'type': 'string', 'field': 'op'}]}
    payload = {'before': None, 'after': after, 'op': op, 'ts_ms': ts_ms + 40,
               'source': {'version': '2.7.3.Final', 'connector': 'postgresql',
                          'name': 'seller', 'ts_ms': ts_ms, 'snapshot': 'false',
                          'db': 'loan', 'schema': 'public', 'table': 'customers',
                          'txId': 771, 'lsn': lsn, 'xmin': None}}
    return {'schema': schema, 'payload': payload}
