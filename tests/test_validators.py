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
