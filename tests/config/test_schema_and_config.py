"""Every schema and config rule fails before any data is read, naming file, key and values."""

import copy
import json
import os

import pytest
import yaml

from config import load_config, parse_config
from schemas import LEVELS, parse_schema
from transforms.common.errors import ConfigError, NovationError, SchemaError

from tests.conftest import ROOT

SCHEMA = {'type': 'record', 'name': 't', 'subject_key': 'id', 'fields': [
    {'name': 'id', 'type': 'string', 'classification': 'personal', 'category': 'customer_id'},
    {'name': 'born', 'type': {'type': 'int', 'logicalType': 'date'},
     'classification': 'personal'},
]}


def schema_with(**field_changes):
    doc = copy.deepcopy(SCHEMA)
    doc['fields'][1].update(field_changes)
    doc['fields'][1] = {k: v for k, v in doc['fields'][1].items() if v is not None}
    return json.dumps(doc)


@pytest.mark.parametrize('text, message', [
    (schema_with(classification=None),
     "t.avsc: field 'born' has no \"classification\"; every field must be classified as one "
     "of public, internal, personal, sensitive, restricted"),
    (schema_with(classification='secret'),
     "t.avsc: field 'born': classification 'secret' is not a level; allowed: public, internal, "
     "personal, sensitive, restricted"),
    (schema_with(category='blood_type'), "t.avsc: field 'born': category 'blood_type' is "
                                         "unknown; allowed: address, amount"),
    (schema_with(category='cn_resident_id'), "category 'cn_resident_id' must be classified "
                                             "'sensitive' or higher, not 'personal'"),
    (schema_with(type='uuid'), "t.avsc: field 'born': type 'uuid' is not supported"),
    (json.dumps({**SCHEMA, 'subject_key': 'nope'}), '"subject_key" must name one of the '
                                                    'fields (born, id)'),
    (json.dumps({**SCHEMA, 'primary_key': 'nope'}), '"primary_key" must name one of the '
                                                    'fields (born, id)'),
    (json.loads(schema_with(type=['null', 'string'])) | {'primary_key': 'born'},
     "t.avsc: primary key 'born' must not be nullable"),
    (schema_with(aliases=['id']), "column name 'id' is used by fields 'id' and 'born'"),
    (schema_with(aliases='birthday'), '"aliases" must be a list of column names'),
    ('{"type": "record", ', 't.avsc: not valid JSON'),
])
def test_schema_errors(text, message):
    text = text if isinstance(text, str) else json.dumps(text)
    with pytest.raises(SchemaError) as e:
        parse_schema(text, 't.avsc')
    assert message in str(e.value)


def test_bundled_schemas_load():
    for name in ('customers', 'contracts', 'repayments', 'collection_calls'):
        with open(os.path.join(ROOT, 'schemas', f'{name}.avsc'), encoding='utf-8') as f:
            schema = parse_schema(f.read(), name)
        assert schema.subject_key == 'customer_id'


@pytest.fixture
def demo_doc():
    with open(os.path.join(ROOT, 'config', 'demo.yaml'), encoding='utf-8') as f:
        return yaml.safe_load(f)


def parse(doc):
    # Schemas are resolved from the repository so no data or generated files are needed.
    return parse_config(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), 'demo.yaml',
                        ROOT)


def test_a_feed_is_a_glob_of_files_or_a_pub_sub_subscription(demo_doc):
    doc = change(demo_doc, 'stream.changes', 'projects/seller-cdc/subscriptions/novation-cdc')
    doc = change(doc, 'stream.timestamp_attribute', 'committed_at')
    stream = parse(doc).stream
    assert stream.changes == 'projects/seller-cdc/subscriptions/novation-cdc'  # not a path
    assert stream.consent == os.path.join(ROOT, 'feeds', 'consent', '*.jsonl')
    assert stream.timestamp_attribute == 'committed_at'


