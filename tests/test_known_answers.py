"""Known answers for every primitive Novation's keys use, run in CI.

Wycheproof vectors (shared/testvectors/wycheproof) drive Tink's own primitives with raw keys:
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

from conftest import ROOT

aead.register()
daead.register()
prf.register()

WYCHEPROOF = os.path.join(os.path.dirname(ROOT), 'shared', 'testvectors', 'wycheproof')


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
