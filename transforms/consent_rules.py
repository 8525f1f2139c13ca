"""Consent decisions (pure): may this customer's records move, and may their sensitive data?

PIPL: each purpose needs a legal basis (Art. 13/14); sensitive data needs separate consent
(Art. 29); a transfer abroad needs separate consent (Art. 39); erased customers never move
(Art. 47). A decision is made once per customer, so a customer refused in one table is refused in
every table.
"""

import dataclasses
from typing import Dict, Iterable, Optional, Sequence

__all__ = ['VERDICTS', 'VERDICT_CODE', 'ConsentRow', 'Decision', 'decide_all', 'decide_subject',
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


def decide_all(registry: Iterable[dict], erasures: Iterable[str], *, purposes: Dict[str, str],
               cross_border: bool) -> Dict[str, Decision]:
    """Decisions for every customer named in the registry or the erasure list.

    ``registry`` rows are dicts with subject_id, purpose, granted, withdrawn_at,
    sensitive_consent, cross_border_consent. Customers in neither list get ``default_decision``.
    """
    by_subject = {}
    for r in registry:
        by_subject.setdefault(r['subject_id'], []).append(ConsentRow(
            purpose=r['purpose'],
            granted=bool(r['granted']),
            withdrawn=r['withdrawn_at'] is not None,
            sensitive_consent=bool(r['sensitive_consent']),
            cross_border_consent=bool(r['cross_border_consent'])))
    erased = set(erasures)
    return {s: decide_subject(by_subject.get(s, ()), erased=s in erased, purposes=purposes,
                              cross_border=cross_border)
            for s in set(by_subject) | erased}


# Every possible decision, so a decision can travel as its index (a small int pickles and looks
# up far faster than an object, and a registry holds millions of customers).
VERDICTS = tuple(Decision(reason, ok) for reason in (
    None, 'erasure_requested', 'consent_withdrawn', 'no_consent', 'no_cross_border_consent')
    for ok in (False, True))
VERDICT_CODE = {d: i for i, d in enumerate(VERDICTS)}


def default_decision(*, purposes: Dict[str, str], cross_border: bool) -> Decision:
    """The decision for a customer the registry does not know."""
    return decide_subject((), erased=False, purposes=purposes, cross_border=cross_border)
