"""Consent decisions (pure): may this customer's records move, and may their sensitive data?

PIPL: each purpose needs a legal basis (Art. 13/14); sensitive data needs separate consent
(Art. 29); a transfer abroad needs separate consent (Art. 39); erased customers never move
(Art. 47). A decision is made once per customer, so a customer refused in one table is refused in
every table.
"""

import collections
import dataclasses
from collections.abc import Mapping
from typing import Dict, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.common.sorted_keys import (fit_width, fixed_width, group_starts, merge_runs,
                                   sorted_run, split_by_partition, texts)

__all__ = ['VERDICTS', 'VERDICT_CODE', 'ConsentRow', 'Decision', 'Decisions', 'SubjectCodes',
           'decide_subject', 'decide_flags', 'decide_table', 'flag_run', 'merge_flags',
           'default_decision', 'refusal_problems']


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


def decide_table(registry, erasures: Sequence[str], *, purposes: Dict[str, str],
                 cross_border: bool) -> 'SubjectCodes':
    """``decide_subject`` for every customer of the registry and the erasure list, vectorized.

    ``registry`` is a table, or an iterable of tables (read batch by batch), with the columns
    subject_id, purpose, granted, withdrawn_at, sensitive_consent, cross_border_consent. Returns
    subject -> code into ``VERDICTS`` (customers in neither list get ``default_decision``). Each
    batch is reduced to a few flags per customer with an Arrow group-by, so memory follows the
    number of customers, not the registry's size, and millions of rows take seconds.
    """
    batches = [registry] if isinstance(registry, (pa.Table, pa.RecordBatch)) else registry
    return decide_flags([flag_run(registry_flags(b, purposes), purposes) for b in batches],
                        erasures, purposes=purposes, cross_border=cross_border)


def decide_flags(runs: Sequence['FlagRun'], erasures: Sequence[str], *,
                 purposes: Dict[str, str], cross_border: bool) -> 'SubjectCodes':
    """``decide_table`` from the ``flag_run``s of the registry's parts (batches, or byte ranges
    read by different workers): flags are "any" per customer, so parts merge in any order."""
    return _decide_flags(merge_flags(runs, purposes), erasures, purposes, cross_border)


# A registry part reduced to one entry per customer: sorted fixed-width subject keys
# (transforms.common.sorted_keys) and beside each a row of booleans, one per ``_flag_names``. About
# (id length + 2 + flags) bytes a customer, where an Arrow group-by over ids takes several times
# that while it runs.
FlagRun = collections.namedtuple('FlagRun', 'subjects flags')


def _consent_purposes(purposes: Dict[str, str]) -> list:
    """The purposes whose legal basis is consent, in the config's order (flag columns follow
    it)."""
    return [p for p, basis in purposes.items() if basis == 'consent']


def _flag_names(purposes: Dict[str, str]) -> list:
    consent_purposes = _consent_purposes(purposes)
    return ['sensitive', 'cross'] + [f'{kind}{i}' for i in range(len(consent_purposes))
                                     for kind in ('live', 'withdrawn')]


def flag_run(flags: pa.Table, purposes: Dict[str, str]) -> FlagRun:
    """A ``registry_flags`` table as a ``FlagRun``."""
    matrix = np.column_stack([flags.column(name).to_numpy(zero_copy_only=False).astype(bool)
                              for name in _flag_names(purposes)]) if flags.num_rows else \
        np.zeros((0, len(_flag_names(purposes))), dtype=bool)
    return FlagRun(*sorted_run(fixed_width(flags.column('subject_id')), matrix))


def merge_flags(runs: Sequence[FlagRun], purposes: Dict[str, str]) -> FlagRun:
    """One entry per customer from the ``FlagRun``s of several parts of the registry."""
    runs = list(runs) or [flag_run(registry_flags(_EMPTY_REGISTRY, purposes), purposes)]
    subjects, flags = merge_runs(runs)
    if len(runs) == 1:
        return FlagRun(subjects, flags)
    starts = group_starts(subjects)
    if not len(starts):
        return FlagRun(subjects, flags)
    return FlagRun(subjects[starts], np.logical_or.reduceat(flags, starts, axis=0))


