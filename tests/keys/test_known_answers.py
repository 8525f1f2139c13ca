"""Known answers for every primitive Novation's keys use, run in CI.

Wycheproof vectors (tests/vectors/wycheproof, Apache-2.0) drive Tink's own primitives with raw keys:
AES-GCM (Parquet master keys), AES-SIV (``tokenize``), HMAC-SHA256 (``hash``, ``date_shift``).
Valid cases must round-trip; invalid ones must be rejected. Only the parameter sets Tink
supports are used (AES-GCM: 128/256-bit keys, 96-bit IVs; AES-SIV: 512-bit keys).
"""

import json
import os

import google_crc32c
import pytest
import tink
from tink import aead, daead, prf, secret_key_access
from tink.proto import aes_gcm_pb2, aes_siv_pb2, common_pb2, hmac_prf_pb2, tink_pb2

from tests.conftest import ROOT

aead.register()
daead.register()
prf.register()

WYCHEPROOF = os.path.join(ROOT, 'tests', 'vectors', 'wycheproof')


def vectors(name, keep):
    with open(os.path.join(WYCHEPROOF, name), encoding='utf-8') as f:
        doc = json.load(f)
    cases = [(group, case) for group in doc['testGroups'] if keep(group)
             for case in group['tests'] if case['result'] in ('valid', 'invalid')]
    assert cases, name
    return [pytest.param(g, c, id=str(c['tcId'])) for g, c in cases]


def raw_primitive(key_type, key_proto, primitive):
    """A Tink primitive over one raw key (no Tink output prefix), as the vectors need."""
    keyset = tink_pb2.Keyset(primary_key_id=1, key=[tink_pb2.Keyset.Key(
        key_data=tink_pb2.KeyData(type_url=f'type.googleapis.com/google.crypto.tink.{key_type}',
                                  value=key_proto.SerializeToString(),
                                  key_material_type=tink_pb2.KeyData.SYMMETRIC),
        status=tink_pb2.ENABLED, key_id=1, output_prefix_type=tink_pb2.RAW)])
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(primitive)


@pytest.mark.parametrize('group, case', vectors(
    'aes_gcm_test.json', lambda g: g['keySize'] in (128, 256) and g['ivSize'] == 96))
def test_aes_gcm(group, case):
    cipher = raw_primitive('AesGcmKey', aes_gcm_pb2.AesGcmKey(
        version=0, key_value=bytes.fromhex(case['key'])), aead.Aead)
    sealed = bytes.fromhex(case['iv'] + case['ct'] + case['tag'])
    aad = bytes.fromhex(case['aad'])
    if case['result'] == 'valid':
        assert cipher.decrypt(sealed, aad) == bytes.fromhex(case['msg'])
    else:
        with pytest.raises(tink.TinkError):
            cipher.decrypt(sealed, aad)


@pytest.mark.parametrize('group, case', vectors('aes_siv_cmac_test.json',
                                                lambda g: g['keySize'] == 512))
def test_aes_siv(group, case):
    cipher = raw_primitive('AesSivKey', aes_siv_pb2.AesSivKey(
        version=0, key_value=bytes.fromhex(case['key'])), daead.DeterministicAead)
    ct, aad, msg = (bytes.fromhex(case[k]) for k in ('ct', 'aad', 'msg'))
    if case['result'] == 'valid':
        assert cipher.encrypt_deterministically(msg, aad) == ct
        assert cipher.decrypt_deterministically(ct, aad) == msg
    else:
        with pytest.raises(tink.TinkError):
            cipher.decrypt_deterministically(ct, aad)


@pytest.mark.parametrize('group, case', vectors('hmac_sha256_test.json', lambda g: True))
def test_hmac_sha256(group, case):
    mac = raw_primitive('HmacPrfKey', hmac_prf_pb2.HmacPrfKey(
        version=0, key_value=bytes.fromhex(case['key']),
        params=hmac_prf_pb2.HmacPrfParams(hash=common_pb2.SHA256)), prf.PrfSet).primary()
    tag = bytes.fromhex(case['tag'])
    computed = mac.compute(bytes.fromhex(case['msg']), group['tagSize'] // 8)
    assert (computed == tag) == (case['result'] == 'valid')


@pytest.mark.parametrize('data, expected', [
    (b'\x00' * 32, 0x8A9136AA),  # RFC 3720 B.4
    (b'123456789', 0xE3069283),
])
def test_crc32c(data, expected):
    assert google_crc32c.value(data) == expected


def test_keyed_ops_agree_with_independent_hmac_and_aes_siv():
    """The column-wise pseudonyms, tokens and day shifts equal HMAC-SHA256 (Python's hmac) and
    AES-SIV (the cryptography package) computed value by value from the same raw keys."""
    import base64
    import hashlib
    import hmac

    import pyarrow as pa
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    from transforms.keys.crypto import KeyedOps, _domain_prefix

    mac_key, siv_key = bytes(range(32)), bytes(range(64, 128))
    ops = KeyedOps(raw_primitive('HmacPrfKey', hmac_prf_pb2.HmacPrfKey(
        version=0, key_value=mac_key, params=hmac_prf_pb2.HmacPrfParams(hash=common_pb2.SHA256)),
        prf.PrfSet), raw_primitive('AesSivKey', aes_siv_pb2.AesSivKey(
            version=0, key_value=siv_key), daead.DeterministicAead))
    values = ['C00000001', '张三', '', 'x' * 300] + [f'11010519{i:010d}' for i in range(200)]

    def prf_ref(domain, value, size):
        message = _domain_prefix(domain) + value.encode('utf-8')
        return hmac.new(mac_key, message, hashlib.sha256).digest()[:size]

    pseudonyms = ops.pseudonyms('customer_id', pa.array(values)).to_pylist()
    assert pseudonyms == [prf_ref('customer_id', v, 16).hex() for v in values]
    assert pseudonyms[0] == ops.pseudonym('customer_id', values[0])
    # the last outputs of a domain are kept for a second step on the same values, and only
    # for the same values, domain and size
    assert ops.pseudonyms('customer_id', pa.array(values)).to_pylist() == pseudonyms
    assert ops.pseudonyms('customer_id', pa.array(values[::-1])).to_pylist() == pseudonyms[::-1]
    assert ops.pseudonyms('email', pa.array(values)).to_pylist() == \
        [prf_ref('email', v, 16).hex() for v in values]

    siv = AESSIV(siv_key)
    tokens = ops.tokens('cn_resident_id', pa.array(values)).to_pylist()
    assert tokens == [base64.urlsafe_b64encode(siv.encrypt(v.encode('utf-8'), [
        _domain_prefix('cn_resident_id')])).rstrip(b'=').decode('ascii') for v in values]
    assert any('-' in t for t in tokens) and any('_' in t for t in tokens)  # URL-safe alphabet
    assert all(ops.detokenize('cn_resident_id', t) == v.encode('utf-8')
               for t, v in zip(tokens, values))

    shifts = ops.day_shifts(pa.array(values), 30)
    assert shifts.type == pa.int32()
    for value, shift in zip(values, shifts.to_pylist()):
        r = int.from_bytes(prf_ref('date_shift', value, 8), 'big') % 60
        assert shift == (r - 30 if r < 30 else r - 29) and shift != 0

    empty = pa.array([], pa.string())
    assert len(ops.pseudonyms('d', empty)) == len(ops.tokens('d', empty)) == \
        len(ops.day_shifts(empty, 30)) == 0
