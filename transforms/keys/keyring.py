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

import datetime
import json
import logging
import os
import threading
from typing import Dict, Optional, Sequence

import tink
from tink import aead, daead, prf, secret_key_access, signature, streaming_aead
from tink.proto import tink_pb2

from transforms.common.errors import KeyringError, NovationError
from transforms.common.files import has_scheme, join, read_text
from transforms.keys.roles import BASE_ROLES, COLUMN_PREFIX, ROLES, column_role

__all__ = ['Keyring', 'add_roles', 'cached_keyring',
           'column_role', 'display_uri', 'init_keyring', 'load_keyring', 'rotate_keyring',
           'share_keyring']

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

_AEAD = aead.aead_key_templates.AES256_GCM
_BY_KIND = {  # the Tink template and primitive of each kind of role (transforms.keys.roles)
    'prf': (prf.prf_key_templates.HMAC_SHA256, prf.PrfSet),
    'daead': (daead.deterministic_aead_key_templates.AES256_SIV, daead.DeterministicAead),
    'aead': (_AEAD, aead.Aead),
    'streaming_aead': (streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB,
                       streaming_aead.StreamingAead),
    # a reader of a seal holds the public half alone, so the primitive is the verifier
    'signature': (signature.signature_key_templates.ED25519, signature.PublicKeyVerify),
}
_TEMPLATES = {role.name: _BY_KIND[role.kind][0] for role in ROLES}
_PRIMITIVES = {role.name: _BY_KIND[role.kind][1] for role in ROLES}


def _template(role):
    return _AEAD if role.startswith(COLUMN_PREFIX) else _TEMPLATES[role]


def _primitive_class(role):
    return aead.Aead if role.startswith(COLUMN_PREFIX) else _PRIMITIVES[role]


def _check_role_name(role):
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
            raise KeyringError(f'{uri}: cannot use this Cloud KMS key: {_first_line(e)}'
                               ) from None
    else:
        try:
            remote = tink.kms_client_from_uri(uri).get_aead(uri)
        except tink.TinkError:
            raise KeyringError(f'master key {display_uri(uri)}: unsupported URI; allowed: '
                               f'{GCP_KMS}projects/P/locations/L/keyRings/R/cryptoKeys/K, '
                               f'{LOCAL_KMS}PATH') from None
    return aead.KmsEnvelopeAead(_AEAD, remote)


def _first_line(exc) -> str:
    text = str(exc).strip()
    return f'{type(exc).__name__}: {text.splitlines()[0]}' if text else type(exc).__name__


def create_local_master_key(path: str) -> None:
    """A new AES256_GCM keyset at ``path`` (mode 0600) to act as an on-premises master key."""
    handle = tink.new_keyset_handle(_AEAD)
    _write_private(path, tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN))


# ---------------------------------------------------------------------------------------------
# Creating, extending and rotating keyrings (local directories)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _write_private(path: str, text: str, *, replace: bool = False) -> None:
    """Write a file readable by its owner only; replacing goes through a rename (atomic)."""
    target = path + '.tmp' if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(text)
    if replace:
        os.replace(target, path)


def _local_dir(directory):
    if has_scheme(directory):
        raise KeyringError(f'{directory}: keyrings are created and changed in a local directory;'
                           f' copy it to its bucket afterwards')
    return directory


def init_keyring(directory: str, *, master_key_uri: Optional[str] = None,
                 columns: Sequence[str] = ()) -> Keyring:
    """Create a keyring with every base role (and ``column.NAME`` for ``columns``).

    Without ``master_key_uri`` the keysets are stored in clear (demo/test only).
    """
    _local_dir(directory)
    if os.path.exists(os.path.join(directory, KEYRING_FILE)):
        raise KeyringError(f'{directory} already holds a keyring; refusing to overwrite it')
    roles = list(BASE_ROLES) + [column_role(c) for c in columns]
    for role in roles:
        _check_role_name(role)
    wrap = master_key_aead(master_key_uri) if master_key_uri else None
    os.makedirs(directory, exist_ok=True)
    doc = {'format': KEYRING_FORMAT,
           'protection': 'kms' if wrap else 'cleartext',
           **({'master_key_uri': master_key_uri} if wrap else {'warning': CLEARTEXT_WARNING}),
           'created_at': _now(),
           'keysets': {}}
    for role in roles:
        _store(directory, doc, role, tink.new_keyset_handle(_template(role)), wrap, new=True)
    _save_doc(directory, doc, new=True)
    return load_keyring(directory, warn=False)


