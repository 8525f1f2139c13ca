"""Reason codes for dead letters: the one registry, and the record every refusal becomes.

Each code says what it means, the PIPL article it serves, whether it points at bad data (counted
against ``deadletter.max_ratio``) or is the law working as intended, and its words in the
compliance report (English and Chinese). The config checks, the plan, the manifest, the report
and docs/reason-codes.md (a test compares it) read them from here.

A dead letter never carries a personal value in clear: the subject key is replaced by its
pseudonym and the raw row is written only inside the encrypted dead-letter files (and not at all
for erasure requests).
"""

import dataclasses
from typing import NamedTuple, Optional

__all__ = ['DATA_QUALITY_REASONS', 'REASONS', 'REGISTRY', 'VALUE_REASONS', 'DeadLetter', 'Reason',
           'reasons_table']


class Reason(NamedTuple):
    code: str
    quality: bool     # bad data (or a bad config); else a refusal the law asks for
    article: str      # the PIPL article it serves
    meaning: str      # what it means, for the plan, the manifest and the docs
    report_en: str    # the compliance report's words
    report_zh: str
    stream: bool = False   # only the live feed refuses with it
    value: bool = False    # the refused value of ``field`` is what is wrong (the report
                           # describes what was found there by kind and length)


REGISTRY = (
    Reason('malformed', True, 'PIPL Art. 8',
           'a value cannot be read as the schema type, the row has the wrong number of columns, '
           'a JSON line is no object, or the row holds undecodable bytes',
           'a value cannot be read as the schema type, or the row is broken',
           '值无法按字段类型读取，或该行已损坏', value=True),
    Reason('missing_required', True, 'PIPL Art. 8',
           'a field the schema requires (not nullable) is empty',
           'a field the schema requires is empty', '必填字段为空', value=True),
    Reason('duplicate_key', True, 'PIPL Art. 8',
           'the same primary key appears more than once in the table',
           'the same primary key appears more than once: a person must decide which copy is '
           'right', '同一主键出现多次，需人工确认哪条正确'),
    Reason('no_consent', False, 'PIPL Art. 13, 14',
           'no live consent for a consent-based purpose of the transfer',
           'no live consent for a consent-based purpose of the transfer',
           '该转移目的需要同意，但没有有效同意'),
    Reason('consent_withdrawn', False, 'PIPL Art. 15',
           'the customer withdrew consent for a purpose of the transfer',
           'the customer withdrew consent', '客户已撤回同意'),
    Reason('erasure_requested', False, 'PIPL Art. 47',
           'the customer asked for erasure (PIPL Art. 47); the raw row is not kept',
           'the customer asked for erasure; the row is not kept', '客户要求删除，该行不予保留'),
    Reason('no_cross_border_consent', False, 'PIPL Art. 39',
           'the destination is in another region and there is no separate consent (Art. 39)',
           'no separate consent to a transfer abroad', '没有出境单独同意'),
    Reason('no_primary_key', True, 'PIPL Art. 8',
           'an update or delete of a table whose schema declares no `primary_key`: the acquirer '
           'could not tell which row it changes; such a table takes creates only',
           'an update or delete of a table without a primary key', '无主键表的更新或删除',
           stream=True),
    Reason('implausible_time', True, 'PIPL Art. 8',
           'a change\'s commit time or a consent event\'s time cannot be read without guessing: '
           'an integer in no stated unit that no single unit makes plausible, before '
           '`stream.not_before`, or more than `stream.max_ahead_seconds` ahead of the clock',
           'a live change or consent event whose time cannot be read without guessing',
           '实时变更或同意事件的时间无法确定（单位不明或不合理）', stream=True),
)

# code -> what it means
REASONS = {r.code: r.meaning for r in REGISTRY}
# Reasons that point at bad data (or a bad config), counted against deadletter.max_ratio.
# Consent refusals are the law working as intended and never abort a run.
DATA_QUALITY_REASONS = tuple(r.code for r in REGISTRY if r.quality)
VALUE_REASONS = tuple(r.code for r in REGISTRY if r.value)


def reasons_table() -> str:
    """The registry as the Markdown table of docs/reason-codes.md."""
    lines = ['| reason | kind | PIPL | meaning |', '|---|---|---|---|']
    for r in REGISTRY:
        kind = 'data quality' if r.quality else 'law'
        lines.append(f'| `{r.code}` | {kind} | {r.article.removeprefix("PIPL ")} | '
                     f'{"(stream) " if r.stream else ""}{r.meaning} |')
    return '\n'.join(lines)

STAGES = ('read', 'conform', 'consent')


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One refused row, as it travels through the pipeline (before sealing).

    ``subject`` (the raw subject key) and ``raw`` exist only in memory: sealing replaces the
    subject by its pseudonym and encrypts the raw row, or drops it for erasure requests.
    """
    reason: str
    stage: str
    table: str
    source_file: str
    row: Optional[int]
    field: Optional[str] = None
    problem: Optional[str] = None
    subject: Optional[str] = None
    raw: Optional[dict] = None
    index: int = 0  # a feed line's event (a Canal message's row; -1: a key change's old key)
    # a stream's change refused for consent: what a replay needs to deliver it (op,
    # committed_at in microseconds, the log's source, its position as text, index)
    change: Optional[dict] = None

    def __post_init__(self):
        assert self.reason in REASONS, self.reason
        assert self.stage in STAGES, self.stage
