"""Masking operators: pure functions over Arrow arrays, chosen by name from a registry.

Each operator is built once from its policy parameters (and checked then, so a bad policy fails
before any data is read), then applied batch by batch. Keyed operators get their keys through a
``KeyedOps`` object (see ``transforms.keys.crypto``); nothing here imports Beam.

Methods: ``keep``, ``drop``, ``redact``, ``mask``, ``hash``, ``tokenize``, ``generalize``,
``date_shift``, ``encrypt``, ``scrub``. No per-record random salts: determinism is what keeps joins
intact.
"""

import dataclasses
import math
import re
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from schemas import FieldSpec
from transforms.common.errors import ConfigError

__all__ = ['METHODS', 'OPERATORS', 'MaskContext', 'Operator', 'make_operator', 'methods_table',
           'string_form', 'year_or_month']

_TEXT_KINDS = ('string', 'enum')
_NUMBER_KINDS = ('int', 'long', 'float', 'double', 'decimal')
_TIME_KINDS = ('date', 'timestamp')


# Bounds that keep the arithmetic in Arrow's 64-bit integers: no export holds a value longer
# than MAX_CHARACTERS to reveal, and a bucket wider than MAX_BUCKET (2^53, where doubles stop
# counting every integer) generalizes nothing.
MAX_CHARACTERS = 1_000_000
MAX_BUCKET = float(2 ** 53)


@dataclasses.dataclass
class MaskContext:
    """What keyed operators need for one batch: the keys and the rows' subject keys."""
    keyed_ops: object  # transforms.keys.crypto.KeyedOps
    subjects: pa.Array  # subject key of every row, as strings