def add_roles(directory: str, roles: Sequence[str]) -> Keyring:
    """Add keysets for new roles (e.g. ``column.mobile``) to an existing keyring."""
    doc, wrap = _open_for_change(directory)
    for role in roles:
        _check_role_name(role)
        if role in doc['keysets']:
            raise KeyringError(f'keyring {directory} already has a {role!r} keyset; use '
                               f'`novation keys rotate` to add a key to it')
    for role in roles:
        _store(directory, doc, role, tink.new_keyset_handle(_template(role)), wrap, new=True)
    _save_doc(directory, doc)
    return load_keyring(directory, warn=False)


def rotate_keyring(directory: str, roles: Sequence[str]) -> Dict[str, tuple]:
    """Give each role a new primary key; old keys stay so earlier files still decrypt.

    Returns role -> (old primary id, new primary id).
    """
    doc, wrap = _open_for_change(directory)
    keyring = load_keyring(directory, warn=False)
    keyring.require(roles)
    changed = {}
    for role in roles:
        old = keyring._handles[role]
        new = _with_new_primary(old, _template(role))
        _store(directory, doc, role, new, wrap)
        changed[role] = (old.keyset_info().primary_key_id, new.keyset_info().primary_key_id)
    _save_doc(directory, doc)
    return changed


def share_keyring(source: str, destination: str, roles: Sequence[str]) -> Keyring:
    """A new keyring at ``destination`` holding ``roles`` of ``source`` (same keys, same
    protection), for a key holder: the acquirer's data team, a compliance operator. The
    ``manifest`` role is always given, as its public half only: enough to check every seal,
    never to forge one."""
    _local_dir(destination)
    if os.path.exists(os.path.join(destination, KEYRING_FILE)):
        raise KeyringError(f'{destination} already holds a keyring; refusing to overwrite it')
    doc, wrap = _open_for_change(source)
    keyring = load_keyring(source, warn=False)
    keyring.require(roles)
    os.makedirs(destination, exist_ok=True)
    shared = {k: v for k, v in doc.items() if k != 'keysets'}
    shared.update(created_at=_now(), keysets={})
    for role in sorted(set(roles) | ({'manifest'} & set(keyring.roles))):
        handle = keyring._handles[role]
        if role == 'manifest':
            handle = tink.json_proto_keyset_format.parse_without_secret(
                keyring.public_keyset(role))
        _store(destination, shared, role, handle, wrap, new=True)
        shared['keysets'][role]['created'] = dict(doc['keysets'][role].get('created', {}))
    _save_doc(destination, shared, new=True)
    return load_keyring(destination, warn=False)


def _open_for_change(directory):
    _local_dir(directory)
    doc = _read_doc(directory)
    wrap = master_key_aead(doc['master_key_uri']) if doc['protection'] == 'kms' else None
    return doc, wrap


def _with_new_primary(handle, template):
    keyset = tink_pb2.Keyset.FromString(
        tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN))
    used = {k.key_id for k in keyset.key}
    while True:
        fresh = tink_pb2.Keyset.FromString(tink.proto_keyset_format.serialize(
            tink.new_keyset_handle(template), secret_key_access.TOKEN)).key[0]
        if fresh.key_id not in used:
            break
    keyset.key.append(fresh)
    keyset.primary_key_id = fresh.key_id
    return tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)


def _store(directory, doc, role, handle, wrap, *, new=False):
    """Write one role's keyset file and record its keys' creation times."""
    entry = doc['keysets'].setdefault(role, {
        'file': f'{role}.json' if wrap else f'{role}.cleartext.json', 'created': {}})
    if wrap:
        try:
            text = tink.json_proto_keyset_format.serialize_encrypted(handle, wrap, _ad(role))
        except Exception as e:  # the KMS could not be reached or refused the call
            raise KeyringError(f'the KMS behind {display_uri(doc.get("master_key_uri"))} '
                               f'failed: {_first_line(e)}') from None
    else:
        text = tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    _write_private(os.path.join(directory, entry['file']), text, replace=not new)
    for key in handle.keyset_info().key_info:
        entry['created'].setdefault(str(key.key_id), _now())


def _save_doc(directory, doc, *, new=False):
    _write_private(os.path.join(directory, KEYRING_FILE), json.dumps(doc, indent=2) + '\n',
                   replace=not new)


def _ad(role):
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


def _read_doc(path, hint=CREATE_HINT):
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
    doc = _read_doc(path, hint)
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
        return tink.json_proto_keyset_format.parse_encrypted(text, wrap, _ad(role))
    except tink.TinkError:
        raise KeyringError(f'{keyset_path}: the master key {display_uri(master_key_uri)} does '
                           f'not open this keyset (wrong master key, or the file was changed)'
                           ) from None
    except Exception as e:  # the KMS could not be reached or refused the call
        raise KeyringError(f'{keyset_path}: the KMS behind {display_uri(master_key_uri)} '
                           f'failed: {_first_line(e)}') from None


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
