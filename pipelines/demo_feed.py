"""A live change feed for the demo seller: what its CDC tool and consent system would write while
the acquirer's stream runs (``novation demo --live``, the stream benchmark, tests).

``plan_feed(workdir, planted, ...)`` plans waves of feed files from the demo's own exports:
customers changing their mobile number, new customers (with their consent), new contracts,
repayments, closed contracts deleted, withdrawals and erasures, each at a commit time a little after
the wave's landing time. Some waves carry the dirt a real feed has: lines out of commit order, a
withdrawal that lands late (after changes committed after it), a line that is not JSON, a change for
a customer the seller never had. Later waves bring consent given again: a customer who withdrew
consents again, and one whose rows moved without their sensitive fields gives the separate consent
for them (their rows then need ``novation backfill``). Changes come as Debezium envelopes and as
plain change rows, both forms ``transforms.stream.changes`` accepts. ``land_waves`` writes the files
at their times, each whole and then renamed into place, as a CDC tool would.
"""

import csv
import dataclasses
import datetime
import decimal
import json
import os
import random
import threading
import time
from typing import Dict, List, Tuple

import pyarrow.parquet as pq

__all__ = ['FeedPlan', 'Wave', 'customer_rows', 'customer_updates', 'land_waves', 'plan_feed']

_PURPOSE = 'credit_management'
_NEVER_SEEN = 'C99999999'
LATE_BY = 3  # waves a late withdrawal lands after its time
REGRANT_WAVE = 4  # the wave in which consent is given again


@dataclasses.dataclass
class Wave:
    """Files that land together, ``after`` seconds from the start: feed kind -> JSON lines."""
    after: float
    files: Dict[str, List[str]]


@dataclasses.dataclass
class FeedPlan:
    """The waves, and what they do (seller-side truth, for tests; never in any output)."""
    waves: List[Wave]
    changes: int = 0                     # change events, all tables
    withdrawn: Dict[str, int] = dataclasses.field(default_factory=dict)  # subject -> at (ms)
    erased: Dict[str, int] = dataclasses.field(default_factory=dict)
    new_customers: List[str] = dataclasses.field(default_factory=list)
    malformed: int = 0
    late: Dict[str, int] = dataclasses.field(default_factory=dict)  # withdrawals landing late
    regranted: Dict[str, int] = dataclasses.field(default_factory=dict)  # consent again
    sensitive_later: Dict[str, int] = dataclasses.field(default_factory=dict)  # Art. 29, late


def customer_rows(workdir: str) -> List[dict]:
    """The demo's customers export as the seller's rows (text, as its CDC tool sends them)."""
    with open(os.path.join(workdir, 'exports', 'customers.csv'), encoding='gbk',
              newline='') as f:
        return list(csv.DictReader(f))


def _allowed(planted) -> List[str]:
    refused = (planted.no_consent | planted.consent_withdrawn | planted.erasure_requested |
               planted.no_cross_border_consent | planted.no_sensitive_consent)
    return sorted(set(planted.contract_customers) - refused)


