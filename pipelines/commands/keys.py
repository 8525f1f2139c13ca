"""``novation keys``: create, inspect, rotate, extend and share keyrings."""

import argparse
import os

SYNOPSIS = (
    'novation keys init DIR [--master-key URI] [--column NAME]...',
    'novation keys show DIR',
    'novation keys rotate DIR [--role ROLE]... [--audit OUT_DIR]',
    'novation keys add DIR ROLE...',
    'novation keys share SOURCE DEST (--role ROLE... | --holder NAME --config FILE)',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    keys = sub.add_parser('keys', help='create, inspect, rotate and extend keyrings',
                          description='Manage keyrings: one Tink keyset per role, stored '
                                      'encrypted under a KMS master key or, for demos and '
                                      'tests, in clear.')
    keys_sub = keys.add_subparsers(dest='keys_command', required=True, metavar='ACTION')
    init = keys_sub.add_parser(
        'init', help='create a new keyring',
        description='Create a keyring with the roles pseudonym, token, data.footer, '
                    'data.internal, data.personal, data.sensitive, data.avro, deadletter, '
                    'notice and manifest (and column.NAME for each --column). With '
                    '--master-key every keyset is encrypted under that master key (Tink KMS '
                    'envelope); without it keysets are stored in clear JSON, for demos and '
                    'tests only.')
    init.add_argument('directory', help='new or empty local directory')
    init.add_argument('--master-key', metavar='URI',
                      help='gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K (needs '
                           "novation[gcp]) or local-kms://PATH (an AEAD keyset file kept apart "
                           'from the keyring; created if missing)')
    init.add_argument('--column', action='append', default=[], metavar='NAME',
                      help='also create column.NAME, the own key of columns masked with '
                           '"encrypt" (NAME is TABLE.FIELD unless the policy names a key); '
                           'repeatable')
    show = keys_sub.add_parser(
        'show', help='list roles, key ids, status and creation times (never key material)',
        description='List every role of a keyring with its key ids, which one is primary, '
                    'their status and creation times. Key material is never printed.')
    show.add_argument('directory', help='keyring directory (local or gs://)')
    rotate = keys_sub.add_parser(
        'rotate', help='add a new primary key; files written before stay decryptable',
        description='Give roles a new primary key. Old keys stay in the keyset, so files '
                    'written before still decrypt; new files use the new key. By default '
                    'every role but pseudonym and token rotates (data.*, column.*, deadletter, '
                    'notice, manifest). pseudonym and token rotate '
                    'only when named: that changes every pseudonym and token, and joins with '
                    'earlier deliveries break.')
    rotate.add_argument('directory', help='local keyring directory')
    rotate.add_argument('--role', action='append', default=[], metavar='ROLE',
                        help='a role to rotate (repeatable; default: every role but '
                             'pseudonym and token)')
    rotate.add_argument('--audit', metavar='OUT_DIR',
                        help='record the rotation (roles, new key ids) in the audit log of '
                             'this output root')
    add = keys_sub.add_parser(
        'add', help='add keysets for new roles (e.g. column.customers.mobile)',
        description='Add a keyset for each new role, e.g. column.customers.mobile for a '
                    'column masked with "encrypt", under the keyring\'s protection.')
    add.add_argument('directory', help='local keyring directory')
    add.add_argument('roles', nargs='+', metavar='ROLE', help='role to add')
    share = keys_sub.add_parser(
        'share', help='copy some roles into a new keyring for a key holder',
        description='Create a keyring at DEST holding the named roles of the keyring at '
                    'SOURCE (same keys, same protection), to give a key holder only what they '
                    'read: the acquirer\'s data team data.* (or data.avro), a compliance '
                    'operator deadletter. The manifest role is always added as its public '
                    'half: it checks the seal of every manifest and cannot make one. Share '
                    'again after rotating the manifest key. Give the roles with --role, or '
                    'name a holder of the config\'s key_holders (the plan\'s "Who can read '
                    'what") with --holder and --config.')
    share.add_argument('directory', metavar='SOURCE', help='local keyring directory')
    share.add_argument('destination', metavar='DEST', help='new local directory')
    share.add_argument('--role', action='append', metavar='ROLE', dest='roles',
                       help='a role to give (repeatable)')
    share.add_argument('--holder', metavar='NAME',
                       help='give the roles the config\'s key_holders name for NAME')
    share.add_argument('--config', metavar='FILE', help='the migration config (with --holder)')
    return keys


def main(call) -> int:
    args = call.args
    from transforms.keys import admin
    from transforms.keys import keyring as kr
    from transforms.keys.roles import DETERMINISTIC_ROLES
    path = args.directory
    if args.keys_command == 'init':
        uri = args.master_key
        if uri and uri.startswith(kr.LOCAL_KMS):
            local = uri[len(kr.LOCAL_KMS):]
            if not local:
                raise kr.KeyringError(f'--master-key {uri}: give the path of the master key '
                                      f'file after {kr.LOCAL_KMS}')
            if not os.path.exists(local):
                admin.create_local_master_key(local)
                print(f'created local master key {local}: keep it apart from the keyring '
                      f'and back it up; without it the keyring cannot be opened')
        keyring = admin.init_keyring(path, master_key_uri=uri, columns=args.column)
        print(f'keyring created in {path}')
        _print_keys(keyring)
        if keyring.protection == 'cleartext':
            print(f'warning: {kr.CLEARTEXT_WARNING}')
    elif args.keys_command == 'show':
        _print_keys(kr.load_keyring(path))
    elif args.keys_command == 'add':
        admin.add_roles(path, args.roles)
        print(f'added {", ".join(args.roles)} to {path}')
    elif args.keys_command == 'share':
        shared = admin.share_keyring(path, args.destination, _roles_to_share(args))
        print(f'keyring {args.destination} created with {", ".join(shared.roles)} of {path} '
              f'(manifest: the public half, to check seals)')
    else:
        roles = args.role or [r for r in kr.load_keyring(path, warn=False).roles
                              if r not in DETERMINISTIC_ROLES]
        rotated = admin.rotate_keyring(path, roles)
        for role, (old, new) in rotated.items():
            print(f'  {role:24s} primary key {old} -> {new}')
        if args.audit:
            from transforms.commit.audit import append_event
            append_event(args.audit, 'keys_rotated', keys=path,
                         keyring=os.path.basename(path.rstrip('/')),
                         roles={role: {'from': old, 'to': new}
                                for role, (old, new) in rotated.items()})
        changed = sorted(set(roles) & set(DETERMINISTIC_ROLES))
        if changed:
            print(f'warning: {", ".join(changed)} rotated: new pseudonyms/tokens differ from '
                  f'those of earlier deliveries, so joins with them break')
        print(f'rotated {len(roles)} role(s) in {path}; files written before still decrypt')
    return 0


def _roles_to_share(args):
    """The roles ``keys share`` gives: --role, or the config's key_holders entry for --holder."""
    from transforms.common.errors import ConfigError
    if bool(args.roles) == bool(args.holder):
        raise ConfigError('keys share: give the roles with --role, or a holder with --holder '
                          'and --config (not both)')
    if args.roles:
        return args.roles
    if not args.config:
        raise ConfigError('keys share: --holder needs --config, whose key_holders name the '
                          'holder\'s roles')
    from config import load_config
    held = dict(load_config(args.config).key_holders)
    if args.holder not in held:
        raise ConfigError(f'{args.config}: key_holders: no holder {args.holder[:100]!r}; '
                          f'holders: {", ".join(held) or "none named"}')
    return list(held[args.holder])


def _print_keys(keyring):
    from transforms.keys.keyring import display_uri
    print(f'protection: {keyring.protection}'
          + (f' (master key {display_uri(keyring.master_key_uri)})'
             if keyring.protection == 'kms' else ''))
    rows = keyring.describe()
    width = max(len(r['role']) for r in rows)
    print(f'  {"role":{width}s} {"key id":>10s}  {"primitive":22s} {"status":8s} created')
    for row in rows:
        mark = '*' if row['primary'] else ' '
        print(f'  {row["role"]:{width}s} {row["key_id"]:>10d}{mark} {row["primitive"]:22s} '
              f'{row["status"]:8s} {row["created_at"]}')
    print('  (* primary: new data uses it; the others still decrypt)')
