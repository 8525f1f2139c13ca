"""Keyrings: one Tink keyset per role, stored in clear (demo/test) or encrypted under a KMS key.

A keyring is a directory holding ``keyring.json`` and one keyset file per role; the roles, their
Tink keys and what each protects are listed in ``transforms.keys.roles``.

Protection is ``cleartext`` (keysets as plain JSON, for demos and tests only, warned about on
every use) or ``kms``: every keyset is encrypted with Tink's KMS envelope AEAD under a master key
named by URI: ``gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K`` (Cloud KMS, extra
``novation[gcp]``) or ``local-kms://PATH`` (an AES256_GCM keyset file kept apart from the
keyring, for on-premises use). The role name is the associated data of its keyset, so keyset
files cannot be swapped between roles.

Rotation adds a new primary key to a keyset and keeps the old ones, so files written before it
still decrypt. Nothing here prints, logs or puts key material into an exception message.
"""

import json
import logging
import threading
from typing import Dict, Optional, Sequence

import tink
from tink import aead, daead, prf, secret_key_access, signature, streaming_aead
from tink.proto import tink_pb2

from transforms.common.errors import KeyringError, NovationError
from transforms.common.files import join, read_text
from transforms.keys.roles import BASE_ROLES, COLUMN_PREFIX, ROLES, column_role

__all__ = ['Keyring', 'cached_keyring', 'column_role', 'display_uri', 'load_keyring']

aead.register()
daead.register()
prf.register()
signature.register()
streaming_aead.register()

_LOG = logging.getLogger('novation.keys')

KEYRING_FILE = 'keyring.json'
KEYRING_FORMAT = 'novation-keyring/1'
CLEARTEXT_WARNING = ('DEMO/TEST ONLY: these keysets are stored in clear. Use a KMS-wrapped '
                     'keyring (novation keys init --master-key URI) for real customer data.')
LOCAL_KMS = 'local-kms://'
GCP_KMS = 'gcp-kms://'

AEAD_TEMPLATE = aead.aead_key_templates.AES256_GCM
_BY_KIND = {  # the Tink template and primitive of each kind of role (transforms.keys.roles)
    'prf': (prf.prf_key_templates.HMAC_SHA256, prf.PrfSet),
    'daead': (daead.deterministic_aead_key_templates.AES256_SIV, daead.DeterministicAead),
    'aead': (AEAD_TEMPLATE, aead.Aead),
    'streaming_aead': (streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB,
                       streaming_aead.StreamingAead),
    # a reader of a seal holds the public half alone, so the primitive is the verifier
    'signature': (signature.signature_key_templates.ED25519, signature.PublicKeyVerify),
}
_TEMPLATES = {role.name: _BY_KIND[role.kind][0] for role in ROLES}
_PRIMITIVES = {role.name: _BY_KIND[role.kind][1] for role in ROLES}


def template_for(role):
    return AEAD_TEMPLATE if role.startswith(COLUMN_PREFIX) else _TEMPLATES[role]


def _primitive_class(role):
    return aead.Aead if role.startswith(COLUMN_PREFIX) else _PRIMITIVES[role]


def check_role_name(role):
    if role in _TEMPLATES:
        return
    name = role[len(COLUMN_PREFIX):] if role.startswith(COLUMN_PREFIX) else ''
    if not name or not all(c.isalnum() or c in '._-' for c in name):
        raise KeyringError(f'unknown key role {role!r}; roles: {", ".join(BASE_ROLES)} and '
                           f'column.NAME (NAME: letters, digits, ".", "_", "-")')


def display_uri(uri: Optional[str]) -> str:
    """A master key URI safe to print: Tink's test URIs (fake-kms://) embed key material."""
    if not uri:
        return 'none'
    if uri.startswith((GCP_KMS, LOCAL_KMS)):
        return uri
    return uri.split('://', 1)[0] + '://(hidden)'


