"""The run report for compliance operators: ``report.json`` and ``report.html`` next to the
manifest, both from the manifest's own counts (pure functions).

``build_report(manifest, lang)`` says, in plain words and in English or Chinese, what moved and
what did not and why: per table and per source file, refusals by reason with the reason's
meaning and the law behind it, sensitive fields withheld, the customers admitted and refused,
how each field was treated, the keys used (ids only) and the reconciliation of every count.
``render_html(report)`` draws it as one self-contained page (inline CSS and SVG charts, no
script, nothing loaded from the network) that prints well, with the Jinja2 templates in
``templates/`` (autoescaped: every value the page shows is escaped there). Neither holds a
personal value: the manifest holds none, so the report is readable by anyone who may read the
manifest.
"""

import datetime
import os
from typing import Dict, List

import jinja2

from transforms.commit.report_font import font_face
from transforms.common.reasons import DATA_QUALITY_REASONS, REGISTRY
from transforms.commit.report_text import TEXT, law_in

__all__ = ['LANGS', 'REPORT_HTML', 'REPORT_JSON', 'build_epoch_report', 'build_report',
           'build_stream_report', 'render_epoch_html', 'render_html', 'render_stream_html']

REPORT_JSON = 'report.json'
REPORT_HTML = 'report.html'
LANGS = ('en', 'zh')

# reason -> (law, meaning in English, meaning in Chinese), from the registry
REASON_TEXT = {r.code: (r.article, r.report_en, r.report_zh) for r in REGISTRY}


def build_report(manifest: dict, lang: str = 'en') -> dict:
    """The report of a run (pure): what ``report.json`` holds and ``report.html`` shows."""
    assert lang in LANGS, lang
    t = TEXT[lang]
    totals = manifest['totals']
    refused = sum(totals['dead_letters'].values())
    transfer = manifest['transfer']
    reasons_seen = sorted({r for table in manifest['tables'].values()
                           for r, n in table['dead_letters'].items() if n})
    tables = []
    for name, table in manifest['tables'].items():
        dead = {r: n for r, n in table['dead_letters'].items() if n}
        detail = [{**d, 'got': _got(d['got'], lang)} for d in table.get('dead_letter_detail', [])]
        by_field = {}
        for d in detail:
            if d['field'] and d['reason'] in DATA_QUALITY_REASONS:
                by_field[d['field']] = by_field.get(d['field'], 0) + d['count']
        tables.append({'table': name, 'rows_read': table['rows_read'], 'detail': detail,
                       'problems_by_field': dict(sorted(by_field.items())),
                       'rows_written': table['rows_written'],
                       'rows_refused': sum(dead.values()), 'refused_by_reason': dead,
                       'sensitive_withheld_rows': table['sensitive_suppressed_rows'],
                       'fields': [{'field': f['name'], 'classification': f['classification'],
                                   'method': f['masking']} for f in table['fields']],
                       'reconciles': table['rows_read'] == table['rows_written'] +
                       sum(dead.values())})
    sources = [{'table': s['table'], 'file': os.path.basename(s['path']), 'path': s['path'],
                'rows_read': s['rows_read'], 'rows_written': s['rows_written'],
                'rows_refused': sum(s['dead_letters'].values()),
                'refused_by_reason': {r: n for r, n in sorted(s['dead_letters'].items()) if n},
                'reconciles': s['rows_read'] == s['rows_written'] +
                sum(s['dead_letters'].values())}
               for s in manifest['sources']]
    return {
        'format': 'novation-report/1', 'lang': lang, 'run_id': manifest['run_id'],
        'completed_at': manifest['completed_at'],
        'summary': {
            'transfer': t['from_to'].format(
                seller=transfer['seller'], acquirer=transfer['acquirer'],
                source=transfer['source_region'], destination=transfer['destination_region'],
                abroad=t['abroad'] if transfer.get('cross_border') else ''),
            'moved': t['moved'].format(read=f'{totals["rows_read"]:,}',
                                       written=f'{totals["rows_written"]:,}',
                                       refused=f'{refused:,}'),
            'reconciles': t['reconciles'] if all(x['reconciles'] for x in tables + sources)
            else None,
        },
        'totals': {'rows_read': totals['rows_read'], 'rows_written': totals['rows_written'],
                   'rows_refused': refused,
                   'refused_by_reason': {r: n for r, n in totals['dead_letters'].items() if n}},
        'reasons': _reasons(reasons_seen, lang, t),
        'customers': _customers(manifest, t),
        'tables': tables, 'sources': sources,
        'keys': [{'role': role, 'key_id': ids['primary']}
                 for role, ids in sorted(manifest['keys'].items())],
        'risk': _risk(manifest.get('risk'), t),
        'plan': t['plan'].format(sha=manifest['plan_sha256'], checked=t[
            'plan_checked' if manifest.get('plan_checked') else 'plan_unchecked'])
        if manifest.get('plan_sha256') else None,
        'notice': t['notice_text'].format(
            moved=f'{manifest["notice"]["moved"]:,}',
            not_moved=f'{manifest["notice"]["not_moved"]:,}',
            erased=f'{manifest["notice"]["erased_not_listed"]:,}')
        if manifest.get('notice') else None,
        'text': t,
    }


