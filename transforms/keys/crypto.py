"""Encryption with the keyring's keys: keyed pseudonyms and tokens, Parquet and stream crypto.

Every delivered file has an identity, ``<run id>/<path in the run directory>`` (for example
``20261123T101500Z-3fa9c1/data/customers/part-7c1e9a0b2d4f6e81.parquet``), and its encryption is
bound to it: Parquet data keys are wrapped with the identity as associated data, streams (Avro,
dead letters) use it as their associated data. A file renamed, swapped with another or copied
into another run does not decrypt there. Nothing here logs, prints or puts key material into an
exception message.
"""

import base64
import binascii
import io
import pickle
from itertools import repeat
from typing import BinaryIO, Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet.encryption as pe
import tink
from tink import aead, daead, prf

from transforms.common.errors import KeyringError
from transforms.keys.keyring import Keyring, cached_keyring

__all__ = ['KeyedOps', 'StateCipher', 'cached_keyed_ops', 'decrypt_bytes', 'decrypting_stream',
           'encrypt_bytes', 'encrypting_stream', 'file_identity', 'keyed_ops',
           'pme_decryption_properties', 'pme_encryption_properties']

# Length of a pseudonym in bytes before hex encoding: 128 bits keeps collisions negligible for
# billions of subjects while keeping the column compact.
PSEUDONYM_BYTES = 16



def file_identity(run_id: str, relative_path: str) -> str:
    """What a delivered file's encryption is bound to: its run and its place in the run."""
    return f'{run_id}/{relative_path}'


def keyed_ops(keyring: Keyring) -> 'KeyedOps':
    """Pseudonyms and tokens with the keyring's keys (a token key holder may lack the other)."""
    return KeyedOps(keyring.primitive('pseudonym', prf.PrfSet)
                    if keyring.has('pseudonym') else None,
                    keyring.primitive('token', daead.DeterministicAead)
                    if keyring.has('token') else None)


class KeyedOps:
    """Keyed operations used by masking, built once per worker.

    Deterministic by design: the same value, key and domain give the same output in every table
    and run, which keeps joins intact. Deterministic encryption is not semantically secure (equal
    inputs are visibly equal), so it is used only where that equality is wanted.

    The array methods take strings or bytes without nulls and make one Tink call per value in a
    loop that stays in C (``map``); everything around the calls is done column-wise.
    """

    def __init__(self, prf_set, daead_primitive):
        self._prf = prf_set and prf_set.primary()
        self._daead = daead_primitive
        # The last outputs per (domain, size): steps fused behind each other ask for the same
        # batch's subjects (masking, then the notification list's delivered ids).
        self._last = {}

    def pseudonyms(self, domain: str, values: pa.Array) -> pa.Array:
        """The hex pseudonym of each value."""
        raw = self._prf_outputs(domain, values, PSEUDONYM_BYTES)
        width = 2 * PSEUDONYM_BYTES
        offsets = np.arange(0, width * (len(values) + 1), width, dtype=np.int32)
        return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets),
                                           pa.py_buffer(raw.hex().encode('ascii')))

    def pseudonym(self, domain: str, value: str) -> str:
        """The pseudonym of one value (dead letters name their subject by it)."""
        return self._prf.compute(_domain_prefix(domain) + value.encode('utf-8'),
                                 PSEUDONYM_BYTES).hex()

    def tokens(self, domain: str, values: pa.Array) -> pa.Array:
        """The AES-SIV token of each value, base64url without padding."""
        sealed = map(self._daead.encrypt_deterministically, _binary(values).to_pylist(),
                     repeat(_domain_prefix(domain)))
        # Standard base64 per value (one C call each), made URL-safe and unpadded column-wise.
        standard = pa.array(list(map(binascii.b2a_base64, sealed)), pa.binary()).cast(pa.string())
        unpadded = pc.utf8_rtrim(standard, '=\n')
        return pc.replace_substring(pc.replace_substring(unpadded, '+', '-'), '/', '_')

    def detokenize(self, domain: str, token: str) -> bytes:
        raw = base64.urlsafe_b64decode(token + '=' * (-len(token) % 4))
        return self._daead.decrypt_deterministically(raw, _domain_prefix(domain))

    def day_shifts(self, subjects: pa.Array, max_days: int) -> pa.Array:
        """A constant, non-zero shift in [-max_days, max_days] per subject (int32)."""
        raw = self._prf_outputs('date_shift', subjects, 8)
        r = (np.frombuffer(raw, dtype='>u8') % np.uint64(2 * max_days)).astype(np.int32)
        return pa.array(np.where(r < max_days, r - max_days, r - max_days + 1), pa.int32())

    def _prf_outputs(self, domain: str, values: pa.Array, size: int) -> bytes:
        """The PRF's ``size``-byte outputs for the domain and each value, concatenated."""
        last = self._last.get((domain, size))
        if last is not None and last[0].equals(values):
            return last[1]
        inputs = pc.binary_join_element_wise(pa.scalar(_domain_prefix(domain), pa.binary()),
                                             _binary(values), pa.scalar(b'', pa.binary()))
        raw = b''.join(map(self._prf.compute, inputs.to_pylist(), repeat(size)))
        self._last[(domain, size)] = (values, raw)
        return raw


def _binary(values: pa.Array) -> pa.Array:
    return values if pa.types.is_binary(values.type) else values.cast(pa.binary())


def _domain_prefix(domain: str) -> bytes:
    # Length-prefixed so that no (domain, value) pair can collide with another.
    d = domain.encode('utf-8')
    return len(d).to_bytes(2, 'big') + d


_KEYED_OPS = {}


