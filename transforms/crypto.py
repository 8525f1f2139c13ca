"""Keys and encryption: the keyring, keyed pseudonyms and tokens, Parquet and dead-letter crypto.

Keys are Tink keysets, one per role, listed in ``keyring.json`` inside a keyring directory:

=================  ======================================  =====================================
role               Tink primitive (template)               used for
=================  ======================================  =====================================
``pseudonym``      PRF set (HMAC_SHA256_PRF)               ``hash`` pseudonyms, ``date_shift``
``token``          deterministic AEAD (AES256_SIV)         ``tokenize`` (reversible by key holders)
``data.footer``    AEAD (AES256_GCM)                       PME master key: footer, public columns
``data.internal``  AEAD (AES256_GCM)                       PME master key: internal columns
``data.personal``  AEAD (AES256_GCM)                       PME master key: personal columns
``data.sensitive`` AEAD (AES256_GCM)                       PME master key: sensitive columns
``deadletter``     streaming AEAD (AES256_GCM_HKDF_1MB)    dead letters (compliance only)
=================  ======================================  =====================================

A ``cleartext`` keyring stores keysets as plain JSON and is for demos and tests only. The format
field ``protection`` leaves room for KMS-wrapped keysets. Nothing here ever logs, prints or puts
key material into an exception message.
"""

import base64
import datetime
import json
import os
import threading
from typing import BinaryIO, Dict, List, Sequence

import tink
from tink import aead, daead, prf, secret_key_access, streaming_aead
import pyarrow.parquet.encryption as pe

from transforms.errors import KeyringError

__all__ = ['DATA_ROLES', 'ROLES', 'KeyedOps', 'Keyring', 'cached_keyed_ops', 'cached_keyring',
           'data_role',
           'init_keyring',
           'load_keyring', 'pme_decryption_properties', 'pme_encryption_properties']

aead.register()
daead.register()
prf.register()
streaming_aead.register()

KEYRING_FILE = 'keyring.json'
KEYRING_FORMAT = 'novation-keyring/1'
CLEARTEXT_WARNING = ('DEMO/TEST ONLY: these keysets are stored in clear. Use a KMS-wrapped '
                     'keyring for real customer data.')

DATA_ROLES = ('data.footer', 'data.internal', 'data.personal', 'data.sensitive')
ROLES = {
    'pseudonym': prf.prf_key_templates.HMAC_SHA256,
    'token': daead.deterministic_aead_key_templates.AES256_SIV,
    **{role: aead.aead_key_templates.AES256_GCM for role in DATA_ROLES},
    'deadletter': streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB,
}

# Length of a pseudonym in bytes before hex encoding: 128 bits keeps collisions negligible for
# billions of subjects while keeping the column compact.
PSEUDONYM_BYTES = 16


def data_role(classification: str) -> str:
    """The PME master key role for a delivered column of this classification."""
    return 'data.footer' if classification == 'public' else f'data.{classification}'


class Keyring:
    """The keysets of one keyring directory, by role. Holds Tink handles, never prints them."""

    def __init__(self, path: str, protection: str, handles: Dict[str, 'tink.KeysetHandle']):
        self.path = path
        self.protection = protection
        self._handles = handles

    def __repr__(self):
        return f'Keyring({self.path!r}, roles={sorted(self._handles)})'

    def key_ids(self) -> Dict[str, dict]:
        """Key ids per role (primary and all), safe to publish in a manifest."""
        out = {}
        for role, handle in sorted(self._handles.items()):
            info = handle.keyset_info()
            out[role] = {'primary': info.primary_key_id,
                         'keys': sorted(k.key_id for k in info.key_info)}
        return out

    def primitive(self, role: str, cls):
        if role not in self._handles:
            raise KeyringError(f'keyring {self.path} has no {role!r} keyset')
        return self._handles[role].primitive(cls)

    def keyed_ops(self) -> 'KeyedOps':
        return KeyedOps(self.primitive('pseudonym', prf.PrfSet),
                        self.primitive('token', daead.DeterministicAead))

    def streaming(self) -> streaming_aead.StreamingAead:
        return self.primitive('deadletter', streaming_aead.StreamingAead)