def _risk(risk, t):
    if not risk:
        return None
    text = t['risk_text'].format(
        qis=', '.join(risk['quasi_identifiers']), customers=f'{risk["customers"]:,}',
        classes=f'{risk["classes"]:,}', k=risk['k'], below=f'{risk["customers_below_min_k"]:,}',
        share=f'{risk["share_below_min_k"] * 100:.3g}%', min_k=risk['min_k'],
        highest=f'{risk["highest_risk"]:.3g}', average=f'{risk["average_risk"]:.3g}')
    diversity = [t['risk_l'].format(attribute=name, l=v['l'],
                                    single=f'{v["classes_with_one_value"]:,}')
                 for name, v in risk['l_diversity'].items()]
    return {'k': risk['k'], 'min_k': risk['min_k'], 'text': text, 'l_diversity': diversity,
            'above_target': risk['customers_below_min_k'] > 0,
            'class_sizes': risk['class_sizes']}


def _got(got: str, lang: str) -> str:
    """What was found where a value was expected, in the report's language."""
    if lang == 'en' or not got:
        return got
    if got.startswith('text of '):
        return f'{got.split()[2]} 个字符的文本'
    return {'nothing': '空', 'a number': '数字', 'a boolean': '布尔值'}.get(got, got)


def _customers(manifest, t):
    """The consent picture in the customers' own table: the one whose rows are customers (its
    primary key is its subject key), as far as the manifest can tell: the first table."""
    name, table = next(iter(manifest['tables'].items()))
    dead = table['dead_letters']
    consent = {r: n for r, n in dead.items() if n and r not in DATA_QUALITY_REASONS}
    return {'table': name, 'admitted': table['rows_written'], 'refused': sum(consent.values()),
            'refused_by_reason': consent, 'erasures_honoured': dead.get('erasure_requested', 0),
            'text': t['customers_text'].format(
                table=name, admitted=f'{table["rows_written"]:,}',
                refused=f'{sum(consent.values()):,}',
                erased=f'{dead.get("erasure_requested", 0):,}')}


# ---------------------------------------------------------------------------------------------
# HTML: templates/ (Jinja2, autoescaped) draw what the functions below lay out

_COLOURS = ['#4c78a8', '#f58518', '#e45756', '#72b7b2', '#54a24b', '#eeca3b', '#b279a2',
            '#9d755d']
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                'templates')),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_TEMPLATES.filters['n'] = lambda number: f'{number:,}'


def _render(template: str, report: dict, title: str, subtitle: str, view: dict) -> str:
    """One self-contained page, carrying the CJK glyphs it shows (transforms.commit.report_font):
    readable on a machine without a Chinese font."""
    page = _TEMPLATES.get_template(template).render(
        report=report, t=report['text'], lang=report['lang'], title=title, subtitle=subtitle,
        view=view)
    return page.replace(_FONT_SLOT, font_face(page), 1)


_FONT_SLOT = '/*font*/'


def _text_width(text: str, size: int = 12) -> int:
    """About how wide ``text`` is drawn at ``size`` px: a CJK character is a square, others
    about 0.6 of one."""
    return int(sum(size if ord(c) > 0x2E7F else size * 0.6 for c in str(text))) + 1


def _fit(text: str, width: int) -> str:
    """``text``, cut with an ellipsis at its start if wider than ``width`` (the end of a
    table.field or file name says most)."""
    if _text_width(text) <= width:
        return text
    while text and _text_width('…' + text) > width:
        text = text[1:]
    return '…' + text