def cached_keyed_ops(path: str) -> KeyedOps:
    """The pseudonym and token operations of a keyring, loaded once per worker process and
    shared by its steps (a rotated keyring gets new ones)."""
    keyring = cached_keyring(path, ('pseudonym', 'token'))
    ops = _KEYED_OPS.get(id(keyring))
    if ops is None or ops[0] is not keyring:
        ops = _KEYED_OPS[id(keyring)] = (keyring, keyed_ops(keyring))
    return ops[1]


# ---------------------------------------------------------------------------------------------
# Parquet Modular Encryption: the keyring's AEAD keysets act as the KMS master keys.


def pme_associated_data(identity: str, master_key: str) -> bytes:
    """Associated data of a wrapped Parquet data key: the file identity and the master key."""
    return f'{identity}|{master_key}'.encode('utf-8')


class _TinkKmsClient(pe.KmsClient):
    """Wraps each Parquet data key with a master key role, bound to one file's identity."""

    def __init__(self, keyring: Keyring, identity: str):
        super().__init__()
        self._keyring = keyring
        self._identity = identity

    def wrap_key(self, key_bytes, master_key_identifier):
        ct = self._keyring.primitive(master_key_identifier, aead.Aead).encrypt(
            key_bytes, pme_associated_data(self._identity, master_key_identifier))
        return base64.b64encode(ct).decode('ascii')

    def unwrap_key(self, wrapped_key, master_key_identifier):
        if not self._keyring.has(master_key_identifier):
            raise KeyringError(f'keyring {self._keyring.path} has no {master_key_identifier!r} '
                               f'keyset, which this column needs')
        try:
            return self._keyring.primitive(master_key_identifier, aead.Aead).decrypt(
                base64.b64decode(wrapped_key),
                pme_associated_data(self._identity, master_key_identifier))
        except (tink.TinkError, ValueError):
            raise KeyringError(f'the {master_key_identifier} key in {self._keyring.path} does '
                               f'not open {self._identity} (wrong keyring, a file moved from '
                               f'its place, or a tampered file)') from None


def _crypto_factory(keyring: Keyring, identity: str) -> pe.CryptoFactory:
    # A factory per file: PME caches KMS clients and keys per factory, and every file's keys
    # must be unwrapped under that file's own identity.
    return pe.CryptoFactory(lambda _config: _TinkKmsClient(keyring, identity))


def pme_encryption_properties(keyring: Keyring, column_keys: Dict[str, List[str]],
                              identity: str):
    """AES-GCM (never CTR), fresh 256-bit data keys per file, encrypted footer, each data key
    wrapped directly by its master key role with the file identity as associated data.

    Every column is encrypted, public ones too (under ``data.footer``): PME leaves a column that
    no key names in clear and unauthenticated, so a flipped byte there would read as other data.
    """
    config = pe.EncryptionConfiguration(
        footer_key='data.footer',
        column_keys={role: cols for role, cols in column_keys.items() if cols},
        encryption_algorithm='AES_GCM_V1',
        plaintext_footer=False,
        data_key_length_bits=256,
        double_wrapping=False,
        internal_key_material=True,
    )
    return _crypto_factory(keyring, identity).file_encryption_properties(
        pe.KmsConnectionConfig(), config)


def pme_decryption_properties(keyring: Keyring, identity: str):
    return _crypto_factory(keyring, identity).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration())


# ---------------------------------------------------------------------------------------------
# Streaming AEAD (Avro output, dead letters): the file identity is the associated data.


def encrypting_stream(keyring: Keyring, role: str, destination: BinaryIO, identity: str):
    """A writable stream that encrypts into ``destination`` (closed with it)."""
    return keyring.primitive(role).new_encrypting_stream(destination, identity.encode('utf-8'))


def decrypting_stream(keyring: Keyring, role: str, source: BinaryIO, identity: str):
    """A readable stream of the plaintext of ``source``; raises on any change to the bytes."""
    return keyring.primitive(role).new_decrypting_stream(source, identity.encode('utf-8'))


def encrypt_bytes(keyring: Keyring, role: str, data: bytes, identity: str) -> bytes:
    """``data`` encrypted whole with the streaming AEAD of ``role`` (its identity bound)."""
    buffer = _KeptOpen()
    with encrypting_stream(keyring, role, buffer, identity) as stream:
        stream.write(data)
    return buffer.getvalue()


def decrypt_bytes(keyring: Keyring, role: str, data: bytes, identity: str) -> bytes:
    """The plaintext of ``encrypt_bytes``; raises on any change to the bytes or identity."""
    with decrypting_stream(keyring, role, io.BytesIO(data), identity) as stream:
        return stream.read()


class _KeptOpen(io.BytesIO):
    """A buffer whose value outlives the encrypting stream that closes it."""

    def close(self):
        pass


class StateCipher:
    """What a streaming step keeps in the runner's state (on Dataflow, Streaming Engine)
    encrypted, as the batch's scratch files are: pickled, then sealed with the keyring's
    dead-letter key, ``<run id>/state/<place>`` as associated data (state moved to another
    run, step or shard does not decrypt). Holds only the keyring's path: it pickles with its
    DoFn, and loads the key on first use in each worker."""
    ROLE = 'deadletter'

    def __init__(self, keys_path: str, run_id: str):
        self._keys_path, self._run_id = keys_path, run_id

    def dumps(self, value, place: str) -> bytes:
        return encrypt_bytes(self._keyring(), self.ROLE,
                             pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),
                             self._identity(place))

    def loads(self, data: bytes, place: str):
        return pickle.loads(decrypt_bytes(self._keyring(), self.ROLE, data,
                                          self._identity(place)))

    def _identity(self, place):
        return f'{self._run_id}/state/{place}'

    def _keyring(self):
        return cached_keyring(self._keys_path, (self.ROLE,))