class KeyedOps:
    """Per-value keyed operations used by masking, built once per worker.

    Deterministic by design: the same value, key and domain give the same output in every table
    and run, which keeps joins intact. Deterministic encryption is not semantically secure (equal
    inputs are visibly equal), so it is used only where that equality is wanted.
    """

    def __init__(self, prf_set, daead_primitive):
        self._prf = prf_set.primary()
        self._daead = daead_primitive

    def pseudonyms(self, domain: str, values: Sequence[bytes]) -> List[str]:
        prefix = _domain_prefix(domain)
        compute = self._prf.compute
        return [compute(prefix + v, PSEUDONYM_BYTES).hex() for v in values]

    def tokens(self, domain: str, values: Sequence[bytes]) -> List[str]:
        ad = _domain_prefix(domain)
        enc = self._daead.encrypt_deterministically
        return [base64.urlsafe_b64encode(enc(v, ad)).rstrip(b'=').decode('ascii')
                for v in values]

    def detokenize(self, domain: str, token: str) -> bytes:
        raw = base64.urlsafe_b64decode(token + '=' * (-len(token) % 4))
        return self._daead.decrypt_deterministically(raw, _domain_prefix(domain))

    def day_shifts(self, subjects: Sequence[bytes], max_days: int) -> List[int]:
        """A constant, non-zero shift in [-max_days, max_days] per subject."""
        prefix = _domain_prefix('date_shift')
        compute = self._prf.compute
        span = 2 * max_days
        out = []
        for s in subjects:
            r = int.from_bytes(compute(prefix + s, 8), 'big') % span
            out.append(r - max_days if r < max_days else r - max_days + 1)
        return out


def _domain_prefix(domain: str) -> bytes:
    # Length-prefixed so that no (domain, value) pair can collide with another.
    d = domain.encode('utf-8')
    return len(d).to_bytes(2, 'big') + d


# ---------------------------------------------------------------------------------------------
# Keyring files


def init_keyring(directory: str) -> Dict[str, dict]:
    """Create a new cleartext keyring (demo/test only) in an empty or new local directory."""
    if os.path.exists(os.path.join(directory, KEYRING_FILE)):
        raise KeyringError(f'{directory} already holds a keyring; refusing to overwrite it')
    os.makedirs(directory, exist_ok=True)
    files = {}
    for role, template in ROLES.items():
        handle = tink.new_keyset_handle(template)
        name = f'{role.replace(".", "-")}.cleartext.json'
        serialized = tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
        _write_private(os.path.join(directory, name), serialized)
        files[role] = name
    manifest = {
        'format': KEYRING_FORMAT,
        'protection': 'cleartext',
        'warning': CLEARTEXT_WARNING,
        'created_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'keysets': files,
    }
    _write_private(os.path.join(directory, KEYRING_FILE), json.dumps(manifest, indent=2) + '\n')
    return load_keyring(directory).key_ids()


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(text)


def load_keyring(path: str, roles: Sequence[str] = tuple(ROLES)) -> Keyring:
    """Load the keysets of ``roles`` from a keyring directory (local path or gs:// URI)."""
    from transforms.files import join, read_text
    from transforms.errors import NovationError
    try:
        text = read_text(join(path, KEYRING_FILE), what='keyring')
    except NovationError:
        raise KeyringError(f'no keyring at {path} (expected {KEYRING_FILE}); create one with '
                           f'`novation keys init {path}`') from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise KeyringError(f'{join(path, KEYRING_FILE)} is not valid JSON') from None
    if doc.get('format') != KEYRING_FORMAT:
        raise KeyringError(f'{join(path, KEYRING_FILE)}: format must be {KEYRING_FORMAT!r}')
    protection = doc.get('protection')
    if protection != 'cleartext':
        raise KeyringError(f'{join(path, KEYRING_FILE)}: protection {protection!r} is not '
                           f'supported; allowed: cleartext')
    keysets = doc.get('keysets') or {}
    handles = {}
    for role in roles:
        if role not in keysets:
            raise KeyringError(f'keyring {path} has no {role!r} keyset; roles present: '
                               f'{", ".join(sorted(keysets)) or "none"}')
        keyset_path = join(path, keysets[role])
        try:
            text = read_text(keyset_path, what=f'{role} keyset')
        except NovationError as e:
            raise KeyringError(str(e)) from None
        try:
            handles[role] = tink.json_proto_keyset_format.parse(text, secret_key_access.TOKEN)
        except Exception:  # Tink's messages may quote the keyset; ours names the file only
            raise KeyringError(f'{keyset_path}: not a valid Tink keyset for role {role!r}'
                               ) from None
        _check_primitive(role, handles[role], keyset_path)
    return Keyring(path, protection, handles)


