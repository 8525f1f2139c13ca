"""The compliance report's words, in English and Chinese: headings, sentences and the names
of PIPL's articles. The reasons' own words are in the registry (``transforms.common.reasons``).
Pure.
"""

__all__ = ['TEXT', 'law_in']


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
        'sensitive_text': '{table} 中有 {n} 条记录转移时不含敏感字段：'
                          '客户未就敏感个人信息给予单独同意'
                          '（《个人信息保护法》第二十九条）。',
        'customers': '客户',
        'plan': '计划 sha256 {sha}：{checked}。',
        'plan_checked': '运行前已与经批准的计划核对（--plan-hash）',
        'plan_unchecked': '未与经批准的计划核对（运行时未给出 --plan-hash）',
        'notice_text': '出让方告知清单（《个人信息保护法》第二十二条，以 notice 密钥加密，'
                       '由出让方保存）：'
                       '需告知数据已转移的客户 {moved} 位，数据未转移的客户 {not_moved} 位；'
                       '{erased} 位已请求删除的客户未列入。',
        'customers_text': '{table}（每条记录为一位客户）：准入 {admitted} 位，拒绝 {refused} 位'
                          '（已执行删除请求 {erased} 项）。',
        'fields': '字段及其处理方式', 'field': '字段', 'classification': '分级',
        'method': '处理方式', 'keys': '所用密钥（仅编号）', 'role': '密钥角色',
        'key_id': '密钥编号',
        'reconciliation': '核对', 'check': '核对项', 'ok': '相符',
        'no_refusals': '没有记录被拒绝。', 'glossary': '原因说明',
        'detail': '被拒绝记录明细：需在出让方核查的内容',
        'detail_text': '每类问题、发现位置及前几个源文件行号（从 1 起，CSV '
                       '表头不计）。具体值仅保存在加密的死信中。',
        'problem': '问题', 'got': '实际内容', 'rows': '前几行', 'more': '另有 {n} 行',
        'by_field': '按字段统计的数据质量问题',
        'risk': '重识别风险',
        'risk_text': '交付的准标识符（{qis}）相同的客户无法据此区分。{customers} 位客户分属 '
                     '{classes} '
                     '个等价类，最小的等价类有 {k} 位（k-匿名）。{below} '
                     '位客户（{share}）所在等价类小于 '
                     '{min_k}。检察官模型风险：最高 {highest}，平均 {average}。',
        'risk_l': '{attribute}：等价类中不同取值最少为 {l} 个（l-多样性）；有 {single} '
                  '个等价类中所有客户'
                  '取值相同，仅凭准标识符即可得知。',
        'risk_high': '高于目标：请在交付受让方之前进一步泛化准标识符（如城市泛化为省份、出生年份'
                     '泛化为年代）。',
        'class_size': '等价类大小', 'classes': '等价类数',
        'epoch_title': '流式批次报告', 'stream_title': '流式转移报告（切换）', 'epoch': '批次',
        'stream': '流',
        'epoch_moved': '交付变更 {delivered} 条，拒绝 {refused} 条，撤回 {retractions} '
                       '项（受让方须删除'
                       '其已交付记录的客户，《个人信息保护法》第四十七条）。',
        'stream_moved': '共 {epochs} 个批次：交付变更 {delivered} 条，拒绝 {refused} 条，撤回 '
                        '{retractions} 项。',
        'stream_title_live': '流式转移报告（进行中：截至目前的批次）',
        'stream_pace': '变更事件 {events} 条，从第一个批次到最后一个批次每秒 {rate} 条；'
                       '从出让方的变更到其所在批次：'
                       '中位数 {p50} 秒，最长 {max} 秒。',
        'events': '变更事件', 'rate': '每秒事件', 'lag': '延迟（秒）',
        'ops': '交付的变更', 'creates': '新增', 'updates': '更新', 'deletes': '删除',
        'retractions': '撤回', 'feeds': '涵盖的变更文件', 'lines': '行', 'by_epoch': '各批次变更数',
        'chain': '每个批次记录前一批次的 sha256，缺失或被改动的批次可被发现。',
        'footer': '本报告由本次运行的 manifest.json 生成，'
                  '不含任何个人信息。被拒绝的记录本身保存在加密的'
                  '死信文件中，仅持有 deadletter 密钥者可读。',
    },
}


_ZH_ARTICLES = {'8': '八', '13': '十三', '14': '十四', '15': '十五', '29': '二十九', '39': '三十九',
                '47': '四十七'}


def law_in(text: str, lang: str) -> str:
    """``PIPL Art. 13, 14`` in the report's language."""
    if lang == 'en':
        return text
    numbers = text.replace('PIPL Art. ', '').split(', ')
    return '《个人信息保护法》' + '、'.join(f'第{_ZH_ARTICLES[n]}条' for n in numbers)
