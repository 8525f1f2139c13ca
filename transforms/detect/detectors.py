"""Detectors for mainland-China identifiers and contact data (pure: no Beam, no keys).

Kinds, named as the schema categories they belong to:

- ``cn_resident_id``: resident identity card number, GB 11643-1999: 6-digit region (its
  province checked), 8-digit birth date (a real date, 1900 to today), 3-digit sequence and the
  ISO 7064 MOD 11-2 check character (0-9 or X).
- ``cn_uscc``: unified social credit code, GB 32100-2015: 18 characters of the code's alphabet
  (digits and capitals but I, O, S, V, Z), a 6-digit region and the MOD 31 check character.
- ``bank_card``: 16-19 digits, optionally grouped by four, passing Luhn, with a known issuer
  prefix (UnionPay 62 and 60, Visa 4, Mastercard 51-55 and 2221-2720, JCB 35).
- ``cn_mobile``: 11 digits starting 13-19, optionally +86/0086/86 and 3-4-4 grouped.
- ``email``, ``cn_passport`` (E or G and 8 digits, E + letter + 7 digits, DE/SE/PE + 7 digits),
  ``cn_vehicle_plate`` (province character, letter, 5 characters, or a new-energy plate).

Full-width forms (``１３８``, ``＠``) are read as their ASCII forms, and identifiers are
delimited by "not a letter or digit next to it" rather than ``\\b``: in Python's ``re`` a Chinese
character is a word character, so ``\\b`` finds no boundary in ``手机13812345678``.

``scan`` works on whole Arrow columns: Arrow's regex engine keeps only the values that may hold
an identifier, candidates are found in those values alone, and each kind's candidates are
validated together with numpy. Checksum kinds only count when their checksum holds.
"""

import dataclasses
import datetime
import re
from typing import List, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.detect.check_digits import USCC_ALPHABET

__all__ = ['CHECKSUM_KINDS', 'KINDS', 'Finding', 'canonical', 'count_by_kind', 'find',
           'normalize_width', 'scan', 'valid']

KINDS = ('cn_resident_id', 'cn_uscc', 'bank_card', 'cn_mobile', 'email', 'cn_passport',
         'cn_vehicle_plate')
CHECKSUM_KINDS = ('cn_resident_id', 'cn_uscc', 'bank_card')

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space, one character for one, so a
# finding's position in the normalized text is its position in the original.
_WIDTH = {**{0xFF01 + i: 0x21 + i for i in range(94)}, 0x3000: 0x20}

_PROVINCES = '京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼'
_PLATE_LETTER = 'A-HJ-NP-Z'
_USCC_ALPHABET = USCC_ALPHABET
_NA = r'(?<![0-9A-Za-z])'  # not after a letter or digit
_NZ = r'(?![0-9A-Za-z])'   # not before one
_PATTERNS = {
    'cn_resident_id': rf'{_NA}\d{{17}}[\dXx]{_NZ}',
    'cn_uscc': rf'{_NA}[0-9A-HJ-NPQRTUWXY]{{2}}\d{{6}}[0-9A-HJ-NPQRTUWXY]{{10}}{_NZ}',
    'bank_card': r'(?<![0-9A-Za-z])(?:\d{16,19}|\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{4}'
                 r'(?:(?P=sep)\d{1,3})?)(?![0-9A-Za-z])',
    'cn_mobile': r'(?<![0-9A-Za-z+])(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}'
                 r'(?![0-9A-Za-z])',
    'email': r'(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9]'
             r'(?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}'
             r'[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])',
    'cn_passport': rf'{_NA}(?:[EG]\d{{8}}|E[{_PLATE_LETTER}]\d{{7}}|[DSP]E\d{{7}}){_NZ}',
    'cn_vehicle_plate': rf'[{_PROVINCES}][{_PLATE_LETTER}][·•]?(?:[DF][{_PLATE_LETTER}0-9]\d{{4}}'
                        rf'|\d{{5}}[DF]|[{_PLATE_LETTER}0-9]{{5}}[挂学警港澳]?){_NZ}',
}
_COMPILED = {kind: re.compile(p) for kind, p in _PATTERNS.items()}
# What every candidate contains (a superset, in Arrow's RE2 syntax, after NFKC): a run of three
# digits, an @, or a plate's province character.
_MAY_HOLD = f'[0-9]{{3}}|@|[{_PROVINCES}]'
# When two candidates overlap, the first kind here wins: an 18-digit ID number that happens to
# pass Luhn is an ID number, not a bank card.
_PRIORITY = {kind: i for i, kind in enumerate(KINDS)}