_CACHE = {}
_CACHE_LOCK = threading.Lock()


def cached_keyring(path: str, roles: Sequence[str]) -> Keyring:
    """``load_keyring``, once per worker process for each (path, roles)."""
    key = (path, tuple(roles))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_keyring(path, roles)
        return _CACHE[key]


def cached_keyed_ops(path: str) -> KeyedOps:
    """The pseudonym and token operations of a keyring, loaded once per worker process."""
    return cached_keyring(path, ('pseudonym', 'token')).keyed_ops()


_PRIMITIVE_OF_ROLE = {
    'pseudonym': prf.PrfSet,
    'token': daead.DeterministicAead,
    **{role: aead.Aead for role in DATA_ROLES},
    'deadletter': streaming_aead.StreamingAead,
}


def _check_primitive(role, handle, where):
    try:
        handle.primitive(_PRIMITIVE_OF_ROLE[role])
    except tink.TinkError:
        raise KeyringError(f'{where}: the keyset for role {role!r} is not a '
                           f'{_PRIMITIVE_OF_ROLE[role].__name__} keyset') from None


# ---------------------------------------------------------------------------------------------
# Parquet Modular Encryption: Tink AEAD keysets act as the KMS master keys.


class _TinkKmsClient(pe.KmsClient):
    """Wraps PME's key-encryption keys with the keyring's ``data.*`` AEAD keysets."""

    def __init__(self, keyring: Keyring):
        super().__init__()
        self._keyring = keyring
        self._aeads = {}

    def _aead(self, master_key_identifier):
        if master_key_identifier not in self._aeads:
            self._aeads[master_key_identifier] = self._keyring.primitive(
                master_key_identifier, aead.Aead)
        return self._aeads[master_key_identifier]

    def wrap_key(self, key_bytes, master_key_identifier):
        ct = self._aead(master_key_identifier).encrypt(
            key_bytes, b'novation-pme/' + master_key_identifier.encode())
        return base64.b64encode(ct).decode('ascii')

    def unwrap_key(self, wrapped_key, master_key_identifier):
        try:
            return self._aead(master_key_identifier).decrypt(
                base64.b64decode(wrapped_key), b'novation-pme/' + master_key_identifier.encode())
        except tink.TinkError:
            raise KeyringError(f'the {master_key_identifier} key in {self._keyring.path} does '
                               f'not open this file (wrong keyring or a tampered file)') from None


def _crypto_factory(keyring: Keyring) -> pe.CryptoFactory:
    return pe.CryptoFactory(lambda _config: _TinkKmsClient(keyring))


def pme_encryption_properties(keyring: Keyring, column_keys: Dict[str, List[str]]):
    """File encryption properties: AES-GCM, 256-bit data keys, encrypted footer."""
    config = pe.EncryptionConfiguration(
        footer_key='data.footer',
        column_keys={role: cols for role, cols in column_keys.items()
                     if cols and role != 'data.footer'},
        encryption_algorithm='AES_GCM_V1',
        plaintext_footer=False,
        data_key_length_bits=256,
        double_wrapping=True,
        internal_key_material=True,
    )
    return _crypto_factory(keyring).file_encryption_properties(pe.KmsConnectionConfig(), config)


def pme_decryption_properties(keyring: Keyring):
    return _crypto_factory(keyring).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration())


# ---------------------------------------------------------------------------------------------
# Streaming AEAD for dead letters.


def encrypting_stream(keyring: Keyring, destination: BinaryIO, associated_data: bytes):
    """A writable stream that encrypts into ``destination`` (closed with it)."""
    return keyring.streaming().new_encrypting_stream(destination, associated_data)