_EMPTY_REGISTRY = pa.table({'subject_id': pa.array([], pa.string()),
                            'purpose': pa.array([], pa.string()),
                            'granted': pa.array([], pa.bool_()),
                            'withdrawn_at': pa.array([], pa.timestamp('us', tz='UTC')),
                            'sensitive_consent': pa.array([], pa.bool_()),
                            'cross_border_consent': pa.array([], pa.bool_())})


def registry_flags(registry, purposes: Dict[str, str]) -> pa.Table:
    """One row per customer of a registry batch: does any row give live consent, sensitive or
    cross-border consent, live consent per consent-based purpose, a withdrawal per purpose."""
    purpose = registry.column('purpose')
    relevant = pc.is_in(purpose, pa.array(list(purposes), pa.string()))
    live = pc.and_(pc.and_(relevant, registry.column('granted')),
                   pc.is_null(registry.column('withdrawn_at')))
    withdrawn = pc.is_valid(registry.column('withdrawn_at'))
    consent_purposes = _consent_purposes(purposes)
    flags = {'sensitive': pc.and_(live, registry.column('sensitive_consent')),
             'cross': pc.and_(live, registry.column('cross_border_consent'))}
    for i, p in enumerate(consent_purposes):
        is_p = pc.equal(purpose, p)
        flags[f'live{i}'] = pc.and_(live, is_p)
        flags[f'withdrawn{i}'] = pc.and_(withdrawn, is_p)
    grouped = pa.table({'subject_id': registry.column('subject_id'), **flags}).group_by(
        'subject_id').aggregate([(name, 'any') for name in flags])
    return grouped.rename_columns([n[:-4] if n.endswith('_any') else n
                                   for n in grouped.column_names])


def _decide_flags(merged: FlagRun, erasures, purposes, cross_border):
    names = _flag_names(purposes)
    consent_purposes = _consent_purposes(purposes)

    def column(name):
        return merged.flags[:, names.index(name)]

    n = len(merged.subjects)
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
    codes = (reason * 2 + sensitive_ok).astype(np.int8)
    erased_code = VERDICT_CODE[Decision('erasure_requested', False)]
    erased = sorted_run(fixed_width(pa.array(sorted(set(erasures)), pa.string())))[0]
    subjects = merged.subjects
    if len(erased) and n:
        width = max(subjects.dtype.itemsize, erased.dtype.itemsize)
        subjects, erased = subjects.astype(f'S{width}'), erased.astype(f'S{width}')
        at = np.minimum(np.searchsorted(subjects, erased), n - 1)
        known = subjects[at] == erased
        codes[at[known]] = erased_code
        erased = erased[~known]
    subjects, codes = merge_runs([(subjects, codes),
                                  (erased, np.full(len(erased), erased_code, dtype=np.int8))])
    return SubjectCodes.from_sorted(subjects, codes)