def test_demo_config_is_valid(demo_doc):
    config = parse(demo_doc)
    assert [t.name for t in config.tables] == ['customers', 'contracts', 'repayments',
                                              'collection_calls']
    assert config.transfer.cross_border
    customers = config.table('customers')
    assert customers.rule('login_password_hash').operator.name == 'drop'
    assert 'login_password_hash' not in customers.delivered_schema.names
    assert customers.rule('national_id').operator.name == 'tokenize'


def change(doc, dotted, value):
    # masking.fields keys are TABLE.FIELD: keep them whole
    head, _, rest = dotted.partition('masking.fields.')
    keys = ['masking', 'fields', rest] if rest else dotted.split('.')
    target = doc
    for k in keys[:-1]:
        target = target[k]
    if value is None:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


@pytest.mark.parametrize('dotted, value, message', [
    ('transfer', None, 'demo.yaml: missing transfer'),
    ('transfer.purposes', [{'name': 'x', 'legal_basis': 'interest'}],
     "transfer.purposes[0].legal_basis: 'interest' is not allowed; allowed: consent, contract"),
    ('tables.customers.format', 'xlsx',
     "tables.customers.format: 'xlsx' is not allowed; allowed: csv, jsonl, avro, parquet"),
    ('tables.customers.encoding', 'big5',
     "tables.customers.encoding: 'big5' is not allowed; allowed: utf-8, utf-8-sig, gbk, gb18030"),
    ('tables.customers.colour', 'red', 'tables.customers: unknown key(s) colour; allowed: path, '
                                       'schema, format, encoding, subject_key, delimiter'),
    ('tables.customers.delimiter', ';;', "tables.customers.delimiter: must be one character"),
    ('tables.customers.quote', ',', 'tables.customers.quote: must differ from the delimiter'),
    ('tables.customers.header', 'yes', "tables.customers.header: must be true or false"),
    ('risk', {'min_k': 1}, 'risk.min_k: must be a whole number from 2 to 1000000, got 1'),
    ('risk', {'enforce': 'yes'}, "risk.enforce: must be true or false, got 'yes'"),
    ('risk', {'k': 5}, 'risk: unknown key(s) k; allowed: min_k, enforce'),
    ('notice.path', 'out/notices', 'notice.path: must be outside output.path'),
    ('transfer.acquirer_contact', None, 'transfer: acquirer_contact is needed with notice'),
    ('consent.colour', 'red', 'consent: unknown key(s) colour; allowed: registry, erasures, '
                              'columns'),
    ('consent.columns', {'customer': 'cust_no'},
     'consent.columns: unknown key(s) customer; allowed: subject_id, purpose'),
    ('consent.columns', {'subject_id': ''}, 'consent.columns.subject_id: must be a non-empty'),
    ('consent.columns', {'subject_id': 'x', 'purpose': 'x'},
     "consent.columns: 'x' is given for two columns"),
    ('tables.contracts.delimiter', ';', 'tables.contracts.delimiter: applies to csv only'),
    ('tables.contracts.encoding', 'gbk', 'tables.contracts.encoding: applies to text formats '
                                         '(csv, jsonl) only, not parquet'),
    ('tables.customers.extra_columns', 'keep', "tables.customers.extra_columns: 'keep' is not "
                                               "allowed; allowed: error, ignore"),
    ('tables.customers.timezone', 'Mars/Olympus', "tables.customers.timezone: 'Mars/Olympus' is "
                                                  "not a time zone"),
    ('tables.customers.null_values', 'NULL', 'tables.customers.null_values: must be a list'),
    ('tables.customers.duplicates', {'keep': 'first'}, "tables.customers.duplicates.keep: "
                                                       "'first' is not allowed; allowed: none, "
                                                       "latest"),
    ('tables.customers.duplicates', {'keep': 'latest'}, 'tables.customers.duplicates.order_by: '
                                                        'keep: latest needs order_by'),
    ('tables.customers.duplicates', {'keep': 'none', 'order_by': 'updated_at'},
     'order_by: applies to keep: latest only'),
    ('tables.collection_calls.duplicates', {'keep': 'none'}, 'declares no "primary_key"'),
    ('tables.customers.subject_key', 'nobody', "tables.customers.subject_key: 'nobody' is not a "
                                               "field of"),
    ('masking.defaults.personal', 'keep_everything', "masking.defaults.personal: unknown "
                                                     "masking method 'keep_everything'"),
    ('masking.defaults.sensitive', 'keep', "masking.defaults.sensitive: 'keep' is not allowed "
                                           "for sensitive fields; allowed: date_shift"),
    ('masking.defaults.restricted', 'keep', "masking.defaults.restricted: 'keep' is not allowed: "
                                            "restricted data (authentication data) is never "
                                            "transferred; allowed: drop"),
    ('masking.defaults.restricted', [1, 2], 'masking.defaults.restricted: must be a method '
                                            'name or a mapping with "method"'),
    ('masking.fields.customers.credit_score', {'method': 'generalize', 'bucket': float('nan')},
     'generalize on a number needs bucket: a positive width up to 9,007,199,254,740,992, got nan'),
    ('masking.fields.customers.gender', {'method': {'a': 1}}, 'unknown masking method'),
    ('tables.customers.quote', '\x00', 'tables.customers.quote: must be one character, a '
                                       'punctuation mark'),
    ('masking.fields.customers.login_password_hash', 'hash',
     "masking.fields.customers.login_password_hash: method 'hash' is not allowed for "
     "'login_password_hash', a restricted field; allowed: drop"),
    ('masking.fields.customers.nmae', 'keep', "masking.fields.customers.nmae: no field 'nmae' "
                                              "in table customers"),
    ('masking.fields.clients.name', 'keep', "masking.fields.clients.name: no table 'clients'; "
                                            "tables: customers, contracts"),
    ('output.format', 'orc', "output.format: 'orc' is not allowed; allowed: parquet"),
    ('deadletter.max_ratio', 2, 'deadletter.max_ratio must be a number between 0 and 1'),
    ('stream.changes', 'projects/p/subscriptions/changes', "stream.changes: a Pub/Sub "
                                                           "subscription is projects/PROJECT/"
                                                           "subscriptions/NAME, got"),
    ('stream.consent', 'projects/seller-cdc/topics/consent', 'stream.consent: a Pub/Sub '
                                                              'subscription is'),
    ('stream.timestamp_attribute', 5, 'stream.timestamp_attribute: must be a non-empty string'),
    ('stream.epoch_seconds', 0, 'stream.epoch_seconds: must be a number of seconds above 0'),
    ('report', {'lang': 'fr'}, "report.lang: 'fr' is not allowed; allowed: en, zh"),
    ('report', {'language': 'zh'}, 'report: unknown key(s) language; allowed: lang'),
    ('key_holders', {}, 'key_holders: name at least one holder'),
    ('key_holders', ['acquirer'], 'key_holders: must be a mapping'),
    ('key_holders.seller compliance office', 'notice', 'key_holders.seller compliance office: '
                                                       'must be a list of key roles; allowed: '
                                                       'pseudonym, token, data.footer'),
    ('key_holders.seller compliance office', ['tokens'], "key_holders.seller compliance office: "
                                                         "'tokens' is not a key role of this "
                                                         "transfer; allowed:"),
    ('key_holders.seller compliance office', ['column.customers.mobil'],
     "'column.customers.mobil' is not a key role of this transfer; allowed: pseudonym, token, "
     "data.footer, data.internal, data.personal, data.sensitive, data.avro, deadletter, notice, "
     "manifest, column.TABLE.FIELD (a field of tables)"),
    ('key_holders.seller compliance office', ['notice', 'notice'], 'a role is listed twice'),
    ('notice', {'path': 'file:///srv/notice'},
     "notice.path: file:// is not supported: give a local path or gs://BUCKET/... (write "
     "'/srv/notice')"),
    ('output.path', 's3://bucket/out', 'output.path: s3:// is not supported'),
    ('masking.fields.customers.mobile', {'method': 'mask', 'keep_first': 2 ** 63},
     'keep_first must be an integer between 0 and 1000000'),
    ('masking.fields.customers.monthly_income', {'method': 'generalize', 'bucket': 10 ** 20},
     'bucket: a positive width up to 9,007,199,254,740,992'),
    ('masking.fields', {'customers': {'mobile': 'drop'}},
     'masking.fields.customers: keys are TABLE.FIELD, e.g. customers.FIELD (written as a '
     'nested map? write each as TABLE.FIELD: METHOD)'),
    ('key_holders.seller compliance office', [{'role': 'notice'}], "notice'}\" is not a key "
                                                                   "role of this transfer"),
])
def test_config_errors(demo_doc, dotted, value, message):
    with pytest.raises(ConfigError) as e:
        parse(change(demo_doc, dotted, value))
    assert message in str(e.value)
    assert str(e.value).startswith('demo.yaml: ')