def _text(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat(sep=' ') if isinstance(value, datetime.datetime) else \
            value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def _stamp(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone(
        datetime.timedelta(hours=8))).strftime('%Y-%m-%d %H:%M:%S')


def customer_updates(rows: List[dict], subjects: List[str], start_ms: int, span_ms: int,
                     first_position: int = 1) -> List[str]:
    """One Debezium update a subject (a new mobile number), committed evenly over
    ``span_ms`` from ``start_ms``, as JSON lines in commit order."""
    by_id = {r['customer_id']: r for r in rows}
    lines = []
    for n, subject in enumerate(subjects):
        at = start_ms + n * span_ms // max(1, len(subjects))
        before = by_id[subject]
        after = {**before, 'mobile': f'139{(n * 7919) % 10**8:08d}', 'updated_at': _stamp(at)}
        lines.append(json.dumps({
            'op': 'u', 'before': before, 'after': after,
            'source': {'table': 'customers', 'ts_ms': at, 'lsn': first_position + n}},
            ensure_ascii=False))
    return lines


def plan_feed(workdir: str, planted, *, start_ms: int, waves: int = 10,
              per_wave: int = 200, wave_seconds: float = 1.0, seed: int = 7) -> FeedPlan:
    """Plan ``waves`` waves of about ``per_wave`` events each, one every ``wave_seconds``,
    committed from ``start_ms`` on."""
    rng = random.Random(seed)
    def clean(table, rows):  # the planted bad rows are no templates
        bad = planted.bad_rows.get(table, {})
        return [r for n, r in enumerate(rows, 1) if n not in bad]

    customers = {r['customer_id']: r for r in clean('customers', customer_rows(workdir))}
    contracts = clean('contracts', [{k: _text(v) for k, v in r.items()} for r in pq.read_table(
        os.path.join(workdir, 'exports', 'contracts.parquet')).to_pylist()])
    with open(os.path.join(workdir, 'exports', 'repayments.jsonl'), encoding='utf-8') as f:
        repayments = clean('repayments', [line for line in f if line.strip()])
    repayments = [json.loads(line) for line in repayments]
    allowed = [s for s in _allowed(planted) if s in customers]
    rng.shuffle(allowed)
    pool = iter(allowed)
    own = {}
    for c in contracts:
        own.setdefault(c['customer_id'], []).append(c)
    plan = FeedPlan(waves=[])
    position, consent_position = 0, 0
    wave_ms = int(wave_seconds * 1000)
    deferred = {}  # wave -> consent events that land then (late)
    for w in range(waves):
        base = start_ms + w * wave_ms
        data, consent = [], []

        def at(k):
            return base + k * wave_ms // max(1, per_wave)

        def envelope(op, table, row, k, before=None):
            nonlocal position
            position += 1
            plan.changes += 1
            if k % 2:  # both forms: a Debezium envelope and a plain change row
                return json.dumps({'op': op, 'before': before, 'after': row,
                                   'source': {'table': table, 'ts_ms': at(k),
                                              'lsn': position}}, ensure_ascii=False)
            return json.dumps({'table': table, 'op': op, 'row': row if op != 'd' else before,
                               'committed_at': at(k), 'position': position},
                              ensure_ascii=False)

        def consent_event(subject, event, k, **extra):
            nonlocal consent_position
            consent_position += 1
            return json.dumps({'subject_id': subject, 'event': event, 'at': at(k),
                               'position': consent_position, **extra}, ensure_ascii=False)

        for k in range(per_wave):
            kind = rng.random()
            subject = next(pool, None)
            if subject is None:
                break
            row = customers[subject]
            if kind < 0.55:  # a new mobile number
                after = {**row, 'mobile': f'13{rng.randrange(10**9):09d}',
                         'updated_at': _stamp(at(k))}
                customers[subject] = after
                data.append(envelope('u', 'customers', after, k, before=row))
            elif kind < 0.65:  # a new customer, who consents first
                new_id = f'C9{len(plan.new_customers) + 1:07d}'
                plan.new_customers.append(new_id)
                consent.append(consent_event(new_id, 'grant', max(0, k - 1),
                                             purpose=_PURPOSE, sensitive_consent=True,
                                             cross_border_consent=True))
                new_row = {**row, 'customer_id': new_id, 'created_at': _stamp(at(k)),
                           'updated_at': _stamp(at(k))}
                customers[new_id] = new_row
                data.append(envelope('c', 'customers', new_row, k))
            elif kind < 0.75 and contracts:  # a new contract
                template = rng.choice(contracts)
                new = {**template, 'contract_id': f'L9{position + 1:010d}',
                       'customer_id': subject}
                data.append(envelope('c', 'contracts', new, k))
            elif kind < 0.88 and repayments:  # a repayment
                template = rng.choice(repayments)
                data.append(envelope('c', 'repayments', {**template, 'repayment_id':
                                                         f'R9{position + 1:09d}',
                                                         '客户编号': subject}, k))
            elif kind < 0.93 and own.get(subject):  # a closed contract deleted
                data.append(envelope('d', 'contracts', None, k, before=own[subject].pop()))
            elif kind < 0.97:  # a withdrawal, then a change it must refuse
                plan.withdrawn[subject] = at(k)
                event = consent_event(subject, 'withdraw', k, purpose=_PURPOSE)
                if w == 2 and not deferred and waves > LATE_BY + 3:
                    deferred[w + LATE_BY] = [event]  # late: lands waves after its time
                    plan.late[subject] = at(k)
                else:
                    consent.append(event)
                after = {**row, 'remarks': '', 'updated_at': _stamp(at(k) + 1)}
                data.append(envelope('u', 'customers', after, k + 1, before=row))
            else:  # an erasure request
                plan.erased[subject] = at(k)
                consent.append(consent_event(subject, 'erasure', k))
        if w == 1:  # the dirt of a real feed
            data.append('{"op": "u", "source": {"table": "customers"')
            plan.malformed += 1
            data.append(envelope('u', 'customers', {**customers[allowed[0]],
                                                    'customer_id': _NEVER_SEEN}, per_wave))
        if w == 2:
            rng.shuffle(data)  # out of commit order within the file
        if w == REGRANT_WAVE and waves > REGRANT_WAVE + 1:  # consent given again
            again = next((s for s in plan.withdrawn if s not in plan.late), None)
            if again is not None:
                plan.regranted[again] = at(0)
                consent.append(consent_event(again, 'grant', 0, purpose=_PURPOSE,
                                             sensitive_consent=True,
                                             cross_border_consent=True))
            later = sorted(planted.no_sensitive_consent & set(customers) - set(plan.erased))
            if later:
                plan.sensitive_later[later[0]] = at(1)
                consent.append(consent_event(later[0], 'grant', 1, purpose=_PURPOSE,
                                             sensitive_consent=True,
                                             cross_border_consent=True))
        consent.extend(deferred.pop(w, []))
        plan.waves.append(Wave(w * wave_seconds, {'changes': data, 'consent': consent}))
    return plan


def land_waves(feed_dir: str, plan: FeedPlan, *, started: float = None,
               stop: threading.Event = None, on_wave=lambda n, wave: None) -> None:
    """Write each wave's files under ``feed_dir/<kind>/`` at its time (from ``started``,
    ``time.time()`` by default), whole and then renamed into place."""
    started = time.time() if started is None else started
    for n, wave in enumerate(plan.waves, 1):
        delay = started + wave.after - time.time()
        if stop is not None and stop.wait(max(0.0, delay)):
            return
        if stop is None and delay > 0:
            time.sleep(delay)
        for kind, lines in wave.files.items():
            if lines:
                _land(os.path.join(feed_dir, kind), f'wave-{n:04d}', lines)
        on_wave(n, wave)


def _land(directory: str, name: str, lines: List[str]) -> Tuple[str, int]:
    os.makedirs(directory, exist_ok=True)
    temp = os.path.join(directory, f'.{name}.tmp')
    with open(temp, 'w', encoding='utf-8') as f:
        f.write(''.join(line + '\n' for line in lines))
    final = os.path.join(directory, f'{name}.jsonl')
    os.rename(temp, final)
    return final, len(lines)
