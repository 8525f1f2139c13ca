"""The compliance report: built from the manifest's counts (pure), written by every run next to
its manifest, free of personal values in any encoding, and drawn by a real headless Chromium
with its charts and without a single network request."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from transforms.commit.report import REPORT_HTML, REPORT_JSON, build_report, render_html


def manifest(**dead):
    """A small manifest: customers with ``dead`` refusals, contracts with none."""
    customers_read = 10 + sum(dead.values())
    return {
        'run_id': 'R1', 'completed_at': '2026-12-03T08:00:00+00:00',
        'transfer': {'seller': 'S', 'acquirer': 'A', 'source_region': 'CN',
                     'destination_region': 'HK', 'cross_border': True},
        'keys': {'pseudonym': {'primary': 11, 'keys': [11]},
                 'deadletter': {'primary': 22, 'keys': [22]}},
        'totals': {'rows_read': customers_read + 5, 'rows_written': 15,
                   'dead_letters': {'malformed': dead.get('malformed', 0),
                                    'no_consent': dead.get('no_consent', 0),
                                    'erasure_requested': dead.get('erasure_requested', 0)}},
        'tables': {
            'customers': {'rows_read': customers_read, 'rows_written': 10,
                          'dead_letters': dict(dead), 'sensitive_suppressed_rows': 2,
                          'fields': [{'name': 'customer_id', 'classification': 'personal',
                                      'masking': 'hash'}]},
            'contracts': {'rows_read': 5, 'rows_written': 5, 'dead_letters': {},
                          'sensitive_suppressed_rows': 0,
                          'fields': [{'name': 'contract_id', 'classification': 'internal',
                                      'masking': 'keep'}]}},
        'sources': [{'path': '/exports/customers.csv', 'table': 'customers',
                     'rows_read': customers_read, 'rows_written': 10, 'dead_letters': dict(dead)},
                    {'path': '/exports/contracts.parquet', 'table': 'contracts',
                     'rows_read': 5, 'rows_written': 5, 'dead_letters': {}}]}


@pytest.mark.parametrize('lang, moved, law', [
    ('en', '15 of 19 records moved; 4 were refused and did not move.', 'PIPL Art. 47'),
    ('zh', '共读取 19 条记录，转移 15 条；4 条被拒绝，未转移。', '《个人信息保护法》第四十七条'),
])
def test_the_report_says_what_moved_and_why_not_from_the_manifests_counts(lang, moved, law):
    report = build_report(manifest(malformed=1, no_consent=2, erasure_requested=1), lang)
    assert report['summary']['moved'] == moved
    assert report['summary']['reconciles']
    assert [r['reason'] for r in report['reasons']] == ['erasure_requested', 'malformed',
                                                        'no_consent']
    assert report['reasons'][0]['law'] == law
    [customers, contracts] = report['tables']
    assert (customers['rows_read'], customers['rows_written'], customers['rows_refused']) == \
        (14, 10, 4)
    assert customers['refused_by_reason'] == {'malformed': 1, 'no_consent': 2,
                                              'erasure_requested': 1}
    assert contracts['refused_by_reason'] == {}
    # the consent picture leaves data-quality refusals out
    assert report['customers'] == {**report['customers'], 'admitted': 10, 'refused': 3,
                                   'erasures_honoured': 1}
    assert [s['file'] for s in report['sources']] == ['customers.csv', 'contracts.parquet']
    assert report['keys'] == [{'role': 'deadletter', 'key_id': 22},
                              {'role': 'pseudonym', 'key_id': 11}]
    page = render_html(report)
    assert moved in page and law in page and '<script' not in page
    assert page.count('<rect class="bar"') == 3 + 3 + 3  # tables, reasons, source files


def test_counts_that_do_not_add_up_are_shown_as_such():
    broken = manifest(no_consent=2)
    broken['sources'][0]['rows_written'] = 9
    report = build_report(broken)
    assert report['summary']['reconciles'] is None
    assert '<span class="bad">' in render_html(report)


@pytest.mark.parametrize('name', ['<script>alert(1)</script>', '"><img src=x onerror=1>',
                                  "O'Brien & Sons"])
def test_what_the_manifest_names_is_escaped_wherever_the_page_shows_it(name):
    """Table and file names reach the page from the seller's files: the templates escape all
    of it (Jinja2's autoescape), in text, in attributes and in the charts' labels."""
    m = manifest(no_consent=2)
    m['tables'] = {name: m['tables'].pop('customers'), **m['tables']}
    for source in m['sources']:
        if source['table'] == 'customers':
            source['table'], source['path'] = name, f'exports/{name}.csv'
    page = render_html(build_report(m))
    assert name not in page and '<script' not in page and '<img' not in page
    import html as html_module
    assert html_module.escape(name, quote=True).replace('&#x27;', '&#39;').replace(
        '&quot;', '&#34;') in page


def test_a_run_without_refusals_says_so():
    assert 'No record was refused.' in render_html(build_report(manifest()))


def test_every_run_writes_its_report_next_to_the_manifest(demo_run):
    _, planted, result = demo_run
    report = json.load(open(os.path.join(result.run_dir, REPORT_JSON), encoding='utf-8'))
    m = result.manifest
    assert report['run_id'] == m['run_id']
    assert report['totals'] == {
        'rows_read': m['totals']['rows_read'], 'rows_written': m['totals']['rows_written'],
        'rows_refused': sum(m['totals']['dead_letters'].values()),
        'refused_by_reason': {r: n for r, n in m['totals']['dead_letters'].items() if n}}
    for t in report['tables']:
        assert t['rows_written'] == m['tables'][t['table']]['rows_written']
    assert os.path.exists(os.path.join(result.run_dir, REPORT_HTML))


def test_no_personal_value_is_in_the_report_in_any_encoding(demo_run):
    _, planted, result = demo_run
    values = {v for kind in ('name', 'national_id', 'mobile', 'email', 'bank_card')
              for v in planted.secrets[kind]}
    for name in (REPORT_JSON, REPORT_HTML):
        data = open(os.path.join(result.run_dir, name), 'rb').read()
        for value in values:
            forms = {value.encode('utf-8'), value.encode('gbk', 'ignore'),
                     json.dumps(value).strip('"').encode('ascii')}
            assert not any(f in data for f in forms if len(f) >= 4), f'a value in {name}'


def test_novation_report_writes_it_again_in_chinese_and_an_incomplete_run_is_one_line(
        demo_run, tmp_path):
    workdir, _, result = demo_run
    keys = os.path.join(workdir, 'keys')
    copy = str(tmp_path / 'run')
    shutil.copytree(result.run_dir, copy)
    proc = subprocess.run([sys.executable, '-m', 'pipelines.cli', 'report', copy, '--keys', keys,
                           '--lang', 'zh'], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == os.path.join(copy, REPORT_HTML)
    assert json.load(open(os.path.join(copy, REPORT_JSON), encoding='utf-8'))['lang'] == 'zh'
    os.remove(os.path.join(copy, 'manifest.json'))
    proc = subprocess.run([sys.executable, '-m', 'pipelines.cli', 'report', copy, '--keys',
                           keys], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1
    assert 'has no manifest.json: the run is incomplete' in proc.stderr


CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update',
                 '--disable-sync']


def test_the_report_renders_in_headless_chromium_with_its_charts_and_no_network(
        demo_run, tmp_path):
    from playwright.sync_api import sync_playwright
    _, _, result = demo_run
    chromium = shutil.which('chromium')
    assert chromium, "Debian's chromium is needed (apt-get install chromium; .ci/run does it)"
    page_file = os.path.join(result.run_dir, REPORT_HTML)
    report = json.load(open(os.path.join(result.run_dir, REPORT_JSON), encoding='utf-8'))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={'width': 1000, 'height': 1400})
        requests = []
        page.on('request', lambda r: requests.append(r.url))
        page.goto('file://' + page_file)
        shot = str(tmp_path / 'report.png')
        page.screenshot(path=shot, full_page=True)
        text = page.inner_text('body')
        bars = page.locator('rect.bar')
        boxes = [bars.nth(i).bounding_box() for i in range(bars.count())]
        browser.close()
    assert requests == ['file://' + page_file]  # nothing else, from anywhere
    assert report['summary']['moved'] in text
    for t in report['tables']:
        assert f'{t["rows_written"]:,}' in text and f'{t["rows_refused"]:,}' in text
    segments = sum(1 for t in report['tables'] for n in (t['rows_written'], t['rows_refused'])
                   if n) + sum(len(t['refused_by_reason']) for t in report['tables']) + sum(
        1 for s in report['sources'] for n in (s['rows_written'], s['rows_refused']) if n) + sum(
        len(t['problems_by_field']) for t in report['tables']) + len(
        list(report['risk']['class_sizes'])[:30])
    assert 'Re-identification risk' in text and report['risk']['text'] in text
    assert len(boxes) == segments and all(b and b['width'] >= 1 for b in boxes)
    from PIL import Image
    colours = Image.open(shot).convert('RGB').getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # text and charts drawn, not a blank page


@pytest.mark.parametrize('record, raw, kind', [
    ({'reason': 'malformed', 'field': 'birth_date', 'problem': 'birth_date: expected a date'},
     {'birth_date': '1990-02-30'}, ('malformed', 'birth_date', 'birth_date: expected a date',
                                    'text of 10 characters')),
    ({'reason': 'missing_required', 'field': 'mobile', 'problem': 'required but empty'},
     {'mobile': ''}, ('missing_required', 'mobile', 'required but empty', 'nothing')),
    ({'reason': 'malformed', 'field': 'amount', 'problem': 'amount: not a decimal'},
     {'amount': 1.5}, ('malformed', 'amount', 'amount: not a decimal', 'a number')),
    ({'reason': 'malformed', 'field': 'a, b', 'problem': 'two fields'}, {'a': 'x'},
     ('malformed', 'a, b', 'two fields', '')),                  # no one value to describe
    ({'reason': 'no_consent', 'field': 'customer_id', 'problem': 'no live consent'},
     {'customer_id': 'C1'}, ('no_consent', 'customer_id', 'no live consent', '')),
    ({'reason': 'erasure_requested', 'field': None, 'problem': None}, None,
     ('erasure_requested', '', '', '')),
])
def test_a_dead_letter_is_described_by_its_kind_of_problem_never_its_value(record, raw, kind):
    from transforms.write.deadletter import problem_kind
    assert problem_kind(record, raw) == kind


def test_counts_add_up_and_row_samples_keep_the_first():
    from transforms.write.deadletter import ROW_SAMPLE
    from transforms.commit.manifest import Tally
    tally = Tally()
    assert tally.extract_output(tally.merge_accumulators([
        tally.add_input(tally.add_input(tally.create_accumulator(), 2), 3), 4, None])) == 9
    rows = tally.merge_accumulators([tuple(range(30, 50)), tuple(range(5, 15)), (1,)])
    assert rows == (1,) + tuple(range(5, 15)) + tuple(range(30, 30 + ROW_SAMPLE - 11))


def test_the_detail_names_each_planted_bad_row_by_its_source_row(demo_run):
    _, planted, result = demo_run
    m = result.manifest
    for name, table in m['tables'].items():
        detail = table['dead_letter_detail']
        assert sum(d['count'] for d in detail) == sum(table['dead_letters'].values()), name
        for d in detail:
            assert d['first_rows'] == sorted(d['first_rows'])
            assert len(d['first_rows']) == min(d['count'], 20)
        quality = [d for d in detail if d['reason'] in ('malformed', 'missing_required')]
        found = {row for d in quality for row in d['first_rows']}
        planted_rows = {row for row, reason in planted.bad_rows.get(name, {}).items()
                        if reason in ('malformed', 'missing_required')}
        assert all(d['count'] <= 20 for d in quality)  # so every row is listed
        assert planted_rows and planted_rows <= found, name
    page = open(os.path.join(result.run_dir, REPORT_HTML), encoding='utf-8').read()
    assert 'Refused records in detail' in page and 'text of ' in page
    report = json.load(open(os.path.join(result.run_dir, REPORT_JSON), encoding='utf-8'))
    customers = report['tables'][0]
    assert customers['problems_by_field']['birth_date'] == sum(
        d['count'] for d in customers['detail'] if d['field'] == 'birth_date')
    assert 'Data-quality problems by field' in page


EPOCH = {'run_id': 'live', 'epoch': 3, 'committed_at': '2026-12-03T08:00:05+00:00',
         'latest_change_at': '2026-12-03T08:00:02.500+00:00',
         'outcomes': {'data/wave-0003.jsonl': {'delivered': 7, 'dead_letter': 2,
                                               'not_a_change': {'blank': 1}}},
         'tables': {'customers': {'rows_written': 5, 'ops': {'u': 4, 'r': 1},
                                  'dead_letters': {'consent_withdrawn': 2}},
                    'contracts': {'rows_written': 2, 'ops': {'c': 1, 'd': 1},
                                  'dead_letters': {}}},
         'retractions': 1,
         'sources': [{'path': '/feeds/changes/wave-0003.jsonl', 'first_line': 1,
                      'last_line': 9, 'changes': 9}]}


@pytest.mark.parametrize('lang, summary', [
    ('en', '7 changes delivered, 2 refused, 1 retractions (customers whose delivered rows the '
           'acquirer must delete, PIPL Art. 47).'),
    ('zh', '交付变更 7 条，拒绝 2 条，撤回 1 项（受让方须删除其已交付记录的客户，'
           '《个人信息保护法》第四十七条）。'),
])
def test_an_epoch_and_the_stream_are_reported_from_their_manifests(lang, summary):
    from transforms.commit.report import (build_epoch_report, build_stream_report,
                                          render_epoch_html, render_stream_html)
    report = build_epoch_report(EPOCH, lang)
    assert report['summary'] == summary
    assert report['totals'] == {'rows_written': 7, 'rows_refused': 2,
                                'refused_by_reason': {'consent_withdrawn': 2},
                                'retractions': 1, 'events': 10}
    assert report['lag_seconds'] == 2.5  # from the latest change at the seller to the commit
    page = render_epoch_html(report)
    assert summary in page and page.count('<rect class="bar"') == 2 + 2  # c/u, then c/d
    later = {**EPOCH, 'epoch': 4, 'retractions': 0, 'tables': {
        'customers': {'rows_written': 1, 'ops': {'u': 1}, 'dead_letters': {}}},
        'committed_at': '2026-12-03T08:00:10+00:00', 'latest_change_at': None,
        'outcomes': {'data/wave-0004.jsonl': {'delivered': 1, 'repeat': 4}}}
    stream = build_stream_report([later, EPOCH], 'live', lang, cut_over=False)
    assert [e['epoch'] for e in stream['epochs']] == [3, 4]
    assert stream['totals'] == {'epochs': 2, 'rows_written': 8, 'rows_refused': 2,
                                'refused_by_reason': {'consent_withdrawn': 2},
                                'retractions': 1, 'events': 15, 'events_per_s': 1,
                                'lag_seconds': {'p50': 2.5, 'max': 2.5}}
    # the second epoch's 5 events over the 5 s since the first; an epoch without a change
    # has no lag
    assert [(e['events'], e['events_per_s'], e['lag_seconds']) for e in stream['epochs']] == \
        [(10, None, 2.5), (5, 1, None)]
    page = render_stream_html(stream)
    assert '<script' not in page and stream['pace'] in page
    assert stream['text']['stream_title_live'] in page


@pytest.mark.parametrize('lang', ['en', 'zh'])
def test_the_report_is_readable_without_a_chinese_font_and_fits_the_page(demo_run, tmp_path,
                                                                        lang):
    """Every CJK character on the page is in the font the page carries (the machine running
    the tests has no CJK font of its own); the page is no wider than the window and not
    endlessly tall; key ids are shown as ids."""
    from playwright.sync_api import sync_playwright
    from transforms.commit.manifest import write_report
    from pipelines.decrypt import load_manifest
    workdir, _, result = demo_run
    copy = str(tmp_path / 'run')
    shutil.copytree(result.run_dir, copy)
    write_report(copy, load_manifest(copy, os.path.join(workdir, 'keys')), lang)
    page_file = os.path.join(copy, REPORT_HTML)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which('chromium'),
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={'width': 1000, 'height': 1400})
        page.goto('file://' + page_file)
        text = page.inner_text('body')
        cjk = ''.join(sorted({c for c in text if 0x2E80 <= ord(c) <= 0x9FFF}))
        faces = page.evaluate('''async (chars) => {
            const faces = await document.fonts.load('16px "Novation CJK"', chars);
            return faces.map(f => [f.status, f.unicodeRange]);
        }''', cjk)
        width = page.evaluate('document.documentElement.scrollWidth')
        height = page.evaluate('document.documentElement.scrollHeight')
        key_ids = page.locator('code').all_inner_texts()
        browser.close()
    assert cjk, 'the demo shows Chinese on every report (the seller\'s name)'
    [(status, ranges)] = faces
    covered = {chr(int(r.strip()[2:], 16)) for r in ranges.split(',')}
    assert status == 'loaded' and set(cjk) <= covered
    assert width <= 1000, f'{width} px wide in a 1000 px window'
    assert height < 12_000, f'{height} px tall'
    assert not [k for k in key_ids if ',' in k and k.replace(',', '').isdigit()]


@pytest.mark.parametrize('rows, text', [
    ([], ''), ([7], '7'), ([1, 2, 3], '1–3'), ([1, 2, 3, 7, 9, 10, 11, 12], '1–3, 7, 9–12'),
    ([5, 3, 4, 3], '3–5')])
def test_first_rows_read_as_ranges(rows, text):
    from transforms.commit.report import row_ranges
    assert row_ranges(rows) == text


def test_the_font_carries_only_the_characters_shown():
    from transforms.commit.report_font import font_face
    assert font_face('no Chinese here') == ''
    face = font_face('华融通 华 A')
    assert 'U+534E' in face and 'U+878D' in face and 'U+0041' not in face
    assert face.count('U+') == 3
