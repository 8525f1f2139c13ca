"""``novation audit``: verify or show the audit log of an output root."""

import argparse

from pipelines.options import add_keys

SYNOPSIS = (
    'novation audit verify|show OUT_DIR [--keys DIR]',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    audit = sub.add_parser(
        'audit', help='verify or show the audit log of an output root',
        description='Every run, stream, review decision, sign-off, replay, clean (and key '
                    'rotation given --audit) appends a record to OUT_DIR/audit/: one JSON file '
                    'each, holding the sha256 of the record before it. verify checks the chain '
                    '(an edited, removed or reordered record breaks it) and that each committed '
                    'run\'s manifest.json and each stream\'s cutover.json is the one recorded; '
                    'exits 1 on any problem. show lists the records. The log holds ids, hashes, '
                    'counts and staff names, no customer data.')
    audit_sub = audit.add_subparsers(dest='audit_command', required=True, metavar='ACTION')
    for action, text in (('verify', 'check the chain and the manifests it names'),
                         ('show', 'list the records, oldest first')):
        a = audit_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + '.')
        a.add_argument('out_dir', metavar='OUT_DIR', help='an output root (output.path)')
        if action == 'verify':
            add_keys(a, 'its manifest key, the public half as shared is enough: also check '
                        'the seals that anchor the chain', required=False)
    return audit


def main(call) -> int:
    args = call.args
    from transforms.commit.audit import read_log, verify_log
    if args.audit_command == 'show':
        for r in read_log(args.out_dir):
            facts = ', '.join(f'{k} {v}' for k, v in r.items()
                              if k not in ('seq', 'at', 'event', 'sha256', 'prev_sha256',
                                           'seal'))
            print(f'{r.get("seq", "?"):>6}  {r.get("at", "")}  {r.get("event", "?"):15s} '
                  f'{facts}' + ('  [sealed]' if 'seal' in r else ''))
        return 0
    keyring = None
    if args.keys:
        from transforms.keys.keyring import READ_HINT, load_keyring
        from transforms.keys.seal import SEAL_ROLE
        keyring = load_keyring(args.keys, hint=READ_HINT, warn=False)
        keyring.require([SEAL_ROLE], ' (it checks the seals of the audit log)')
    result = verify_log(args.out_dir, keyring)
    if result['problems']:
        print(f'audit log of {args.out_dir}: BROKEN ({len(result["problems"])} problem(s) in '
              f'{result["records"]} records)')
        for p in result['problems']:
            print(f'  {p}')
        return 1
    print(f'audit log of {args.out_dir}: intact ({result["records"]} records, chain unbroken; '
          f'{result["runs"]} committed run(s) and {result["streams"]} cut-over stream(s), '
          f'each manifest the one recorded)')
    if result['anchored'] is None:
        print('  seals not checked: give --keys DIR to check that no record was edited and the '
              'chain recomputed')
    elif result['unanchored']:
        print(f'  sealed under the manifest key up to record {result["anchored"]}; the newest '
              f'{len(result["unanchored"])} record(s) ({", ".join(result["unanchored"])}) are '
              f'not sealed (written without the manifest key\'s private half): the next run '
              f'seals them')
    else:
        print(f'  sealed under the manifest key up to its newest record ({result["anchored"]})')
    return 0
