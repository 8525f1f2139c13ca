"""Consent decisions (pure): may this customer's records move, and may their sensitive data?

PIPL: each purpose needs a legal basis (Art. 13/14); sensitive data needs separate consent
(Art. 29); a transfer abroad needs separate consent (Art. 39); erased customers never move
(Art. 47). A decision is made once per customer, so a customer refused in one table is refused in
every table.
"""

import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ['VERDICTS', 'VERDICT_CODE', 'ConsentRow', 'Decision', 'decide_subject', 'decide_table',
           'default_decision']


@dataclasses.dataclass(frozen=True)
class ConsentRow:
    purpose: str
    granted: bool
    withdrawn: bool
    sensitive_consent: bool
    cross_border_consent: bool

    @property
    def live(self) -> bool:
        return self.granted and not self.withdrawn


@dataclasses.dataclass(frozen=True)
class Decision:
    reason: Optional[str]  # None: the customer's records may move
    sensitive_ok: bool  # separate consent for sensitive data


def decide_subject(rows: Sequence[ConsentRow], *, erased: bool, purposes: Dict[str, str],
                   cross_border: bool) -> Decision:
    """Decide for one customer.

    ``purposes`` maps each purpose of the transfer to its legal basis (consent|contract). Every
    consent-based purpose needs a live consent (granted, not withdrawn); contract-based purposes
    need none. Separate consents count only on live rows for the transfer's purposes.
    """
    if erased:
        return Decision('erasure_requested', False)
    relevant = [r for r in rows if r.purpose in purposes]
    live = [r for r in relevant if r.live]
    live_purposes = {r.purpose for r in live}
    missing = [p for p, basis in purposes.items() if basis == 'consent' and p not in live_purposes]
    if missing:
        withdrawn = any(r.withdrawn for r in relevant if r.purpose in missing)
        return Decision('consent_withdrawn' if withdrawn else 'no_consent', False)
    if cross_border and not any(r.cross_border_consent for r in live):
        return Decision('no_cross_border_consent', False)
    return Decision(None, any(r.sensitive_consent for r in live))


def decide_table(registry: pa.Table, erasures: Sequence[str], *, purposes: Dict[str, str],
                 cross_border: bool) -> Dict[str, int]:
    """``decide_subject`` for every customer of the registry and the erasure list, vectorized.

    ``registry`` has the columns subject_id, purpose, granted, withdrawn_at, sensitive_consent,
    cross_border_consent. Returns subject -> code into ``VERDICTS`` (customers in neither list
    get ``default_decision``). One Arrow group-by instead of a Python object per row: a registry
    of millions of rows is decided in about a second.
    """
    purpose = registry.column('purpose')
    relevant = pc.is_in(purpose, pa.array(list(purposes), pa.string()))
    live = pc.and_(pc.and_(relevant, registry.column('granted')),
                   pc.is_null(registry.column('withdrawn_at')))
    withdrawn = pc.is_valid(registry.column('withdrawn_at'))
    consent_purposes = [p for p, basis in purposes.items() if basis == 'consent']
    flags = {'sensitive': pc.and_(live, registry.column('sensitive_consent')),
             'cross': pc.and_(live, registry.column('cross_border_consent'))}
    for i, p in enumerate(consent_purposes):
        is_p = pc.equal(purpose, p)
        flags[f'live{i}'] = pc.and_(live, is_p)
        flags[f'withdrawn{i}'] = pc.and_(withdrawn, is_p)
    grouped = pa.table({'subject_id': registry.column('subject_id'), **flags}).group_by(
        'subject_id').aggregate([(name, 'any') for name in flags])

    def column(name):
        return grouped.column(f'{name}_any').to_numpy(zero_copy_only=False).astype(bool)

    n = grouped.num_rows
    missing_any = np.zeros(n, dtype=bool)
    withdrawn_any = np.zeros(n, dtype=bool)
    for i in range(len(consent_purposes)):
        missing = ~column(f'live{i}')
        missing_any |= missing
        withdrawn_any |= missing & column(f'withdrawn{i}')
    reason = np.full(n, _REASON_INDEX[None], dtype=np.int8)
    if cross_border:
        reason[~column('cross')] = _REASON_INDEX['no_cross_border_consent']
    reason[missing_any] = _REASON_INDEX['no_consent']
    reason[withdrawn_any] = _REASON_INDEX['consent_withdrawn']
    sensitive_ok = column('sensitive') & (reason == _REASON_INDEX[None])
    codes = dict(zip(grouped.column('subject_id').to_pylist(),
                     (reason.astype(np.int64) * 2 + sensitive_ok).tolist()))
    erased = VERDICT_CODE[Decision('erasure_requested', False)]
    codes.update((s, erased) for s in erasures)
    return codes


# Every possible decision, so a decision can travel as its index (a small int pickles and looks
# up far faster than an object, and a registry holds millions of customers).
VERDICTS = tuple(Decision(reason, ok) for reason in (
    None, 'erasure_requested', 'consent_withdrawn', 'no_consent', 'no_cross_border_consent')
    for ok in (False, True))
VERDICT_CODE = {d: i for i, d in enumerate(VERDICTS)}
_REASON_INDEX = {d.reason: i // 2 for i, d in enumerate(VERDICTS)}


def default_decision(*, purposes: Dict[str, str], cross_border: bool) -> Decision:
    """The decision for a customer the registry does not know."""
    return decide_subject((), erased=False, purposes=purposes, cross_border=cross_border)