class SubjectCodes(Mapping):
    """subject -> decision code, compact enough for tens of millions of customers.

    Subjects are kept as sorted fixed-width keys (``transforms.common.sorted_keys``) beside an int8
    code
    each: about (longest id + 2) bytes per customer, where a dict takes over 100. Lookups are
    binary searches, vectorized per batch.
    """

    def __init__(self, subjects: pa.Array, codes: np.ndarray):
        self._keys_sorted, self._codes = sorted_run(fixed_width(subjects), codes)

    @classmethod
    def from_sorted(cls, keys: np.ndarray, codes: np.ndarray) -> 'SubjectCodes':
        """From keys already sorted and distinct (``sorted_run``)."""
        self = cls.__new__(cls)
        self._keys_sorted, self._codes = keys, codes
        return self

    @property
    def keys(self) -> np.ndarray:
        """The sorted fixed-width keys."""
        return self._keys_sorted

    @property
    def codes(self) -> np.ndarray:
        """The code beside each key."""
        return self._codes

    def lookup(self, subjects: pa.Array, default: int) -> np.ndarray:
        """The code of each subject (``default`` for those not in the index)."""
        return self.lookup_keys(fixed_width(subjects), default)

    def lookup_keys(self, keys: np.ndarray, default: int) -> np.ndarray:
        """``lookup`` for subjects already fixed-width keys."""
        if not len(self._keys_sorted) or not len(keys):
            return np.full(len(keys), default, dtype=np.int8)
        keys = fit_width(keys, self._keys_sorted.dtype.itemsize)
        at = np.minimum(np.searchsorted(self._keys_sorted, keys), len(self._keys_sorted) - 1)
        found = (self._keys_sorted[at] == keys) & (keys != b'')
        return np.where(found, self._codes[at], np.int8(default))

    def __getitem__(self, subject):
        # One binary search on a scalar (the Mapping interface, for one subject at a time).
        key = subject.encode('utf-8') + b'\x01'
        if len(key) <= self._keys_sorted.dtype.itemsize and len(self._keys_sorted):
            at = int(np.searchsorted(self._keys_sorted, key))
            if at < len(self._keys_sorted) and self._keys_sorted[at] == key:
                return int(self._codes[at])
        raise KeyError(subject)

    def __iter__(self):
        return iter(texts(self._keys_sorted))

    def __len__(self):
        return len(self._keys_sorted)


class Decisions:
    """Every customer's decision code: the ``SubjectCodes`` of each hash partition of the
    customers (``sorted_keys.partition_of``), and the code of a customer in none of them."""

    def __init__(self, partitions: Sequence[SubjectCodes], default: int):
        self._partitions = list(partitions)
        self._default = default

    def lookup(self, subjects: pa.Array) -> np.ndarray:
        """The code of each subject, one binary search per partition."""
        keys = fixed_width(subjects)
        codes = np.full(len(keys), self._default, dtype=np.int8)
        order, bounds = split_by_partition(keys, len(self._partitions))
        for p, codes_p in enumerate(self._partitions):
            at = order[bounds[p]:bounds[p + 1]]
            if len(at):
                codes[at] = codes_p.lookup_keys(keys[at], self._default)
        return codes

    def decision(self, subject: str) -> 'Decision':
        return VERDICTS[int(self.lookup(pa.array([subject], pa.string()))[0])]


# Every possible decision, so a decision can travel as its index (a small int pickles and looks
# up far faster than an object, and a registry holds millions of customers).
VERDICTS = tuple(Decision(reason, ok) for reason in (
    None, 'erasure_requested', 'consent_withdrawn', 'no_consent', 'no_cross_border_consent')
    for ok in (False, True))
VERDICT_CODE = {d: i for i, d in enumerate(VERDICTS)}
_REASON_INDEX = {d.reason: i // 2 for i, d in enumerate(VERDICTS)}


def refusal_problems(purposes: Dict[str, str], destination_region: str) -> Dict[str, str]:
    """What each consent refusal means for this transfer, as a dead letter's ``problem``: the
    purposes without live consent, the separate consent missing. Decisions keep only the reason,
    so with several consent-based purposes the text names them all."""
    consent_purposes = _consent_purposes(purposes)
    which = (f'purpose {consent_purposes[0]}' if len(consent_purposes) == 1 else
             f'one or more of the purposes {", ".join(consent_purposes)}')
    return {
        'erasure_requested': 'the customer asked for erasure (PIPL Art. 47)',
        'consent_withdrawn': f'consent withdrawn for {which} (legal basis: consent)',
        'no_consent': f'no live consent for {which} (legal basis: consent)',
        'no_cross_border_consent': f'no separate consent to a transfer to '
                                   f'{destination_region} (PIPL Art. 39)',
    }


def default_decision(*, purposes: Dict[str, str], cross_border: bool) -> Decision:
    """The decision for a customer the registry does not know."""
    return decide_subject((), erased=False, purposes=purposes, cross_border=cross_border)
