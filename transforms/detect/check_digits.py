"""Check digits of Chinese identifiers and payment cards, one value at a time (pure).

The arithmetic is python-stdnum's (``stdnum.cn.ric``: GB 11643 ISO 7064 MOD 11-2;
``stdnum.cn.uscc``: GB 32100 MOD 31; ``stdnum.luhn``), a well-kept library that is the
reference the detectors' vectorized checks (``transforms.detect.detectors``) are tested
against. Only the check digit and the form are checked here: the detectors add the region,
the birth date and the card issuer.
"""

from stdnum import luhn
from stdnum.cn import ric, uscc

__all__ = ['USCC_ALPHABET', 'is_luhn_valid', 'is_resident_id', 'is_social_credit_code',
           'luhn_check_digit', 'resident_id_check_digit', 'social_credit_check_digit']

USCC_ALPHABET = '0123456789ABCDEFGHJKLMNPQRTUWXY'  # GB 32100: digits and capitals but I O S V Z


def resident_id_check_digit(first17: str) -> str:
    """The check character (0-9 or X) of a resident identity number's first 17 digits."""
    return ric.calc_check_digit(first17 + '0')  # stdnum drops the number's last character


def is_resident_id(value: str) -> bool:
    """True for an 18-character resident ID with a valid check character."""
    return (isinstance(value, str) and len(value) == 18 and value[:17].isdigit()
            and value[:17].isascii() and value[17].upper() == resident_id_check_digit(value[:17]))


def luhn_check_digit(payload: str) -> str:
    return luhn.calc_check_digit(payload)


def is_luhn_valid(value: str) -> bool:
    return (isinstance(value, str) and len(value) >= 2 and value.isascii() and value.isdigit()
            and luhn.is_valid(value))


def social_credit_check_digit(first17: str) -> str:
    return uscc.calc_check_digit(first17)


def is_social_credit_code(value: str) -> bool:
    """GB 32100-2015 unified social credit code (18 characters, MOD 31 check)."""
    return (isinstance(value, str) and len(value) == 18
            and all(c in USCC_ALPHABET for c in value)
            and social_credit_check_digit(value[:17]) == value[17])
