"""Load and check annotated Avro schemas (pure: no Beam, no data)."""

import dataclasses
import json
from typing import Optional

import pyarrow as pa

from transforms.common.errors import SchemaError

# Classification levels, lowest first (JR/T 0171-2020 C1..C3 plus PIPL's sensitive class).
LEVELS = ('public', 'internal', 'personal', 'sensitive', 'restricted')

# Known categories and the lowest classification each may have. A category classified below its
# floor is a schema error: e.g. an ID number marked `personal` would be masked too weakly.
CATEGORIES = {
    'address': 'personal',
    'amount': 'internal',
    'auth_credential': 'restricted',
    'bank_card': 'sensitive',
    'bank_name': 'personal',
    'birth_date': 'personal',
    'city': 'personal',
    'cn_mobile': 'personal',
    'cn_passport': 'sensitive',
    'cn_resident_id': 'sensitive',
    'cn_uscc': 'personal',  # a sole trader's code identifies a person
    'cn_vehicle_plate': 'personal',
    'contract_id': 'internal',
    'credit_score': 'sensitive',
    'customer_id': 'personal',
    'email': 'personal',
    'employer': 'personal',
    'free_text': 'personal',
    'gender': 'personal',
    'income': 'sensitive',
    'occupation': 'personal',
    'person_name': 'personal',
    'product': 'public',
    'rate': 'internal',
    'status': 'internal',
    'timestamp': 'internal',
    'vehicle_vin': 'personal',
}

_PRIMITIVES = {
    'string': pa.string(),
    'int': pa.int32(),
    'long': pa.int64(),
    'float': pa.float32(),
    'double': pa.float64(),
    'boolean': pa.bool_(),
}


def level_rank(level: str) -> int:
    return LEVELS.index(level)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One classified field: its Avro type reduced to what the pipeline needs."""
    name: str
    kind: str  # string|int|long|float|double|boolean|decimal|date|timestamp|enum
    nullable: bool
    classification: str
    category: Optional[str] = None
    precision: Optional[int] = None
    scale: Optional[int] = None
    symbols: tuple = ()
    doc: str = ''
    aliases: tuple = ()  # other column names the seller's exports use (e.g. 证件号码)
    # re-identification risk: a field that, with others, may single a customer out (birth
    # year, gender, city), and one whose values must be diverse within each class (l-diversity)
    quasi_identifier: bool = False
    sensitive_attribute: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        if self.kind == 'decimal':
            return pa.decimal128(self.precision, self.scale)
        if self.kind == 'date':
            return pa.date32()
        if self.kind == 'timestamp':
            return pa.timestamp('us', tz='UTC')
        if self.kind == 'enum':
            return pa.string()
        return _PRIMITIVES[self.kind]


@dataclasses.dataclass(frozen=True)
class TableSchema:
    name: str
    subject_key: str
    fields: tuple  # of FieldSpec, in schema order
    source: str  # file the schema came from, for messages
    primary_key: Optional[str] = None  # a field that must be unique in the table

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> tuple:
        return tuple(f.name for f in self.fields)

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(f.name, f.arrow_type, nullable=f.nullable)
                          for f in self.fields])


def parse_schema(text: str, source: str) -> TableSchema:
    """Parse one annotated Avro record schema; ``source`` names it in error messages."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(f'{source}: not valid JSON (line {e.lineno}, column {e.colno})') from None
    except RecursionError:
        raise SchemaError(f'{source}: nested too deeply to be a table\'s schema') from None
    except ValueError:  # an integer of thousands of digits (Python's limit on converting them)
        raise SchemaError(f'{source}: holds a number too long to be read') from None
    if not isinstance(doc, dict) or doc.get('type') != 'record':
        raise SchemaError(f'{source}: the top level must be an Avro record ("type": "record")')
    if doc.get('draft'):
        raise SchemaError(f'{source}: is a draft (from novation classify): confirm every field, '
                          f'the subject key and any primary key, then remove "draft": true')
    name = doc.get('name')
    if not isinstance(name, str) or not name:
        raise SchemaError(f'{source}: the record has no "name"')
    raw_fields = doc.get('fields')
    if not isinstance(raw_fields, list) or not raw_fields:
        raise SchemaError(f'{source}: record {name!r} has no "fields"')
    fields = []
    seen = set()
    names = {}
    for i, raw in enumerate(raw_fields):
        spec = _parse_field(raw, source, i)
        if spec.name in seen:
            raise SchemaError(f'{source}: field {spec.name!r} is declared twice')
        seen.add(spec.name)
        for column in (spec.name,) + spec.aliases:
            if names.setdefault(column, spec.name) != spec.name:
                raise SchemaError(f'{source}: column name {column!r} is used by fields '
                                  f'{names[column]!r} and {spec.name!r}')
        fields.append(spec)
    subject_key = doc.get('subject_key')
    if not isinstance(subject_key, str) or subject_key not in seen:
        raise SchemaError(
            f'{source}: "subject_key" must name one of the fields '
            f'({", ".join(sorted(seen))}); got {subject_key!r}')
    primary_key = doc.get('primary_key')
    if primary_key is not None:
        if not isinstance(primary_key, str) or primary_key not in seen:
            raise SchemaError(f'{source}: "primary_key" must name one of the fields '
                              f'({", ".join(sorted(seen))}); got {primary_key!r}')
        if next(f for f in fields if f.name == primary_key).nullable:
            raise SchemaError(f'{source}: primary key {primary_key!r} must not be nullable')
    return TableSchema(name=name, subject_key=subject_key, fields=tuple(fields), source=source,
                       primary_key=primary_key)