@dataclasses.dataclass(frozen=True)
class Finding:
    row: int
    kind: str
    start: int  # in characters of the original text
    end: int
    value: str  # canonical form: ASCII, separators and country code removed, capitals


def normalize_width(text: str) -> str:
    return text.translate(_WIDTH)


def canonical(kind: str, text: str) -> str:
    """The identifier as its column would hold it: 138-1234-5678 -> 13812345678."""
    text = normalize_width(text)
    if kind in ('bank_card', 'cn_mobile'):
        text = re.sub(r'[ -]', '', text)
        if kind == 'cn_mobile':
            text = text[-11:]
        return text
    if kind == 'email':
        return text.lower()
    if kind == 'cn_vehicle_plate':
        return text.replace('·', '').replace('•', '')
    return text.upper()


# ---- validation, vectorized over many candidates of one kind ----

def _digit_matrix(values: Sequence[str], width: int) -> np.ndarray:
    """Candidates (ASCII, ``width`` characters each) as a (n, width) array of byte codes."""
    return np.frombuffer(''.join(values).encode('ascii'), dtype=np.uint8).reshape(-1, width)


_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
_ID_CHECK = np.frombuffer(b'10X98765432', dtype=np.uint8)
_PROVINCE_CODES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44,
                   45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91}
_PROVINCE_TABLE = np.zeros(100, dtype=bool)
_PROVINCE_TABLE[list(_PROVINCE_CODES)] = True
_MONTH_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _resident_ids(values, today) -> np.ndarray:
    codes = _digit_matrix(values, 18)
    digits = codes[:, :17].astype(np.int64) - 48
    check_ok = _ID_CHECK[(digits @ _ID_WEIGHTS) % 11] == codes[:, 17]
    province_ok = _PROVINCE_TABLE[digits[:, 0] * 10 + digits[:, 1]]
    year = digits[:, 6:10] @ np.array([1000, 100, 10, 1])
    month = digits[:, 10] * 10 + digits[:, 11]
    day = digits[:, 12] * 10 + digits[:, 13]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    days = np.where(month_ok, _MONTH_DAYS[np.clip(month, 0, 12)], 0)
    days = np.where((month == 2) & ~leap, 28, days)
    date_ok = month_ok & (day >= 1) & (day <= days) & (year >= 1900)
    ordinal = year * 10000 + month * 100 + day
    not_future = ordinal <= today.year * 10000 + today.month * 100 + today.day
    return check_ok & province_ok & date_ok & not_future


_USCC_VALUE = np.full(256, -1, dtype=np.int64)
_USCC_VALUE[np.frombuffer(_USCC_ALPHABET.encode(), dtype=np.uint8)] = np.arange(31)
_USCC_WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28])


_USCC_AUTHORITY = np.zeros(256, dtype=bool)  # the registering authority (GB 32100 table 1)
_USCC_AUTHORITY[np.frombuffer(b'123456789ANY', dtype=np.uint8)] = True
_USCC_TYPE = np.zeros(256, dtype=bool)  # the kind of organisation under that authority
_USCC_TYPE[np.frombuffer(b'12345679', dtype=np.uint8)] = True
_USCC_PROVINCE = _PROVINCE_TABLE.copy()
_USCC_PROVINCE[10] = True  # 10xxxx: registered by a central authority


def _usccs(values) -> np.ndarray:
    codes = _digit_matrix(values, 18)
    values_ = _USCC_VALUE[codes]
    expected = (31 - (values_[:, :17] @ _USCC_WEIGHTS) % 31) % 31
    province = (codes[:, 2].astype(np.int64) - 48) * 10 + codes[:, 3] - 48
    return (values_.min(axis=1) >= 0) & (expected == values_[:, 17]) & \
        _USCC_AUTHORITY[codes[:, 0]] & _USCC_TYPE[codes[:, 1]] & _USCC_PROVINCE[province]