class Operator:
    """Base class: ``params`` are the policy's parameters, checked in ``__init__``."""
    name = ''
    params = {}  # allowed parameter -> default
    kinds = None  # field kinds this operator applies to (None: any)
    keyed = False  # needs KeyedOps

    def __init__(self, field: FieldSpec, where: str, **params):
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ConfigError(f'{where}: unknown parameter(s) {", ".join(unknown)} for method '
                              f'{self.name!r}; allowed: {", ".join(self.params) or "none"}')
        if self.kinds is not None and field.kind not in self.kinds:
            raise ConfigError(f'{where}: method {self.name!r} does not apply to field '
                              f'{field.name!r} of type {field.kind}; it applies to '
                              f'{", ".join(self.kinds)}')
        self.field = field
        self.where = where
        for key, default in self.params.items():
            setattr(self, key, params.get(key, default))
        self.check()

    def check(self):
        """Validate parameters; raise ConfigError naming ``self.where``."""

    def output_type(self) -> Optional[pa.DataType]:
        """Type of the delivered column, or None when the column is dropped."""
        return self.field.arrow_type

    def apply(self, values: pa.Array, ctx: MaskContext) -> pa.Array:
        raise NotImplementedError

    def _require_int(self, key, low, high=None):
        value = getattr(self, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low or \
                (high is not None and value > high):
            bound = f'between {low} and {high}' if high is not None else f'>= {low}'
            raise ConfigError(f'{self.where}: {key} must be an integer {bound}, got {value!r}')


class Keep(Operator):
    name = 'keep'

    def apply(self, values, ctx):
        return values


class Encrypt(Operator):
    """Deliver the value unchanged, in a Parquet column under its own key ``column.KEY``: only
    holders of that key read it; holders of the data keys still read every other column."""
    name = 'encrypt'
    params = {'key': None}

    def check(self):
        if not isinstance(self.key, str) or not re.fullmatch(r'[A-Za-z0-9_.-]+', self.key):
            raise ConfigError(f'{self.where}: key must name the column key (letters, digits, '
                              f'".", "_", "-"), got {self.key!r}')

    def apply(self, values, ctx):
        return values


class Drop(Operator):
    name = 'drop'

    def output_type(self):
        return None

    def apply(self, values, ctx):
        raise AssertionError('dropped columns are never applied')


class Redact(Operator):
    """Null, or a constant string (e.g. "[redacted]") where the column must stay non-null."""
    name = 'redact'
    params = {'value': None}

    def check(self):
        if self.value is not None and not isinstance(self.value, str):
            raise ConfigError(f'{self.where}: value must be a string, got {self.value!r}')

    def output_type(self):
        return self.field.arrow_type if self.value is None else pa.string()

    def apply(self, values, ctx):
        if self.value is None:
            return pa.nulls(len(values), type=self.field.arrow_type)
        constant = pa.array([self.value] * len(values), type=pa.string())
        return pc.if_else(pc.is_null(values), pa.scalar(None, pa.string()), constant)


class Mask(Operator):
    """Keep the first/last N characters (Unicode-aware): 张** , 138****5678.

    Values too short to hide anything (length <= keep_first + keep_last) are masked whole.
    """
    name = 'mask'
    params = {'keep_first': 0, 'keep_last': 0, 'char': '*'}
    kinds = _TEXT_KINDS

    def check(self):
        self._require_int('keep_first', 0, MAX_CHARACTERS)
        self._require_int('keep_last', 0, MAX_CHARACTERS)
        if not isinstance(self.char, str) or len(self.char) != 1:
            raise ConfigError(f'{self.where}: char must be one character, got {self.char!r}')

    def output_type(self):
        return pa.string()

    def apply(self, values, ctx):
        return mask_text(values, self.keep_first, self.keep_last, self.char)


def mask_text(values: pa.Array, keep_first: int, keep_last: int, char: str = '*') -> pa.Array:
    values = values.cast(pa.string())
    length = pc.utf8_length(values)
    reveal = pc.greater(length, keep_first + keep_last)
    empty = pa.scalar('', pa.string())
    head = pc.if_else(reveal, pc.utf8_slice_codeunits(values, 0, keep_first), empty)
    if keep_last:
        tail = pc.if_else(reveal, pc.utf8_slice_codeunits(values, -keep_last), empty)
    else:
        tail = empty
    hidden = pc.if_else(reveal, pc.subtract(length, keep_first + keep_last), length)
    stars = pc.binary_repeat(pa.scalar(char, pa.string()), hidden)
    return pc.binary_join_element_wise(head, stars, tail, '')


class _Keyed(Operator):
    keyed = True
    params = {'domain': None}

    def check(self):
        if self.domain is None:
            # Fields of the same category share a domain, so e.g. contracts.customer_id and
            # customers.customer_id give the same pseudonym and still join.
            self.domain = self.field.category or self.field.name
        if not isinstance(self.domain, str) or not self.domain:
            raise ConfigError(f'{self.where}: domain must be a non-empty string')

    def output_type(self):
        return pa.string()

    def apply(self, values, ctx):
        return map_unique(values, lambda distinct: self._compute(ctx.keyed_ops, distinct))


class Hash(_Keyed):
    """HMAC-SHA256 pseudonym (128 bits, hex), keyed and domain-separated. One-way."""
    name = 'hash'

    def _compute(self, ops, distinct):
        return ops.pseudonyms(self.domain, distinct)


class Tokenize(_Keyed):
    """AES-SIV deterministic encryption (base64url): reversible by the token key holder only."""
    name = 'tokenize'

    def _compute(self, ops, distinct):
        return ops.tokens(self.domain, distinct)


class Generalize(Operator):
    """Coarsen a value: date -> year or month, number -> bucket, text -> prefix."""
    name = 'generalize'
    params = {'to': None, 'bucket': None, 'prefix': None}
    kinds = _TIME_KINDS + _NUMBER_KINDS + _TEXT_KINDS

    def check(self):
        kind = self.field.kind
        if kind in _TIME_KINDS:
            if self.to not in ('year', 'month'):
                raise ConfigError(f'{self.where}: generalize on a {kind} needs to: year|month, '
                                  f'got {self.to!r}')
        elif kind in _NUMBER_KINDS:
            if not isinstance(self.bucket, (int, float)) or isinstance(self.bucket, bool) or \
                    not math.isfinite(self.bucket) or not 0 < self.bucket <= MAX_BUCKET:
                raise ConfigError(f'{self.where}: generalize on a number needs bucket: a '
                                  f'positive width up to {MAX_BUCKET:,.0f}, got {self.bucket!r}')
        else:
            self._require_int('prefix', 1, MAX_CHARACTERS)

    def output_type(self):
        return pa.string()

    def apply(self, values, ctx):
        kind = self.field.kind
        if kind in _TIME_KINDS:
            return year_or_month(values, self.to)
        if kind in _NUMBER_KINDS:
            return bucket_labels(values, self.bucket)
        return pc.utf8_slice_codeunits(values.cast(pa.string()), 0, self.prefix)


def year_or_month(values: pa.Array, to: str) -> pa.Array:
    """Each date or timestamp as 'YYYY' (``to='year'``) or 'YYYY-MM', in its own time zone,
    as strftime prints it; about ten times faster than Arrow's strftime."""
    year = pc.utf8_lpad(pc.year(values).cast(pa.string()), 4, '0')
    if to == 'year':
        return year
    return pc.binary_join_element_wise(
        year, pc.utf8_lpad(pc.month(values).cast(pa.string()), 2, '0'), '-')


def bucket_labels(values: pa.Array, width) -> pa.Array:
    """Label each number with its bucket, e.g. 7300 with width 5000 -> "[5000,10000)"."""
    lower = pc.multiply(pc.floor(pc.divide(values.cast(pa.float64()), float(width))),
                        float(width))
    upper = pc.add(lower, float(width))
    as_text = (lambda a: a.cast(pa.int64()).cast(pa.string())) if float(width).is_integer() \
        else (lambda a: a.cast(pa.string()))
    return pc.binary_join_element_wise('[', as_text(lower), ',', as_text(upper), ')', '')


class DateShift(Operator):
    """Shift dates by a constant, non-zero number of days per customer (keyed by subject)."""
    name = 'date_shift'
    params = {'max_days': 30}
    kinds = _TIME_KINDS
    keyed = True

    def check(self):
        self._require_int('max_days', 1, 3650)

    def apply(self, values, ctx):
        days = map_unique(ctx.subjects,
                          lambda distinct: ctx.keyed_ops.day_shifts(distinct, self.max_days))
        days = pc.if_else(pc.is_null(values), pa.scalar(None, pa.int32()), days)
        if self.field.kind == 'date':
            return pc.add(values.cast(pa.int32()), days).cast(pa.date32())
        micros = pc.multiply(days.cast(pa.int64()), 86_400_000_000)
        return pc.add(values.cast(pa.int64()), micros).cast(values.type)


class Scrub(Operator):
    """Free text (remarks, call notes) with the identifiers found in it replaced; the rest of
    the text is kept. ``replace: mask`` writes a ``*`` for each of their characters;
    ``replace: pseudonym`` writes ``[KIND:PSEUDONYM]``, the keyed pseudonym of the identifier
    in the domain of its kind, so a mobile number in a note has the pseudonym a hashed
    ``cn_mobile`` column gives it. ``find`` limits the kinds looked for (default: all)."""
    name = 'scrub'
    params = {'replace': 'mask', 'find': None}
    kinds = _TEXT_KINDS
    keyed = True

    def check(self):
        from transforms.detect.detectors import KINDS
        if self.replace not in ('mask', 'pseudonym'):
            raise ConfigError(f'{self.where}: replace must be mask or pseudonym, got '
                              f'{self.replace!r}')
        if self.find is None:
            self.find = list(KINDS)
        if not isinstance(self.find, list) or not self.find or \
                any(k not in KINDS for k in self.find):
            raise ConfigError(f'{self.where}: find must be a list of identifier kinds, from '
                              f'{", ".join(KINDS)}; got {self.find!r}')

    def output_type(self):
        return pa.string()

    def apply(self, values, ctx):
        from transforms.detect.detectors import scan
        values = values.cast(pa.string())
        findings = scan(values, self.find)
        if not findings:
            return values
        labels = {}
        if self.replace == 'pseudonym':
            for kind in {f.kind for f in findings}:
                distinct = sorted({f.value for f in findings if f.kind == kind})
                labels.update(zip(((kind, v) for v in distinct), ctx.keyed_ops.pseudonyms(
                    kind, pa.array(distinct, pa.string())).to_pylist()))
        texts = values.to_pylist()
        by_row = {}
        for f in findings:
            by_row.setdefault(f.row, []).append(f)
        for row, found in by_row.items():
            text, parts, at = texts[row], [], 0
            for f in found:
                parts.append(text[at:f.start])
                parts.append('*' * (f.end - f.start) if self.replace == 'mask' else
                             f'[{f.kind}:{labels[f.kind, f.value]}]')
                at = f.end
            texts[row] = ''.join(parts) + text[at:]
        return pa.array(texts, pa.string())


OPERATORS = {op.name: op for op in
             (Keep, Drop, Redact, Mask, Hash, Tokenize, Generalize, DateShift, Encrypt, Scrub)}

# What each method takes and gives, as docs/config.md's table shows them (a test keeps the
# two equal): method -> (parameters, result).
METHODS = {
    'keep': ('',
        'the value (not allowed for `sensitive`)'),
    'drop': ('',
        'the column is not delivered (the only method for `restricted`)'),
    'redact': ('`value` (optional)',
        'null, or the constant `value`'),
    'mask': ('`keep_first`, `keep_last`, `char` (`*`)',
        'Unicode-aware: `张**`, `138****5678`; values too short to hide anything are masked '
        'whole'),
    'hash': ("`domain` (default: the field's category, else its name)",
        'HMAC-SHA256 pseudonym, 128 bits hex; same value + key + domain gives the same '
        'pseudonym in every table and run, so joins survive. One-way.'),
    'tokenize': ('`domain`',
        'AES-SIV deterministic encryption (base64url), reversible only with the `token` '
        'key. Not semantically secure: equal values give equal tokens, by design.'),
    'generalize': ('`to: year\\|month` (dates), `bucket: WIDTH` (numbers), `prefix: N` (text)',
        '`1987`, `1987-05`, `[5000,10000)`, `北京市朝阳区` → first N characters'),
    'date_shift': ('`max_days` (30)',
        'dates moved by a constant non-zero number of days per customer, derived from a '
        'keyed hash of the subject key'),
    'scrub': ('`replace: mask\\|pseudonym` (`mask`), `find: [KIND, ...]` (all kinds)',
        'free text with the identifiers found in it (see '
        '[Detectors](evidence.md#detectors)) replaced: `mask` writes a `*` for each of '
        'their characters, `pseudonym` writes `[cn_mobile:PSEUDONYM]`, the keyed pseudonym '
        'a `hash`ed column of that category gives the same value; the rest of the text is '
        "kept (the demo's collection-call notes)"),
    'encrypt': ('`key` (default `TABLE.FIELD`)',
        'the value in clear, but in a Parquet column under its own key `column.KEY`: only '
        'its holders read it, while holders of the `data.*` keys read every other column '
        "(the demo delivers customers' exact monthly income this way)"),
}


def methods_table() -> str:
    """The methods as the Markdown table of docs/config.md."""
    lines = ['| method | parameters | result |', '|---|---|---|']
    lines += [f'| `{name}` | {params} | {result} |'.replace('|  |', '| |')
              for name, (params, result) in METHODS.items()]
    return '\n'.join(lines)


# Methods never allowed for a classification (sensitive data is never kept in clear;
# restricted data, C3 authentication data, is never transferred).
FORBIDDEN = {
    'sensitive': {'keep'},
    'restricted': set(OPERATORS) - {'drop'},
}


def make_operator(method, field: FieldSpec, where: str, params=None) -> Operator:
    """Build the operator named ``method`` for ``field``; errors name ``where``."""
    if not isinstance(method, str) or method not in OPERATORS:
        raise ConfigError(f'{where}: unknown masking method {method!r:.60}; allowed: '
                          f'{", ".join(OPERATORS)}')
    if method in FORBIDDEN.get(field.classification, ()):
        allowed = sorted(set(OPERATORS) - FORBIDDEN[field.classification])
        raise ConfigError(f'{where}: method {method!r} is not allowed for {field.name!r}, a '
                          f'{field.classification} field; allowed: {", ".join(allowed)}')
    return OPERATORS[method](field, where, **(params or {}))


def string_form(values: pa.Array) -> pa.Array:
    """Canonical text of each value (dates ISO, decimals exact), the input to keyed methods."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    if pa.types.is_timestamp(values.type):
        return pc.strftime(values, format='%Y-%m-%dT%H:%M:%S.%fZ')
    return values.cast(pa.string())


def map_unique(values: pa.Array, compute) -> pa.Array:
    """Apply ``compute`` (an array of distinct non-null values, in their string form, to an
    array of as many results) once per distinct value of the batch; nulls stay null.

    Customer ids repeat across a batch (one customer, many contracts): computing each distinct
    value once and taking the results back keeps keyed work proportional to distinct values.
    """
    encoded = pc.dictionary_encode(string_form(values))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return compute(encoded.dictionary).take(encoded.indices)
