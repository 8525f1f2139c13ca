"""A labelled corpus for the identifier detectors, generated from a seed.

Each sample is a text and the identifiers it holds, as (kind, canonical value). The
identifiers are made here with their own checksum code (not the detectors'), then placed: alone,
inside Chinese sentences, in full-width digits, grouped with separators. The negatives are the
hard cases: a wrong check digit, an impossible birth date, an unknown issuer, and identifiers
with a digit or letter next to them, which make them part of a longer number.
"""

import datetime
import random

__all__ = ['corpus', 'make']

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_REGIONS = ('110101', '110105', '310104', '310115', '440106', '440305', '330106', '320102',
            '510107', '420106', '370202', '210102', '350203', '500103', '610113', '650102')
_USCC = '0123456789ABCDEFGHJKLMNPQRTUWXY'
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_PLATE_LETTERS = 'ABCDEFGHJKLMNPQRSTUVWXYZ'
_PROVINCES = '京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼'
_SENTENCES = ('客户{}已核实', '请联系{}，谢谢', '备注：{}。', '{}', '联系方式:{} 催收员王某',
              '客户说明其号码为{}并要求回电', 'ID {} ok', '（{}）')
_FULL = {c: chr(ord(c) + 0xFEE0) for c in '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ@.'}


def _id_check(first17: str) -> str:
    return '10X98765432'[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS)) % 11]


def resident_id(rng, valid=True) -> str:
    born = datetime.date(1940, 1, 1) + datetime.timedelta(days=rng.randrange(30000))
    first = rng.choice(_REGIONS) + born.strftime('%Y%m%d') + f'{rng.randrange(1000):03d}'
    check = _id_check(first)
    if not valid:
        check = rng.choice([c for c in '0123456789X' if c != check])
    return first + check


def impossible_id(rng) -> str:
    """A correct check digit over an impossible birth date (month 13 or day 32)."""
    first = rng.choice(_REGIONS) + rng.choice(['19871301', '19900532', '20011240'])
    first += f'{rng.randrange(1000):03d}'
    return first + _id_check(first)


def uscc(rng, valid=True) -> str:
    body = rng.choice('159Y') + rng.choice('123') + rng.choice(_REGIONS) + ''.join(
        rng.choice(_USCC) for _ in range(9))
    total = sum(_USCC.index(c) * w for c, w in zip(body, _USCC_WEIGHTS))
    check = _USCC[(31 - total % 31) % 31]
    if not valid:
        check = rng.choice([c for c in _USCC if c != check])
    return body + check


def _luhn_check(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str(-total % 10)


def bank_card(rng, valid=True, prefix=None) -> str:
    prefix = prefix or rng.choice(['62', '6222', '6228', '6217', '4', '51', '6013'])
    length = rng.choice([16, 19]) if prefix.startswith(('62', '60')) or prefix == '4' else 16
    body = prefix + ''.join(str(rng.randrange(10)) for _ in range(length - 1 - len(prefix)))
    check = _luhn_check(body)
    if not valid:
        check = str((int(check) + rng.randrange(1, 10)) % 10)
    return body + check


def mobile(rng) -> str:
    return '1' + rng.choice('3456789') + ''.join(str(rng.randrange(10)) for _ in range(9))


def email(rng) -> str:
    user = ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randrange(3, 9)))
    return f'{user}{rng.choice(["", ".", "_"])}{rng.randrange(100)}@' \
           f'{rng.choice(["example.com", "qq.com", "163.com", "corp.example.cn"])}'


def passport(rng) -> str:
    return rng.choice(['E', 'G']) + f'{rng.randrange(10 ** 8):08d}'


def plate(rng) -> str:
    return rng.choice(_PROVINCES) + rng.choice(_PLATE_LETTERS.replace('I', '').replace(
        'O', '')) + ''.join(rng.choice('0123456789ABCDEFGHJKLMNPQRSTUVWXYZ') for _ in range(5))


_MAKERS = {'cn_resident_id': resident_id, 'cn_uscc': uscc, 'bank_card': bank_card,
           'cn_mobile': mobile, 'email': email, 'cn_passport': passport,
           'cn_vehicle_plate': plate}