@pytest.mark.parametrize('written, read', [('utf8', 'utf-8'), ('UTF-8', 'utf-8'), ('GBK', 'gbk'),
                                            ('cp936', 'gbk'), ('utf_8_sig', 'utf-8-sig')])
def test_an_encoding_is_read_under_its_usual_name(demo_doc, written, read):
    assert parse(change(demo_doc, 'tables.customers.encoding', written)).table(
        'customers').encoding == read


@pytest.mark.parametrize('text, message', [
    ('{"type": "record", "name": "t", "fields": [' * 1 + '[' * 100_000 + ']' * 100_000 + ']}',
     'nested too deeply'),
    ('{"type": "record", "name": "t", "x": ' + '9' * 100_000 + '}', 'a number too long'),
])
def test_a_monstrous_schema_is_one_error(text, message):
    with pytest.raises(SchemaError, match=message):
        parse_schema(text, 't.avsc')


def test_missing_default_for_a_level_is_an_error(demo_doc):
    del demo_doc['masking']['defaults']['internal']
    with pytest.raises(ConfigError) as e:
        parse(demo_doc)
    assert "no method for classification 'internal'" in str(e.value)


def test_invalid_yaml_names_the_line():
    with pytest.raises(ConfigError) as e:
        parse_config('transfer: [unclosed\n', 'bad.yaml', ROOT)
    assert str(e.value).startswith('bad.yaml: not valid YAML at line')