def chart(rows: List[Dict], keys: List[str], labels: Dict[str, str], title: str):
    """The layout of a horizontal stacked bar chart (drawn as inline SVG by the template's
    ``bars``): one bar a row, one segment a key; None for no rows."""
    if not rows:
        return None
    bar_h, gap = 18, 8
    label_w = min(360, max(90, max(_text_width(r['label']) for r in rows) + 12))
    width = label_w + 560
    total = max(sum(r['values'].get(k, 0) for k in keys) for r in rows) or 1
    scale = (width - label_w - 70) / total
    bars = []
    for i, r in enumerate(rows):
        x, segments = label_w, []
        for k, colour in zip(keys, _COLOURS * 4):
            n = r['values'].get(k, 0)
            if n:
                w = max(1.0, n * scale)
                segments.append({'x': x, 'w': w, 'colour': colour, 'label': labels[k], 'n': n})
                x += w
        bars.append({'y': gap + i * (bar_h + gap), 'label': str(r['label']),
                     'shown': _fit(str(r['label']), label_w - 12), 'segments': segments,
                     'end': x, 'total': sum(r['values'].get(k, 0) for k in keys)})
    return {'title': title, 'width': width, 'height': len(rows) * (bar_h + gap) + gap,
            'label_w': label_w, 'bar_h': bar_h, 'bars': bars,
            'legend': [(labels[k], c) for k, c in zip(keys, _COLOURS * 4)]}


def row_ranges(rows) -> str:
    """Row numbers as ranges: 1–3, 7, 9–12 (a long run of numbers reads as one range, and
    does not wrap one number a line)."""
    out, rows = [], sorted(set(rows))
    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1] == rows[j] + 1:
            j += 1
        out.append(str(rows[i]) if i == j else f'{rows[i]}–{rows[j]}')
        i = j + 1
    return ', '.join(out)


def _moved_and_refused(items, label, t, title):
    """A chart of records moved and refused, a bar per table or source file."""
    return chart([{'label': x[label], 'values': {'written': x['rows_written'],
                                                 'refused': x['rows_refused']}}
                  for x in items], ['written', 'refused'],
                 {'written': t['written'], 'refused': t['refused']}, title)


def _reason_rows(report) -> list:
    return [({'code': r['reason'], 'small': r['kind']}, r['meaning'], r['law'],
             report['totals']['refused_by_reason'][r['reason']]) for r in report['reasons']]


def _reasons(reasons_seen, lang, t) -> list:
    return [{'reason': r, 'law': law_in(REASON_TEXT[r][0], lang),
             'meaning': REASON_TEXT[r][1 if lang == 'en' else 2],
             'kind': t['kind_quality'] if r in DATA_QUALITY_REASONS else t['kind_consent']}
            for r in reasons_seen]


def render_html(report: dict) -> str:
    """The report as one self-contained HTML page."""
    t = report['text']
    reasons = [r['reason'] for r in report['reasons']]
    risk = report.get('risk')
    details = [(x['table'], d) for x in report['tables'] for d in x['detail']]
    view = {
        'tables_chart': _moved_and_refused(report['tables'], 'table', t, t['by_table']),
        'table_rows': [(x['table'], x['rows_read'], x['rows_written'], x['rows_refused'])
                       for x in report['tables']],
        'reasons_chart': chart([{'label': x['table'], 'values': x['refused_by_reason']}
                                for x in report['tables'] if x['rows_refused']], reasons,
                               {r: r for r in reasons}, t['by_reason']),
        'reason_rows': _reason_rows(report),
        'withheld': [t['sensitive_text'].format(n=f'{x["sensitive_withheld_rows"]:,}',
                                                table=x['table'])
                     for x in report['tables'] if x['sensitive_withheld_rows']],
        'risk_chart': chart([{'label': size, 'values': {'classes': n}}
                             for size, n in list(risk['class_sizes'].items())[:30]],
                            ['classes'], {'classes': t['classes']}, t['risk']) if risk else None,
        'sources_chart': _moved_and_refused(report['sources'], 'file', t, t['by_source']),
        'source_rows': [({'text': s['file'], 'small': s['path']}, s['table'], s['rows_read'],
                         s['rows_written'], s['rows_refused'],
                         ', '.join(f'{r} {n:,}' for r, n in s['refused_by_reason'].items()))
                        for s in report['sources']],
        'fields_chart': chart([{'label': f'{x["table"]}.{field}', 'values': {'count': n}}
                               for x in report['tables']
                               for field, n in x['problems_by_field'].items()],
                              ['count'], {'count': t['count']}, t['by_field']),
        'detail_rows': [
            (table, {'code': d['reason']}, d['field'], d['problem'], d['got'],
             os.path.basename(d['source_file']), d['count'],
             row_ranges(d['first_rows']) + (
                 ' ' + t['more'].format(n=f'{d["count"] - len(d["first_rows"]):,}')
                 if d['count'] > len(d['first_rows']) and d['first_rows'] else ''))
            for table, d in details],
        'field_rows': {x['table']: [(f['field'], f['classification'], f['method'])
                                    for f in x['fields']] for x in report['tables']},
        'reconciliation_rows': [
            (x.get('file', x['table']), x['rows_read'], x['rows_written'], x['rows_refused'],
             {'status': 'ok' if x['reconciles'] else 'bad',
              'text': t['ok'] if x['reconciles'] else '≠'})
            for x in report['tables'] + report['sources']],
        'key_rows': [({'code': k['role']}, {'code': k['key_id']})  # ids, never key material
                     for k in report['keys']],
    }
    return _render('run.html', report, t['title'],
                   f'{t["run"]} {report["run_id"]} · {t["completed"]} {report["completed_at"]}',
                   view)