def _styled(rng, kind, value):
    """The value as a person would write it: grouped, full-width, or as it is."""
    style = rng.random()
    if kind == 'cn_mobile' and style < 0.2:
        return rng.choice(['+86 ', '+86', '0086-', '']) + value[:3] + '-' + value[3:7] + '-' + \
            value[7:]
    if kind == 'bank_card' and style < 0.2:
        return ' '.join(value[i:i + 4] for i in range(0, len(value), 4))
    if kind == 'cn_vehicle_plate' and style < 0.2:
        return value[:2] + '·' + value[2:]
    if style > 0.85 and kind != 'cn_vehicle_plate':
        return ''.join(_FULL.get(c, c) for c in value)
    return value


def make(rng, kind):
    """One positive sample of ``kind``: (text, {(kind, value)})."""
    value = _MAKERS[kind](rng)
    text = rng.choice(_SENTENCES).format(_styled(rng, kind, value))
    canonical = value.lower() if kind == 'email' else value
    return text, {(kind, canonical)}


def _not_a_card(digits: str) -> str:
    """``digits`` and one digit more that makes them fail Luhn: no longer an ID number, and
    not a bank card either."""
    if not digits.isdigit():  # ends in X: no card either way
        return digits + '7'
    return digits + str((int(_luhn_check(digits)) + 1) % 10)


def _negatives(rng):
    """Texts that hold no identifier, each near one."""
    yield rng.choice(_SENTENCES).format(resident_id(rng, valid=False)), set()
    yield rng.choice(_SENTENCES).format(impossible_id(rng)), set()
    yield rng.choice(_SENTENCES).format(uscc(rng, valid=False)), set()
    yield rng.choice(_SENTENCES).format(bank_card(rng, valid=False)), set()
    yield rng.choice(_SENTENCES).format(bank_card(rng, prefix='7')), set()  # no such issuer
    yield rng.choice(_SENTENCES).format(_not_a_card(resident_id(rng))), set()
    yield rng.choice(_SENTENCES).format(mobile(rng) + str(rng.randrange(10))), set()
    yield rng.choice(_SENTENCES).format(str(rng.randrange(1, 10)) + mobile(rng)), set()
    number = '1' + rng.choice('012') + f'{rng.randrange(10 ** 9):09d}'
    yield rng.choice(_SENTENCES).format(number), set()
    yield rng.choice(_SENTENCES).format('A' + passport(rng)), set()
    amount = f'合同金额{rng.randrange(10 ** 6)}元，期数{rng.randrange(60)}'
    yield rng.choice(_SENTENCES).format(amount), set()


def corpus(n: int = 2000, seed: int = 20261203):
    """``n`` positives of every kind, and ``n`` of each kind of negative, shuffled; a tenth of
    the positives hold two identifiers of different kinds in one text. A twentieth as many
    look-alikes (order numbers shaped like mobiles, references shaped like passports) show
    what the kinds without a checksum cannot tell apart."""
    rng = random.Random(seed)
    samples = []
    for kind in _MAKERS:
        for _ in range(n):
            samples.append(make(rng, kind))
    for _ in range(n):
        samples.extend(_negatives(rng))
    for _ in range(n // 10):
        (a, la), (b, lb) = (make(rng, k) for k in rng.sample(sorted(_MAKERS), 2))
        samples.append((f'{a}，另{b}', la | lb))
    for _ in range(n // 20):  # look-alikes no pattern can tell apart: reported, not hidden
        samples.append((f'订单号{mobile(rng)}', set()))  # an 11-digit order number
        samples.append((f'批次{passport(rng)}', set()))  # a batch reference, E/G + 8 digits
    rng.shuffle(samples)
    return samples


def precision_recall(samples, findings):
    """Per kind: (true positives, false positives, false negatives, precision, recall) of
    ``findings`` (detectors.Finding, by sample index) against the labels."""
    found = {}
    for f in findings:
        found.setdefault(f.row, set()).add((f.kind, f.value))
    out = {}
    for kind in _MAKERS:
        tp = fp = fn = 0
        for i, (_, labels) in enumerate(samples):
            truth = {v for k, v in labels if k == kind}
            got = {v for k, v in found.get(i, ()) if k == kind}
            tp += len(truth & got)
            fp += len(got - truth)
            fn += len(truth - got)
        out[kind] = (tp, fp, fn, tp / (tp + fp) if tp + fp else 1.0,
                     tp / (tp + fn) if tp + fn else 1.0)
    return out