def test_missing_config_file(tmp_path):
    with pytest.raises(NovationError) as e:
        load_config(str(tmp_path / 'nope.yaml'))
    assert 'cannot read config' in str(e.value) and 'nope.yaml' in str(e.value)


def test_missing_schema_file(demo_doc):
    demo_doc['tables']['customers']['schema'] = 'schemas/missing.avsc'
    with pytest.raises(NovationError) as e:
        parse(demo_doc)
    assert 'cannot read schema of table customers' in str(e.value)


def test_the_config_page_lists_every_category_with_its_floor():
    import re
    from schemas import CATEGORIES
    text = open(os.path.join(ROOT, 'docs', 'config.md'), encoding='utf-8').read()
    listed = {}
    for level in LEVELS:
        row = re.search(rf'^\| `{level}` \| (.*) \|$', text, re.M)
        assert row, level
        for category in re.findall(r'`([a-z_]+)`', row.group(1)):
            listed[category] = level
    assert listed == CATEGORIES


@pytest.mark.parametrize('marks, message', [
    ({'quasi_identifier': 'yes'}, '"quasi_identifier" must be true or false'),
    ({'quasi_identifier': True, 'sensitive_attribute': True}, 'not both'),
])
def test_risk_marks_on_fields_are_checked(marks, message):
    schema = {'type': 'record', 'name': 't', 'subject_key': 'id', 'fields': [
        {'name': 'id', 'type': 'string', 'classification': 'personal', **marks}]}
    with pytest.raises(SchemaError, match=message):
        parse_schema(json.dumps(schema), 't.avsc')


def test_quasi_identifiers_need_a_subject_key_that_joins(demo_doc):
    doc = change(demo_doc, 'masking.fields.customers.customer_id', 'redact')
    with pytest.raises(ConfigError, match='subject key of a table with quasi-identifiers'):
        parse(doc)
