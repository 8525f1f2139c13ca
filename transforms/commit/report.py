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

__all__ = ['LANGS', 'REPORT_HTML', 'REPORT_JSON', 'build_epoch_report', 'build_report',
           'build_stream_report', 'render_epoch_html', 'render_html', 'render_stream_html']

REPORT_JSON = 'report.json'
REPORT_HTML = 'report.html'
LANGS = ('en', 'zh')

# reason -> (law, meaning in English, meaning in Chinese), from the registry
REASON_TEXT = {r.code: (r.article, r.report_en, r.report_zh) for r in REGISTRY}
DATA_QUALITY = DATA_QUALITY_REASONS

TEXT = {
    'en': {
        'title': 'Transfer report', 'run': 'Run', 'completed': 'Completed',
        'from_to': 'From {seller} to {acquirer} ({source} to {destination}{abroad})',
        'abroad': ', a cross-border transfer',
        'moved': '{written} of {read} records moved; {refused} were refused and did not move.',
        'reconciles': 'Every count reconciles: records read = records moved + records refused, '
                      'for every table and every source file.',
        'by_table': 'Records by table', 'by_reason': 'Refused records by reason and table',
        'by_source': 'Records by source file', 'table': 'Table', 'source': 'Source file',
        'read': 'Read', 'written': 'Moved', 'refused': 'Refused', 'reason': 'Reason',
        'meaning': 'What it means', 'law': 'Law', 'count': 'Records',
        'kind_quality': 'data quality: to fix at the seller',
        'kind_consent': 'consent: the law working as intended',
        'sensitive': 'Sensitive fields withheld',
        'sensitive_text': '{n} records of {table} moved without their sensitive fields: the '
                          'customer gave no separate consent for sensitive data (PIPL Art. 29).',
        'customers': 'Customers',
        'plan': 'Plan sha256 {sha}: {checked}.',
        'plan_checked': 'checked against the approved plan before the run (--plan-hash)',
        'plan_unchecked': 'not checked against an approved plan (the run had no --plan-hash)',
        'notice_text': 'Notification list for the seller (PIPL Art. 22, encrypted under the '
                       'notice key, kept with the seller): {moved} customers to tell that '
                       'their data moved, {not_moved} whose data did not move; {erased} who '
                       'asked for erasure are not listed.',
        'customers_text': 'In {table} (one record per customer): {admitted} admitted, '
                          '{refused} refused ({erased} erasure requests honoured).',
        'fields': 'Fields and how each was treated', 'field': 'Field',
        'classification': 'Classification', 'method': 'Treatment',
        'keys': 'Keys used (ids only)', 'role': 'Key role', 'key_id': 'Key id',
        'reconciliation': 'Reconciliation', 'check': 'Check', 'ok': 'adds up',
        'no_refusals': 'No record was refused.', 'glossary': 'Reasons',
        'detail': 'Refused records in detail: what to look up at the seller',
        'detail_text': 'Each kind of problem, where it was found and the first source rows '
                       '(numbered from 1, a CSV header not counted). The values themselves '
                       'are only in the encrypted dead letters.',
        'problem': 'Problem', 'got': 'Found', 'rows': 'First rows', 'more': 'and {n} more',
        'by_field': 'Data-quality problems by field',
        'risk': 'Re-identification risk',
        'risk_text': 'Customers sharing the same delivered quasi-identifiers ({qis}) cannot be '
                     'told apart by them. {customers} customers fall into {classes} such '
                     'classes; the smallest holds {k} (k-anonymity). {below} customers '
                     '({share}) are in classes smaller than {min_k}. Prosecutor risk: highest '
                     '{highest}, average {average}.',
        'risk_l': '{attribute}: the fewest distinct values in a class is {l} (l-diversity); '
                  'in {single} classes every customer has the same value, so it is known '
                  'from the quasi-identifiers alone.',
        'risk_high': 'Above the target: generalize the quasi-identifiers further (e.g. city to '
                     'province, birth year to decade) before the acquirer receives them.',
        'class_size': 'Class size', 'classes': 'Classes',
        'epoch_title': 'Stream epoch report', 'stream_title': 'Stream report (cut-over)',
        'epoch': 'Epoch', 'stream': 'Stream',
        'epoch_moved': '{delivered} changes delivered, {refused} refused, {retractions} '
                       'retractions (customers whose delivered rows the acquirer must delete, '
                       'PIPL Art. 47).',
        'stream_moved': '{epochs} epochs: {delivered} changes delivered, {refused} refused, '
                        '{retractions} retractions.',
        'stream_title_live': 'Stream report (live: the epochs so far)',
        'stream_pace': '{events} feed events, {rate} a second from the first epoch to the '
                       'last; from a change at the seller to its epoch: median {p50} s, at most '
                       '{max} s.',
        'events': 'Feed events', 'rate': 'Events/s', 'lag': 'Lag (s)',
        'ops': 'Changes delivered', 'creates': 'Creates', 'updates': 'Updates',
        'deletes': 'Deletes', 'retractions': 'Retractions', 'feeds': 'Feed files covered',
        'lines': 'Lines', 'by_epoch': 'Changes by epoch', 'chain': 'Each epoch names the '
        'sha256 of the one before, so a missing or altered epoch shows.',
        'footer': 'Generated from manifest.json of this run; it holds no personal data. The '
                  'refused records themselves are in the encrypted dead letters, readable only '
                  'with the deadletter key.',
    },
    'zh': {
        'title': '数据转移报告', 'run': '运行', 'completed': '完成时间',
        'from_to': '从 {seller} 到 {acquirer}（{source} 至 {destination}{abroad}）',
        'abroad': '，跨境转移',
        'moved': '共读取 {read} 条记录，转移 {written} 条；{refused} 条被拒绝，未转移。',
        'reconciles': '所有数字均已核对：每张表、每个源文件的读取数 = 转移数 + 拒绝数。',
        'by_table': '各表记录数', 'by_reason': '按原因和表统计的拒绝记录',
        'by_source': '各源文件记录数', 'table': '表', 'source': '源文件',
        'read': '读取', 'written': '转移', 'refused': '拒绝', 'reason': '原因',
        'meaning': '含义', 'law': '法律依据', 'count': '记录数',
        'kind_quality': '数据质量：需在出让方修正', 'kind_consent': '同意：依法拒绝',
        'sensitive': '未转移的敏感字段',
        'sensitive_text': '{table} 中有 {n} 条记录转移时不含敏感字段：客户未就敏感个人信息给予单独同意'
                          '（《个人信息保护法》第二十九条）。',
        'customers': '客户',
        'plan': '计划 sha256 {sha}：{checked}。',
        'plan_checked': '运行前已与经批准的计划核对（--plan-hash）',
        'plan_unchecked': '未与经批准的计划核对（运行时未给出 --plan-hash）',
        'notice_text': '出让方告知清单（《个人信息保护法》第二十二条，以 notice 密钥加密，由出让方保存）：'
                       '需告知数据已转移的客户 {moved} 位，数据未转移的客户 {not_moved} 位；'
                       '{erased} 位已请求删除的客户未列入。',
        'customers_text': '{table}（每条记录为一位客户）：准入 {admitted} 位，拒绝 {refused} 位'
                          '（已执行删除请求 {erased} 项）。',
        'fields': '字段及其处理方式', 'field': '字段', 'classification': '分级',
        'method': '处理方式', 'keys': '所用密钥（仅编号）', 'role': '密钥角色', 'key_id': '密钥编号',
        'reconciliation': '核对', 'check': '核对项', 'ok': '相符',
        'no_refusals': '没有记录被拒绝。', 'glossary': '原因说明',
        'detail': '被拒绝记录明细：需在出让方核查的内容',
        'detail_text': '每类问题、发现位置及前几个源文件行号（从 1 起，CSV 表头不计）。具体值仅保存在加密的死信中。',
        'problem': '问题', 'got': '实际内容', 'rows': '前几行', 'more': '另有 {n} 行',
        'by_field': '按字段统计的数据质量问题',
        'risk': '重识别风险',
        'risk_text': '交付的准标识符（{qis}）相同的客户无法据此区分。{customers} 位客户分属 {classes} '
                     '个等价类，最小的等价类有 {k} 位（k-匿名）。{below} 位客户（{share}）所在等价类小于 '
                     '{min_k}。检察官模型风险：最高 {highest}，平均 {average}。',
        'risk_l': '{attribute}：等价类中不同取值最少为 {l} 个（l-多样性）；有 {single} 个等价类中所有客户'
                  '取值相同，仅凭准标识符即可得知。',
        'risk_high': '高于目标：请在交付受让方之前进一步泛化准标识符（如城市泛化为省份、出生年份泛化为年代）。',
        'class_size': '等价类大小', 'classes': '等价类数',
        'epoch_title': '流式批次报告', 'stream_title': '流式转移报告（切换）', 'epoch': '批次',
        'stream': '流',
        'epoch_moved': '交付变更 {delivered} 条，拒绝 {refused} 条，撤回 {retractions} 项（受让方须删除'
                       '其已交付记录的客户，《个人信息保护法》第四十七条）。',
        'stream_moved': '共 {epochs} 个批次：交付变更 {delivered} 条，拒绝 {refused} 条，撤回 {retractions} 项。',
        'stream_title_live': '流式转移报告（进行中：截至目前的批次）',
        'stream_pace': '变更事件 {events} 条，从第一个批次到最后一个批次每秒 {rate} 条；从出让方的变更到其所在批次：'
                       '中位数 {p50} 秒，最长 {max} 秒。',
        'events': '变更事件', 'rate': '每秒事件', 'lag': '延迟（秒）',
        'ops': '交付的变更', 'creates': '新增', 'updates': '更新', 'deletes': '删除',
        'retractions': '撤回', 'feeds': '涵盖的变更文件', 'lines': '行', 'by_epoch': '各批次变更数',
        'chain': '每个批次记录前一批次的 sha256，缺失或被改动的批次可被发现。',
        'footer': '本报告由本次运行的 manifest.json 生成，不含任何个人信息。被拒绝的记录本身保存在加密的'
                  '死信文件中，仅持有 deadletter 密钥者可读。',
    },
}


_ZH_ARTICLES = {'8': '八', '13': '十三', '14': '十四', '15': '十五', '29': '二十九', '39': '三十九',
                '47': '四十七'}


def _law(text: str, lang: str) -> str:
    """``PIPL Art. 13, 14`` in the report's language."""
    if lang == 'en':
        return text
    numbers = text.replace('PIPL Art. ', '').split(', ')
    return '《个人信息保护法》' + '、'.join(f'第{_ZH_ARTICLES[n]}条' for n in numbers)


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
            if d['field'] and d['reason'] in DATA_QUALITY:
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
    consent = {r: n for r, n in dead.items() if n and r not in DATA_QUALITY}
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
    return [{'reason': r, 'law': _law(REASON_TEXT[r][0], lang),
             'meaning': REASON_TEXT[r][1 if lang == 'en' else 2],
             'kind': t['kind_quality'] if r in DATA_QUALITY else t['kind_consent']}
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
