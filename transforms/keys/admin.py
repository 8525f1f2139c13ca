"""Making and changing keyrings: create one (every keyset under a KMS master key, or in clear
for demos), add roles, rotate primary keys, and share some roles with a key holder. Keysets
are written whole under a temporary name, with mode 0600; nothing here prints, logs or puts
key material into an exception message.
"""

import datetime
import json
import os
from typing import Dict, Optional, Sequence

import tink
from tink import secret_key_access
from tink.proto import tink_pb2

from transforms.common.errors import KeyringError
from transforms.common.files import has_scheme
from transforms.keys.keyring import (
    AEAD_TEMPLATE,
    CLEARTEXT_WARNING,
    KEYRING_FILE,
    KEYRING_FORMAT,
    Keyring,
    check_role_name,
    display_uri,
    first_line,
    keyset_associated_data,
    load_keyring,
    master_key_aead,
    read_doc,
    template_for,
)
from transforms.keys.roles import BASE_ROLES, column_role

__all__ = ['add_roles', 'create_local_master_key', 'init_keyring', 'rotate_keyring',
           'share_keyring']


def create_local_master_key(path: str) -> None:
    """A new AES256_GCM keyset at ``path`` (mode 0600) to act as an on-premises master key."""
    handle = tink.new_keyset_handle(AEAD_TEMPLATE)
    _write_private(path, tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN))


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
        check_role_name(role)
    wrap = master_key_aead(master_key_uri) if master_key_uri else None
    os.makedirs(directory, exist_ok=True)
    doc = {'format': KEYRING_FORMAT,
           'protection': 'kms' if wrap else 'cleartext',
           **({'master_key_uri': master_key_uri} if wrap else {'warning': CLEARTEXT_WARNING}),
           'created_at': _now(),
           'keysets': {}}
    for role in roles:
        _store(directory, doc, role, tink.new_keyset_handle(template_for(role)), wrap, new=True)
    _save_doc(directory, doc, new=True)
    return load_keyring(directory, warn=False)


def add_roles(directory: str, roles: Sequence[str]) -> Keyring:
    """Add keysets for new roles (e.g. ``column.mobile``) to an existing keyring."""
    doc, wrap = _open_for_change(directory)
    for role in roles:
        check_role_name(role)
        if role in doc['keysets']:
            raise KeyringError(f'keyring {directory} already has a {role!r} keyset; use '
                               f'`novation keys rotate` to add a key to it')
    for role in roles:
        _store(directory, doc, role, tink.new_keyset_handle(template_for(role)), wrap, new=True)
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
        new = _with_new_primary(old, template_for(role))
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
    doc = read_doc(directory)
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
            text = tink.json_proto_keyset_format.serialize_encrypted(
                handle, wrap, keyset_associated_data(role))
        except Exception as e:  # the KMS could not be reached or refused the call
            raise KeyringError(f'the KMS behind {display_uri(doc.get("master_key_uri"))} '
                               f'failed: {first_line(e)}') from None
    else:
        text = tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    _write_private(os.path.join(directory, entry['file']), text, replace=not new)
    for key in handle.keyset_info().key_info:
        entry['created'].setdefault(str(key.key_id), _now())


def _save_doc(directory, doc, *, new=False):
    _write_private(os.path.join(directory, KEYRING_FILE), json.dumps(doc, indent=2) + '\n',
                   replace=not new)