_LUHN_DOUBLE = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9])


def _bank_cards(values) -> np.ndarray:
    lengths = np.array([len(v) for v in values])
    padded = [v.rjust(19, '0') for v in values]  # leading zeros leave Luhn's sum unchanged
    digits = _digit_matrix(padded, 19).astype(np.int64) - 48
    doubled = digits.copy()
    doubled[:, 17::-2] = _LUHN_DOUBLE[digits[:, 17::-2]]  # every second digit from the right
    luhn_ok = doubled.sum(axis=1) % 10 == 0
    prefix_ok = np.array([_issuer_known(v, n) for v, n in zip(values, lengths)], dtype=bool)
    return luhn_ok & prefix_ok


def _issuer_known(card: str, length: int) -> bool:
    if card.startswith(('62', '60')):  # UnionPay, and 60xx domestic cards (e.g. 6013)
        return True
    if card.startswith('4'):
        return length in (16, 19)
    if card.startswith('35'):
        return 3528 <= int(card[:4]) <= 3589
    if length == 16:
        return '51' <= card[:2] <= '55' or 2221 <= int(card[:4]) <= 2720
    return False


def valid(kind: str, values: Sequence[str], today: datetime.date = None) -> np.ndarray:
    """Which canonical candidates of ``kind`` are valid (checksums, dates, issuers)."""
    if not len(values):
        return np.zeros(0, dtype=bool)
    if kind == 'cn_resident_id':
        return _resident_ids(values, today or datetime.date.today())
    if kind == 'cn_uscc':
        return _usccs(values)
    if kind == 'bank_card':
        return _bank_cards(values)
    return np.ones(len(values), dtype=bool)


# ---- finding ----

def _candidates(rows: Sequence[int], texts: Sequence[str], kinds) -> List[Finding]:
    found = []
    for row, text in zip(rows, texts):
        normal = normalize_width(text)
        for kind in kinds:
            for m in _COMPILED[kind].finditer(normal):
                found.append(Finding(row, kind, m.start(), m.end(),
                                     canonical(kind, m.group(0))))
    return found


def _resolve(findings: List[Finding]) -> List[Finding]:
    """Valid findings without overlaps: per row, by position, the higher-priority kind wins."""
    kept = []
    by_row = {}
    for f in findings:
        by_row.setdefault(f.row, []).append(f)
    for row in sorted(by_row):
        taken = []
        for f in sorted(by_row[row], key=lambda f: (_PRIORITY[f.kind], f.start)):
            if all(f.end <= t.start or f.start >= t.end for t in taken):
                taken.append(f)
        kept.extend(sorted(taken, key=lambda f: f.start))
    return kept


def scan(values, kinds: Sequence[str] = KINDS, today: datetime.date = None) -> List[Finding]:
    """Every valid identifier in an Arrow array (or list) of texts, by row and position."""
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(values, pa.string())
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    may_hold = pc.match_substring_regex(pc.utf8_normalize(values, 'NFKC'), _MAY_HOLD)
    rows = np.flatnonzero(pc.fill_null(may_hold, False).to_numpy(zero_copy_only=False))
    if not len(rows):
        return []
    texts = pc.take(values, pa.array(rows)).to_pylist()
    candidates = _candidates(rows.tolist(), texts, kinds)
    checked = []
    for kind in kinds:
        of_kind = [c for c in candidates if c.kind == kind]
        ok = valid(kind, [c.value for c in of_kind], today)
        checked.extend(c for c, good in zip(of_kind, ok) if good)
    return _resolve(checked)


def find(text: str, kinds: Sequence[str] = KINDS, today: datetime.date = None) -> List[Finding]:
    """The valid identifiers in one text."""
    return scan([text], kinds, today)


def count_by_kind(values, kinds: Sequence[str] = KINDS) -> dict:
    """kind -> (findings, values holding at least one) in an array of texts."""
    found, rows = {}, {}
    for f in scan(values, kinds):
        found[f.kind] = found.get(f.kind, 0) + 1
        rows.setdefault(f.kind, set()).add(f.row)
    return {kind: (n, len(rows[kind])) for kind, n in found.items()}
