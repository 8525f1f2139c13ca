"""``novation detokenize``: reverse tokenized values of a run (token key holders only)."""

import argparse
import sys

from pipelines.options import add_keys

SYNOPSIS = (
    'novation detokenize --run RUN_DIR --keys DIR --field TABLE.FIELD (TOKEN... | --in '
     'FILE) [--out FILE.csv]',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    detok = sub.add_parser(
        'detokenize', help='reverse tokenized values of a run (token key holders only)',
        description='Turn tokens of a tokenized field back into the original values, with the '
                    'token key. Prints "token<TAB>value" lines, or writes a CSV (token,value) '
                    'with --out. Invalid tokens are reported and left empty. Fields masked with '
                    '"hash" cannot be reversed: their pseudonyms are one-way.')
    detok.add_argument('--run', required=True, metavar='RUN_DIR',
                       help='OUT/<run_id> of the run that delivered the tokens (its manifest '
                            'says how the field was masked)')
    add_keys(detok, 'its token key')
    detok.add_argument('--field', required=True, metavar='TABLE.FIELD', help='tokenized field')
    detok.add_argument('tokens', nargs='*', metavar='TOKEN', help='tokens to reverse')
    detok.add_argument('--in', dest='infile', metavar='FILE',
                       help='read tokens from FILE, one per line (the batch form)')
    detok.add_argument('--out', metavar='FILE', help='write token,value CSV to FILE')
    return detok


def main(call) -> int:
    args = call.args
    parser = call.parser
    from pipelines.decrypt import detokenize
    from transforms.common.files import read_text
    if bool(args.tokens) == bool(args.infile):
        parser.error('give tokens or --in FILE (not both)')
    tokens = args.tokens or [line.strip() for line in
                             read_text(args.infile, what='token file').splitlines()
                             if line.strip()]
    pairs = detokenize(args.run, keys=args.keys, field=args.field, tokens=tokens)
    bad = sum(1 for _, value in pairs if value is None)
    if args.out:
        import csv
        with open(args.out, 'w', encoding='utf-8', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['token', 'value'])
            writer.writerows((t, '' if v is None else v) for t, v in pairs)
        print(f'{len(pairs) - bad} of {len(pairs)} tokens of {args.field} reversed into '
              f'{args.out}')
    else:
        for token, value in pairs:
            print(f'{token}\t{"" if value is None else value}')
    if bad:
        print(f'novation: {bad} token(s) are not valid tokens of {args.field} under this key',
              file=sys.stderr)
        return 1
    return 0