# ---------------------------------------------------------------------------------------------
# A stream: a report per epoch, and one over every epoch at cut-over


def build_epoch_report(manifest: dict, lang: str = 'en') -> dict:
    """The report of one committed epoch (pure), from its manifest."""
    t = TEXT[lang]
    tables = [{'table': name, 'rows_written': x['rows_written'],
               'ops': {op: x['ops'].get(op, 0) for op in ('c', 'u', 'd', 'r')},
               'rows_refused': sum(x['dead_letters'].values()),
               'refused_by_reason': {r: n for r, n in x['dead_letters'].items() if n}}
              for name, x in manifest['tables'].items()]
    refused = {}
    for x in tables:
        for r, n in x['refused_by_reason'].items():
            refused[r] = refused.get(r, 0) + n
    delivered = sum(x['rows_written'] for x in tables)
    latest = manifest.get('latest_change_at')
    return {'format': 'novation-epoch-report/1', 'lang': lang, 'run_id': manifest['run_id'],
            'epoch': manifest['epoch'], 'committed_at': manifest['committed_at'],
            'summary': t['epoch_moved'].format(delivered=f'{delivered:,}',
                                               refused=f'{sum(refused.values()):,}',
                                               retractions=f'{manifest["retractions"]:,}'),
            'totals': {'rows_written': delivered, 'rows_refused': sum(refused.values()),
                       'refused_by_reason': refused, 'retractions': manifest['retractions'],
                       # every feed event the epoch accounts for, whatever became of it
                       'events': sum(sum(n.values()) if isinstance(n, dict) else n
                                     for c in manifest.get('outcomes', {}).values()
                                     for n in c.values())},
            # how far behind the seller the acquirer was when the epoch landed: from the
            # latest change in it, committed at the seller, to the epoch's commit
            'latest_change_at': latest,
            'lag_seconds': None if not latest else max(0.0, round(
                _seconds(manifest['committed_at']) - _seconds(latest), 1)),
            'reasons': _reasons(sorted(refused), lang, t), 'tables': tables,
            'sources': [{'file': os.path.basename(x['path']), 'path': x['path'],
                         'changes': x.get('changes', 0), 'first_line': x.get('first_line'),
                         'last_line': x.get('last_line')} for x in manifest['sources']],
            'text': t}


