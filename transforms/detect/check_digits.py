"""Check-digit validators for Chinese identifiers and payment cards (pure)."""

__all__ = ['is_luhn_valid', 'is_resident_id', 'is_social_credit_code', 'luhn_check_digit',
           'resident_id_check_digit']

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = '10X98765432'
_USCC_ALPHABET = '0123456789ABCDEFGHJKLMNPQRTUWXY'
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def resident_id_check_digit(first17: str) -> str:
    """GB 11643-1999 ISO 7064 MOD 11-2 check character of a resident identity number."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS)) % 11]


def is_resident_id(value: str) -> bool:
    """True for an 18-character resident ID with a valid check character."""
    return (isinstance(value, str) and len(value) == 18 and value[:17].isdigit()
            and value[17].upper() == resident_id_check_digit(value[:17]))


def luhn_check_digit(payload: str) -> str:
    total = 0
    for i, c in enumerate(reversed(payload)):
        d = int(c) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def is_luhn_valid(value: str) -> bool:
    return (isinstance(value, str) and len(value) >= 2 and value.isdigit()
            and luhn_check_digit(value[:-1]) == value[-1])


def is_social_credit_code(value: str) -> bool:
    """GB 32100-2015 unified social credit code (18 characters, MOD 31 check)."""
    if not isinstance(value, str) or len(value) != 18 or \
            any(c not in _USCC_ALPHABET for c in value):
        return False
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(value[:17], _USCC_WEIGHTS))
    return _USCC_ALPHABET[(31 - total % 31) % 31] == value[17]
