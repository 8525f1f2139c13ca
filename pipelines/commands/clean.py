"""``novation clean``: what runs that did not finish left behind."""

import argparse
import os

SYNOPSIS = (
    'novation clean OUT_DIR [--scratch DIR] [--yes]',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    clean = sub.add_parser(
        'clean', help='list, and with --yes remove, what runs that did not finish left behind',
        description='A run killed or aborted leaves its run directory without a manifest '
                    '(nothing in it was delivered) and may leave its encrypted scratch '
                    'directory and temporary folders. This lists each, with its size and why it '
                    'may go; --yes removes them. A run still going holds a lock and is never '
                    'touched; streams are left alone (a restarted stream cleans its own '
                    'unfinished epoch). Local output roots only.')
    clean.add_argument('out_dir', metavar='OUT_DIR', help='the output root (output.path)')
    clean.add_argument('--scratch', metavar='DIR',
                       help='where runs put their scratch directories (--temp_location; '
                            'default: this machine\'s temporary directory)')
    clean.add_argument('--yes', action='store_true', help='remove what is listed')
    return clean


def main(call) -> int:
    args = call.args
    from pipelines.clean import find_leftovers, remove_leftovers
    found = find_leftovers(args.out_dir, args.scratch)
    for item in found:
        print(f'  {item["path"]}  {item["bytes"] / 1e6:,.1f} MB  {item["what"]}')
    total = sum(item['bytes'] for item in found) / 1e6
    if not found:
        print(f'nothing to clean under {args.out_dir}')
    elif args.yes:
        from transforms.commit.audit import append_event
        remove_leftovers(found)
        runs = sorted({os.path.basename(f['path']).removeprefix('novation-').removesuffix(
            '.running') for f in found if not os.path.basename(f['path']).startswith('.temp-')})
        append_event(args.out_dir, 'cleaned', runs=runs, removed=len(found),
                     bytes=sum(item['bytes'] for item in found))
        print(f'removed {len(found)} leftover(s), {total:,.1f} MB (recorded in the audit log)')
    else:
        print(f'{len(found)} leftover(s), {total:,.1f} MB: run again with --yes to remove them')
    return 0
