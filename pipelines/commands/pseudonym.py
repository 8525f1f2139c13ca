"""``novation pseudonym``: compute the pseudonym of a value you already hold."""

import argparse

from pipelines.options import add_keys

SYNOPSIS = (
    'novation pseudonym --keys DIR (--domain D | --run RUN_DIR --field TABLE.FIELD) '
     '(VALUE... | --in FILE)',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    pseudo = sub.add_parser(
        'pseudonym', help='compute the pseudonym of a value you already hold (pseudonym key)',
        description='Print the pseudonym that method hash gives each value: hex of the first 16 '
                    'bytes of HMAC-SHA256 under the keyring\'s pseudonym key, over the domain '
                    '(its UTF-8 length as 2 bytes big-endian, then the domain) followed by the '
                    'value\'s UTF-8 text. The domain is the field\'s (its category unless the '
                    'policy names one; --run and --field read it from a run\'s manifest); '
                    'pseudonyms in text scrubbed with replace: pseudonym use the identifier\'s '
                    'kind (e.g. cn_mobile). One pseudonym a line, in the order given; the '
                    'values are not printed.')
    add_keys(pseudo, 'its pseudonym key')
    pseudo.add_argument('--domain', help='pseudonym domain, e.g. customer_id or cn_mobile')
    pseudo.add_argument('--run', metavar='RUN_DIR', help='a run whose manifest gives the domain')
    pseudo.add_argument('--field', metavar='TABLE.FIELD', help='hashed field (with --run)')
    pseudo.add_argument('values', nargs='*', metavar='VALUE', help='values to pseudonymize')
    pseudo.add_argument('--in', dest='infile', metavar='FILE',
                        help='read values from FILE, one per line')
    return pseudo


def main(call) -> int:
    args = call.args
    parser = call.parser
    from pipelines.decrypt import hash_domain, load_manifest, pseudonyms
    from transforms.common.files import read_text
    if bool(args.domain) == bool(args.run or args.field) or bool(args.run) != bool(args.field):
        parser.error('give --domain D, or --run RUN_DIR with --field TABLE.FIELD')
    if bool(args.values) == bool(args.infile):
        parser.error('give values or --in FILE (not both)')
    domain = args.domain or hash_domain(load_manifest(args.run, args.keys), args.field)
    values = args.values or [line.rstrip('\r\n') for line in
                             read_text(args.infile, what='value file').splitlines()
                             if line.strip()]
    for pseudonym in pseudonyms(args.keys, domain, values):
        print(pseudonym)
    return 0