class Keyring:
    """The keysets of one keyring directory, by role. Holds Tink handles, never prints them."""

    def __init__(self, path, doc, handles: Dict[str, 'tink.KeysetHandle']):
        self.path = path
        self.protection = doc['protection']
        self.master_key_uri = doc.get('master_key_uri')
        self._doc = doc
        self._handles = handles
        self._primitives = {}

    def __repr__(self):
        return f'Keyring({self.path!r}, roles={sorted(self._handles)})'

    @property
    def roles(self):
        return tuple(sorted(self._handles))

    def has(self, role: str) -> bool:
        return role in self._handles

    def require(self, roles: Sequence[str], why: str = '') -> None:
        missing = [r for r in roles if r not in self._handles]
        if missing:
            hint = ''.join(f'; add it with `novation keys add {self.path} {r}`'
                           for r in missing[:1])
            raise KeyringError(f'keyring {self.path} has no {", ".join(map(repr, missing))} '
                               f'keyset{why}{hint}')

    def key_ids(self) -> Dict[str, dict]:
        """Key ids per role (primary and all), safe to publish in a manifest."""
        out = {}
        for role, handle in sorted(self._handles.items()):
            info = handle.keyset_info()
            out[role] = {'primary': info.primary_key_id,
                         'keys': sorted(k.key_id for k in info.key_info)}
        return out

    def describe(self) -> list:
        """Per role: primitive, key ids, status and creation time; never key material."""
        rows = []
        for role, handle in sorted(self._handles.items()):
            info = handle.keyset_info()
            created = self._doc['keysets'][role].get('created', {})
            for k in sorted(info.key_info, key=lambda k: created.get(str(k.key_id), '')):
                rows.append({'role': role, 'key_id': k.key_id,
                             'primitive': k.type_url.rsplit('.', 1)[-1],
                             'status': tink_pb2.KeyStatusType.Name(k.status).lower(),
                             'primary': k.key_id == info.primary_key_id,
                             'created_at': created.get(str(k.key_id), 'unknown')})
        return rows

    def primitive(self, role: str, cls=None):
        """The Tink primitive of a role, built once (building one costs more than using it).

        A signature role gives its verifier (of the public keyset) unless ``cls`` asks for
        PublicKeySign, which only the private keyset gives."""
        cls = cls or _primitive_class(role)
        if (role, cls) not in self._primitives:
            self.require([role])
            self._primitives[role, cls] = _primitive_of(self._handles[role], cls)
        return self._primitives[role, cls]

    def can_sign(self, role: str) -> bool:
        """Whether the keyring holds the private half of a signature role."""
        try:
            self.primitive(role, signature.PublicKeySign)
            return True
        except tink.TinkError:
            return False

    def public_keyset(self, role: str) -> str:
        """The public half of a signature role as Tink JSON (safe to give away)."""
        self.require([role])
        handle = self._handles[role]
        try:
            handle = handle.public_keyset_handle()
        except tink.TinkError:  # already the public half
            pass
        return tink.json_proto_keyset_format.serialize_without_secret(handle)


def _primitive_of(handle, cls):
    if cls is signature.PublicKeyVerify:
        try:
            handle = handle.public_keyset_handle()
        except tink.TinkError:  # a keyset holding the public half only
            pass
    return handle.primitive(cls)


# ---------------------------------------------------------------------------------------------
# Master keys


def master_key_aead(uri: str):
    """The AEAD that encrypts keysets: Tink's KMS envelope over the master key at ``uri``."""
    if uri.startswith(LOCAL_KMS):
        path = uri[len(LOCAL_KMS):]
        try:
            remote = tink.json_proto_keyset_format.parse(
                read_text(path, what='local master key'), secret_key_access.TOKEN
            ).primitive(aead.Aead)
        except NovationError as e:
            raise KeyringError(str(e)) from None
        except tink.TinkError:
            raise KeyringError(f'{path} is not a Tink AEAD keyset (local master key)') from None
    elif uri.startswith(GCP_KMS):
        try:
            from tink.integration import gcpkms
        except ImportError:
            raise KeyringError(f'{uri}: Cloud KMS master keys need the Google Cloud client: '
                               f"pip install 'novation[gcp]'") from None
        try:
            remote = gcpkms.GcpKmsClient(uri, None).get_aead(uri)
        except Exception as e:  # no credentials, malformed URI, ...: Google's text says which
            raise KeyringError(f'{uri}: cannot use this Cloud KMS key: {first_line(e)}'
                               ) from None
    else:
        try:
            remote = tink.kms_client_from_uri(uri).get_aead(uri)
        except tink.TinkError:
            raise KeyringError(f'master key {display_uri(uri)}: unsupported URI; allowed: '
                               f'{GCP_KMS}projects/P/locations/L/keyRings/R/cryptoKeys/K, '
                               f'{LOCAL_KMS}PATH') from None
    return aead.KmsEnvelopeAead(AEAD_TEMPLATE, remote)


def first_line(exc) -> str:
    text = str(exc).strip()
    return f'{type(exc).__name__}: {text.splitlines()[0]}' if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Creating, extending and rotating keyrings (local directories)


def keyset_associated_data(role):
    return f'novation-keyring/{role}'.encode('utf-8')


# ---------------------------------------------------------------------------------------------
# Loading