def load_schema(path: str) -> TableSchema:
    from transforms.common.files import read_text
    return parse_schema(read_text(path, what='schema'), path)


def _parse_field(raw, source: str, index: int) -> FieldSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get('name'), str):
        raise SchemaError(f'{source}: fields[{index}] needs a "name"')
    name = raw['name']
    where = f'{source}: field {name!r}'
    level = raw.get('classification')
    if level is None:
        raise SchemaError(
            f'{where} has no "classification"; every field must be classified as one of '
            f'{", ".join(LEVELS)}')
    if level not in LEVELS:
        raise SchemaError(
            f'{where}: classification {level!r} is not a level; allowed: {", ".join(LEVELS)}')
    category = raw.get('category')
    if category is not None:
        if not isinstance(category, str) or category not in CATEGORIES:
            raise SchemaError(
                f'{where}: category {category!r:.60} is unknown; allowed: '
                f'{", ".join(sorted(CATEGORIES))}')
        floor = CATEGORIES[category]
        if level_rank(level) < level_rank(floor):
            raise SchemaError(
                f'{where}: category {category!r} must be classified {floor!r} or higher, '
                f'not {level!r}')
    nullable, avro_type = _unwrap_nullable(raw.get('type'), where)
    kind, extra = _kind_of(avro_type, where)
    aliases = raw.get('aliases', [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise SchemaError(f'{where}: "aliases" must be a list of column names')
    marks = {}
    for mark in ('quasi_identifier', 'sensitive_attribute'):
        value = raw.get(mark, False)
        if not isinstance(value, bool):
            raise SchemaError(f'{where}: "{mark}" must be true or false, got {value!r}')
        marks[mark] = value
    if marks['quasi_identifier'] and marks['sensitive_attribute']:
        raise SchemaError(f'{where}: a field is a quasi_identifier or a sensitive_attribute, '
                          f'not both')
    return FieldSpec(name=name, kind=kind, nullable=nullable, classification=level,
                     category=category, doc=raw.get('doc', ''), aliases=tuple(aliases),
                     **marks, **extra)


def _unwrap_nullable(avro_type, where):
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != 'null']
        if len(branches) != 1 or len(avro_type) != 2:
            raise SchemaError(f'{where}: only ["null", T] unions are supported, got {avro_type}')
        return True, branches[0]
    return False, avro_type


def _kind_of(avro_type, where):
    if isinstance(avro_type, str):
        if avro_type in _PRIMITIVES:
            return avro_type, {}
        raise SchemaError(f'{where}: type {avro_type!r} is not supported; allowed: '
                          f'{", ".join(_PRIMITIVES)}, decimal, date, timestamp-millis, '
                          f'timestamp-micros, enum')
    if not isinstance(avro_type, dict):
        raise SchemaError(f'{where}: type {avro_type!r} is not an Avro type')
    logical = avro_type.get('logicalType')
    base = avro_type.get('type')
    if logical == 'decimal' and base in ('bytes', 'fixed'):
        precision, scale = avro_type.get('precision'), avro_type.get('scale', 0)
        if not isinstance(precision, int) or not 0 < precision <= 38 or \
                not isinstance(scale, int) or not 0 <= scale <= precision:
            raise SchemaError(f'{where}: decimal needs 0 < precision <= 38 and '
                              f'0 <= scale <= precision')
        return 'decimal', {'precision': precision, 'scale': scale}
    if logical == 'date' and base == 'int':
        return 'date', {}
    if logical in ('timestamp-millis', 'timestamp-micros') and base == 'long':
        return 'timestamp', {}
    if base == 'enum':
        symbols = avro_type.get('symbols')
        if not isinstance(symbols, list) or not symbols:
            raise SchemaError(f'{where}: enum needs "symbols"')
        return 'enum', {'symbols': tuple(symbols)}
    raise SchemaError(f'{where}: type {json.dumps(avro_type, ensure_ascii=False)} is not '
                      f'supported')
