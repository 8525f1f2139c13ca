import pytest

from transforms.detect.check_digits import (is_luhn_valid, is_resident_id, is_social_credit_code,
                                   luhn_check_digit, resident_id_check_digit)


@pytest.mark.parametrize('value, valid', [
    ('11010519491231002X', True),   # GB 11643 known answer (tests/vectors/README.md)
    ('11010519491231002x', True),
    ('110105194912310021', False),
    ('11010519491231002', False),
    ('1101051949123100XX', False),
    ('', False),
    (None, False),
])
def test_resident_id(value, valid):
    assert is_resident_id(value) is valid


def test_resident_id_check_digit_known_answer():
    assert resident_id_check_digit('11010519491231002') == 'X'


@pytest.mark.parametrize('value, valid', [
    ('4111111111111111', True),
    ('6225885931424543', True),
    ('4111111111111112', False),
    ('79927398713', True),
    ('7992739871a', False),
    ('0', False),
])
def test_luhn(value, valid):
    assert is_luhn_valid(value) is valid


def test_luhn_check_digit():
    assert luhn_check_digit('7992739871') == '3'


@pytest.mark.parametrize('value, valid', [
    ('91110000600037341L', True),   # GB 32100 known answer (tests/vectors/README.md)
    ('91110000600037341M', False),
    ('91110000600037341', False),
    ('9111000060003734IL', False),  # I is not in the alphabet
])
def test_social_credit_code(value, valid):
    assert is_social_credit_code(value) is valid


# The detectors check many candidates at once with numpy; python-stdnum, one at a time, is the
# reference they must agree with. Each candidate below passes every other check of its kind
# (region, birth date, issuer, registering authority), so only the check digit decides.

def _random_ids(rng, n):
    ids = []
    for _ in range(n):
        body = f'110105{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}' \
               f'{rng.randint(0, 999):03d}'
        ids.append(body + rng.choice('0123456789X'))
    return ids


def _random_usccs(rng, n):
    from transforms.detect.check_digits import USCC_ALPHABET
    return ['91' + '110000' + ''.join(rng.choice(USCC_ALPHABET) for _ in range(9))
            + rng.choice(USCC_ALPHABET) for _ in range(n)]


def _random_cards(rng, n):
    return ['622202' + ''.join(rng.choice('0123456789') for _ in range(rng.choice((10, 13))))
            for _ in range(n)]


@pytest.mark.parametrize('kind, make, reference', [
    ('cn_resident_id', _random_ids, lambda v: is_resident_id(v)),
    ('cn_uscc', _random_usccs, lambda v: is_social_credit_code(v)),
    ('bank_card', _random_cards, lambda v: is_luhn_valid(v)),
])
def test_the_vectorized_checks_agree_with_python_stdnum(kind, make, reference):
    import datetime
    import random
    from stdnum import luhn
    from stdnum.cn import ric, uscc
    from transforms.detect.detectors import valid
    rng = random.Random(20261207)
    values = make(rng, 3000)
    ours = valid(kind, values, today=datetime.date(2026, 12, 7)).tolist()
    expected = [reference(v) for v in values]
    assert ours == expected
    stdnum_says = {'cn_resident_id': ric.is_valid, 'cn_uscc': uscc.is_valid,
                   'bank_card': luhn.is_valid}[kind]
    assert expected == [stdnum_says(v) for v in values]
    assert 0.01 < sum(expected) / len(values) < 0.99  # both kinds of answer were tried
