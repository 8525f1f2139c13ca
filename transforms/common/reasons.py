"""Reason codes for dead letters: the one list, and the record every refusal becomes.

A dead letter never carries a personal value in clear: the subject key is replaced by its
pseudonym and the raw row is written only inside the encrypted dead-letter files (and not at all
for erasure requests).
"""

import dataclasses
from typing import Optional

__all__ = ['DATA_QUALITY_REASONS', 'REASONS', 'DeadLetter']

# code -> what it means, for the README and the operator report.
REASONS = {
    'malformed': 'a value cannot be read as the schema type, or the row has the wrong number '
                 'of columns',
    'missing_required': 'a field the schema requires (not nullable) is empty',
    'duplicate_key': 'the same primary key appears more than once in the table',
    'no_consent': 'the customer has no live consent for a consent-based purpose of the transfer',
    'consent_withdrawn': 'the customer withdrew consent for a purpose of the transfer',
    'erasure_requested': 'the customer asked for erasure (PIPL Art. 47); the row is not kept',
    'no_cross_border_consent': 'the destination is in another region and the customer has no '
                               'separate consent for cross-border transfer (PIPL Art. 39)',
    'no_primary_key': 'an update or delete in the change feed of a table whose schema declares '
                      'no primary key: the acquirer could not tell which row it changes',
    'implausible_time': 'a change or consent event of the live feed has a time that cannot be '
                        'read without guessing: before stream.not_before, too far ahead of the '
                        'clock, or an integer in no stated unit',
}

# Reasons that point at bad data (or a bad config), counted against deadletter.max_ratio.
# Consent refusals are the law working as intended and never abort a run.
DATA_QUALITY_REASONS = ('malformed', 'missing_required', 'duplicate_key', 'no_primary_key',
                        'implausible_time')

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