def _seconds(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def render_epoch_html(report: dict) -> str:
    t = report['text']
    view = {
        'ops_chart': chart([{'label': x['table'], 'values': {
            'c': x['ops']['c'] + x['ops']['r'], 'u': x['ops']['u'], 'd': x['ops']['d']}}
            for x in report['tables'] if x['rows_written']], list('cud'),
            {'c': t['creates'], 'u': t['updates'], 'd': t['deletes']}, t['ops']),
        'table_rows': [(x['table'], x['ops']['c'] + x['ops']['r'], x['ops']['u'],
                        x['ops']['d'], x['rows_refused']) for x in report['tables']],
        'reason_rows': _reason_rows(report),
        'source_rows': [({'text': x['file'], 'small': x['path']},
                         f'{x["first_line"]}–{x["last_line"]}' if x['first_line'] else '',
                         x['changes']) for x in report['sources']],
    }
    return _render('epoch.html', report, f'{t["epoch_title"]}: {t["epoch"]} {report["epoch"]}',
                   f'{t["stream"]} {report["run_id"]} · {t["epoch"]} {report["epoch"]} · '
                   f'{report["committed_at"]}', view)


def build_stream_report(manifests: list, stream_id: str, lang: str = 'en',
                        cut_over: bool = True) -> dict:
    """The report over every epoch of a stream (pure): at cut-over, or of a live stream's
    epochs so far (``cut_over`` False), with each epoch's pace (feed events a second since the
    epoch before) and lag."""
    t = TEXT[lang]
    epochs = [build_epoch_report(m, lang) for m in sorted(manifests, key=lambda m: m['epoch'])]
    refused = {}
    for e in epochs:
        for r, n in e['totals']['refused_by_reason'].items():
            refused[r] = refused.get(r, 0) + n
    rows, before = [], None
    for e in epochs:
        at = _seconds(e['committed_at'])
        rows.append({'epoch': e['epoch'], 'committed_at': e['committed_at'],
                     'events': e['totals']['events'],
                     'events_per_s': round(e['totals']['events'] / (at - before))
                     if before is not None and at > before else None,
                     'lag_seconds': e['lag_seconds'],
                     'rows_written': e['totals']['rows_written'],
                     'rows_refused': e['totals']['rows_refused'],
                     'retractions': e['totals']['retractions']})
        before = at
    span = _seconds(epochs[-1]['committed_at']) - _seconds(epochs[0]['committed_at']) \
        if epochs else 0
    lags = sorted(e['lag_seconds'] for e in epochs if e['lag_seconds'] is not None)
    totals = {'epochs': len(epochs),
              'rows_written': sum(e['totals']['rows_written'] for e in epochs),
              'rows_refused': sum(refused.values()), 'refused_by_reason': refused,
              'retractions': sum(e['totals']['retractions'] for e in epochs),
              'events': sum(e['totals']['events'] for e in epochs),
              # the first epoch's events came before any span could be timed
              'events_per_s': round(sum(e['totals']['events'] for e in epochs[1:]) / span)
              if span > 0 else None,
              'lag_seconds': {'p50': lags[len(lags) // 2], 'max': lags[-1]} if lags else None}
    summary = t['stream_moved'].format(
        epochs=f'{totals["epochs"]:,}', delivered=f'{totals["rows_written"]:,}',
        refused=f'{totals["rows_refused"]:,}', retractions=f'{totals["retractions"]:,}')
    pace = t['stream_pace'].format(
        events=f'{totals["events"]:,}', rate=_or_dash(totals['events_per_s']),
        p50=_or_dash((totals['lag_seconds'] or {}).get('p50')),
        max=_or_dash((totals['lag_seconds'] or {}).get('max')))
    return {'format': 'novation-stream-report/1', 'lang': lang, 'run_id': stream_id,
            'cut_over': cut_over, 'summary': summary, 'pace': pace, 'totals': totals,
            'reasons': _reasons(sorted(refused), lang, t), 'epochs': rows, 'text': t}


def _or_dash(value) -> str:
    return '–' if value is None else f'{value:,}'


def render_stream_html(report: dict) -> str:
    t = report['text']
    view = {
        'epochs_chart': chart(
            [{'label': f'{t["epoch"]} {e["epoch"]}',
              'values': {'written': e['rows_written'], 'refused': e['rows_refused'],
                         'retractions': e['retractions']}} for e in report['epochs']],
            ['written', 'refused', 'retractions'],
            {'written': t['written'], 'refused': t['refused'], 'retractions': t['retractions']},
            t['by_epoch']),
        'epoch_rows': [(e['epoch'], e['committed_at'], e['events'], _or_dash(e['events_per_s']),
                        _or_dash(e['lag_seconds']), e['rows_written'], e['rows_refused'],
                        e['retractions']) for e in report['epochs']],
        'reason_rows': _reason_rows(report),
    }
    title = t['stream_title'] if report['cut_over'] else t['stream_title_live']
    return _render('stream.html', report, title, f'{t["stream"]} {report["run_id"]}', view)
