"""``novation plan``: what a run will do to every field, before any data moves."""

import argparse

SYNOPSIS = (
    'novation plan --config FILE [--format text|md|json] [--out FILE]',
    'novation plan --diff A B',
)
TAKES_BEAM_OPTIONS = False
RAW_ARGUMENTS = False


def add_parser(sub) -> argparse.ArgumentParser:
    plan = sub.add_parser(
        'plan', help='print what a run will do to every field, before any data moves',
        description='Read the config and its schemas (no seller data) and print the plan: for '
                    'every field of every table its classification and category, the masking '
                    'method and its parameters, the delivered type, the key that protects it '
                    '(so who can read it), and whether it is dropped, withheld without '
                    'separate consent or delivered in clear; the consent rules and the reason '
                    'codes the run can give. The plan has a sha256: every run records it in '
                    'its manifest, and novation run --plan-hash H refuses to start if the config '
                    'no longer gives the approved plan. With --diff, compare two plans, each a '
                    'config or a plan saved with --format json; exits 1 if they differ.')
    plan.add_argument('--config', help='transfer config (YAML)')
    plan.add_argument('--format', dest='plan_format', choices=('text', 'md', 'json'),
                      default='text', help='text (default), md (Markdown) or json')
    plan.add_argument('--out', metavar='FILE', help='write the plan to FILE instead of stdout')
    plan.add_argument('--diff', nargs=2, metavar=('A', 'B'),
                      help='compare plan A with plan B (configs or plan JSON files)')
    return plan


def main(call) -> int:
    args = call.args
    parser = call.parser
    from config import load_config
    from config.plan import build_plan, diff_plans, plan_sha256, render_plan
    if bool(args.config) == bool(args.diff):
        parser.error('give --config FILE, or --diff A B')
    if args.diff:
        a, b = (_load_plan(p) for p in args.diff)
        text = diff_plans(a, b, *args.diff)
        if not text:
            print(f'the plans are the same (sha256 {plan_sha256(a)})')
            return 0
        print(f'the plans differ: {plan_sha256(a)[:16]}... -> {plan_sha256(b)[:16]}...')
        print(text, end='')
        return 1
    config = load_config(args.config)
    from transforms.common.files import exists
    if exists(config.consent.registry) and exists(config.consent.erasures):
        from pipelines.migrate import check_consent_files
        check_consent_files(config)  # a run would stop on it: say so now
    plan = build_plan(config)
    text = render_plan(plan, args.plan_format)
    if args.out:
        import posixpath

        from transforms.common.files import write_whole
        write_whole(posixpath.dirname(args.out) or '.', posixpath.basename(args.out),
                    text.encode('utf-8'))
        print(f'plan sha256 {plan_sha256(plan)} written to {args.out}')
    else:
        print(text, end='' if text.endswith('\n') else '\n')
    return 0


def _load_plan(path):
    """A plan from a config (YAML) or a plan saved with --format json."""
    import json

    from config import load_config
    from config.plan import PLAN_FORMATS, build_plan, plan_sha256
    from transforms.common.errors import ConfigError
    from transforms.common.files import read_text
    if path.lower().endswith('.json'):
        try:
            plan = json.loads(read_text(path, what='plan'))
        except json.JSONDecodeError as e:
            raise ConfigError(f'{path}: not valid JSON (line {e.lineno})') from None
        if not isinstance(plan, dict) or plan.get('format') not in PLAN_FORMATS:
            raise ConfigError(f'{path}: not a plan (novation plan --format json writes one)')
        saved = plan.pop('sha256', None)
        if saved is not None and saved != plan_sha256(plan):
            raise ConfigError(f'{path}: the plan was edited after it was written (its sha256 '
                              f'does not match its content)')
        return plan
    return build_plan(load_config(path))