# What to do about a missing keyring: create one before a run; find the right one to read a run.
CREATE_HINT = 'create one with `novation keys init {path}`'
READ_HINT = ('give --keys the directory of a copy of the keyring the run was written with (it '
             'holds keyring.json)')


def _doc_text(path, hint=CREATE_HINT):
    try:
        return read_text(join(path, KEYRING_FILE), what='keyring')
    except NovationError:
        raise KeyringError(f'no keyring at {path} (expected {KEYRING_FILE}); '
                           f'{hint.format(path=path)}') from None


def read_doc(path, hint=CREATE_HINT):
    where = join(path, KEYRING_FILE)
    text = _doc_text(path, hint)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise KeyringError(f'{where} is not valid JSON') from None
    if not isinstance(doc, dict) or doc.get('format') != KEYRING_FORMAT:
        raise KeyringError(f'{where}: format must be {KEYRING_FORMAT!r}')
    protection = doc.get('protection')
    if protection not in ('cleartext', 'kms'):
        raise KeyringError(f'{where}: protection {protection!r} is not supported; allowed: '
                           f'cleartext, kms')
    if protection == 'kms' and not isinstance(doc.get('master_key_uri'), str):
        raise KeyringError(f'{where}: protection kms needs master_key_uri')
    if not isinstance(doc.get('keysets'), dict) or not all(
            isinstance(e, dict) and isinstance(e.get('file'), str)
            for e in doc['keysets'].values()):
        raise KeyringError(f'{where}: keysets must map each role to {{"file": ...}}')
    return doc


def load_keyring(path: str, roles: Optional[Sequence[str]] = None, *,
                 warn: bool = True, hint: str = CREATE_HINT) -> Keyring:
    """Load a keyring directory (local path or gs:// URI): ``roles``, or every role in it.

    A cleartext keyring logs a warning on every load with ``warn``. ``hint`` says what to do
    if there is no keyring at ``path`` (READ_HINT for commands that read a finished run).
    """
    doc = read_doc(path, hint)
    keysets = doc['keysets']
    wanted = sorted(keysets) if roles is None else list(roles)
    missing = [r for r in wanted if r not in keysets]
    if missing:
        raise KeyringError(f'keyring {path} has no {", ".join(map(repr, missing))} keyset; '
                           f'roles present: {", ".join(sorted(keysets)) or "none"}')
    if doc['protection'] == 'cleartext' and warn:
        _LOG.warning('warning: keyring %s: %s', path, CLEARTEXT_WARNING)
    wrap = master_key_aead(doc['master_key_uri']) if doc['protection'] == 'kms' else None
    handles = {}
    for role in wanted:
        keyset_path = join(path, keysets[role]['file'])
        try:
            text = read_text(keyset_path, what=f'{role} keyset')
        except NovationError as e:
            raise KeyringError(str(e)) from None
        handles[role] = _parse_keyset(text, role, keyset_path, wrap, doc.get('master_key_uri'))
        try:
            _primitive_of(handles[role], _primitive_class(role))
        except (tink.TinkError, KeyError):
            raise KeyringError(f'{keyset_path}: the keyset for role {role!r} is not of the '
                               f'kind this role needs') from None
    return Keyring(path, doc, handles)


def _parse_keyset(text, role, keyset_path, wrap, master_key_uri):
    # Tink's messages may quote the keyset; ours name the file only.
    if wrap is None:
        try:
            return tink.json_proto_keyset_format.parse(text, secret_key_access.TOKEN)
        except Exception:
            raise KeyringError(f'{keyset_path}: not a valid cleartext Tink keyset for role '
                               f'{role!r}') from None
    try:
        return tink.json_proto_keyset_format.parse_encrypted(text, wrap,
                                                             keyset_associated_data(role))
    except tink.TinkError:
        raise KeyringError(f'{keyset_path}: the master key {display_uri(master_key_uri)} does '
                           f'not open this keyset (wrong master key, or the file was changed)'
                           ) from None
    except Exception as e:  # the KMS could not be reached or refused the call
        raise KeyringError(f'{keyset_path}: the KMS behind {display_uri(master_key_uri)} '
                           f'failed: {first_line(e)}') from None


_CACHE = {}
_CACHE_LOCK = threading.Lock()


def cached_keyring(path: str, roles: Sequence[str]) -> Keyring:
    """``load_keyring`` without the warning, once per worker process for each (path, roles).

    The key includes ``keyring.json`` itself, so a rotated keyring is loaded afresh.
    """
    key = (path, tuple(roles), _doc_text(path))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_keyring(path, roles, warn=False)
        return _CACHE[key]
