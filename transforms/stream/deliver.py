"""Deliver: a table's decided changes as the acquirer receives them, with the batch's conform,
sensitive-field suppression and masking (its pure functions, not copies), plus each change's op,
source position and commit time, so the acquirer applies upserts in order.

A create, update or snapshot read delivers the row after the change, masked as the batch masks
it. A delete delivers a tombstone: every field null but the primary key, masked (its
pseudonym). A refused change becomes a dead letter with its reason. Pure: no Beam.
"""

import collections
import dataclasses
import operator
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.common.batches import ROW, SOURCE
from transforms.common.reasons import DeadLetter
from transforms.conform.casting import cast_column
from transforms.conform.conform import conform_batch
from transforms.consent.gate import suppress_sensitive
from transforms.mask.mask import mask_batch
from transforms.mask.methods import MaskContext, string_form
from transforms.read.columns import ColumnPlan, shown_columns, text_array

__all__ = ['CHANGE_COLUMNS', 'ChangeRows', 'change_batch', 'deliver_changes', 'masked_keys',
           'replayable']


# Delivered beside each row: its op (c, u, d, r), the source position, the commit time, and
# for a partial row (a tool that sends only some columns) the fields it carries.
CHANGE_COLUMNS = (pa.field('__op', pa.string()), pa.field('__position', pa.string()),
                  pa.field('__committed_at', pa.timestamp('us', tz='UTC')),
                  pa.field('__columns', pa.string()))


class ChangeRows(NamedTuple):
    """A table's changes as a text batch: the batch in schema order with provenance, the
    events kept (in its order), the dead letters, the fields each partial row lacks
    (field -> boolean mask, for conform), ``__columns`` per row (None: the whole row), and the
    columns held back because no schema names them (column -> rows)."""
    batch: pa.RecordBatch
    kept: list
    dead: list
    absent: dict
    present: list
    held: dict


def change_batch(table, events) -> ChangeRows:
    """The rows of ``ChangeEvent``s of ``table``, grouped by their columns (most rows of a feed
    share them). A column that is no field or alias is held back, counted, and the rest of
    the row goes on (fail closed for the column, not the row); a field the row lacks is
    absent, not null: the row is partial, and says which fields it carries."""
    plan = ColumnPlan(table)
    layouts = {}  # a row's columns -> (fields, held columns, problem, its events)
    dead = []
    for event in events:
        row = event.change.row
        columns = tuple(row)
        group = layouts.get(columns)
        if group is None:
            group = layouts[columns] = (*_layout(plan, columns), [])
        fields, _, problem, grouped = group
        if problem:
            dead.append(DeadLetter(
                reason='malformed', stage='read', table=table.name, source_file=event.source,
                row=event.line, problem=problem, index=event.index,
                subject=_subject({f: row[c] for f, c in fields.items()}, table),
                raw={k: v for k, v in row.items() if plan.knows(k)}))
        else:
            grouped.append(event)
    names = list(table.schema.field_names)
    parts, kept, present, absent_rows, held = [], [], [], [], collections.Counter()
    for fields, unknown, problem, grouped in layouts.values():
        if problem or not grouped:
            continue
        rows = [e.change.row for e in grouped]
        parts.append([text_array(list(map(operator.itemgetter(fields[name]), rows)))
                      if name in fields else
                      pa.nulls(len(rows), pa.string()) for name in names])
        kept += grouped
        lacking = [n for n in names if n not in fields]
        whole = not lacking or all(e.change.op == 'd' for e in grouped)
        present += [None if whole else ','.join(n for n in names if n in fields)] * len(rows)
        absent_rows.append((set() if whole else set(lacking), len(rows)))
        for column in shown_columns(unknown):  # a name that looks like a value is not shown
            held[column] += len(rows)
    columns = [pa.concat_arrays([p[i] for p in parts]) if parts else pa.array([], pa.string())
               for i in range(len(names))]
    sources = pa.array([e.source for e in kept], pa.string()).dictionary_encode()
    # ROW numbers the kept events (a Canal line holds several): conform's dead letters name
    # them by it, and deliver_changes turns it back into the line and the event's index
    numbers = pa.array(range(len(kept)), pa.int64())
    batch = pa.RecordBatch.from_arrays(columns + [sources, numbers], names=names + [SOURCE, ROW])
    absent = {}
    for name in names:
        if any(name in lacking for lacking, _ in absent_rows):
            absent[name] = np.concatenate([np.full(n, name in lacking) for lacking, n in
                                           absent_rows])
    return ChangeRows(batch, kept, dead, absent, present, dict(held))


def _layout(plan, columns) -> Tuple[Dict[str, str], list, Optional[str]]:
    """({field: the column that gives it}, the columns no field names, the problem with these
    columns or None)."""
    fields, twice = {}, []
    for column in columns:
        if plan.knows(column):
            field = plan.field(column)
            (twice if field in fields else []).append(field)
            fields[field] = column
    unknown = sorted(c for c in columns if not plan.knows(c))
    problem = f'two columns give field(s) {", ".join(twice)}' if twice else None
    return fields, unknown, problem


def _subject(mapped, table):
    value = mapped.get(table.subject_key)
    return None if value is None else str(value)


def deliver_changes(table, decided: Sequence, keyed_ops,
                    problems: Dict[str, str]) -> Tuple[pa.RecordBatch, list, dict]:
    """(delivered batch: the masked fields and CHANGE_COLUMNS, [DeadLetter], held columns)
    for a table's ``stream_consent.Decided`` changes, in their order (the key order's: each
    row's changes in its log's order). ``problems``: the text of each consent refusal
    (``consent_rules.refusal_problems``). A delete is delivered whatever the consent:
    deleting needs none."""
    dead, upserts, deletes = [], [], []
    plan = ColumnPlan(table)
    for d in decided:
        event = d.event
        if d.reason is not None and event.change.op != 'd':
            # the raw row by field name, as the batch keeps it (restricted fields are then
            # left out when it is sealed, whatever the export called them)
            raw = {plan.field(k): v for k, v in event.change.row.items() if plan.knows(k)}
            dead.append(DeadLetter(
                reason=d.reason, stage='consent', table=table.name, source_file=event.source,
                row=event.line, field=table.subject_key, problem=problems[d.reason],
                subject=d.subject, raw=None if d.reason == 'erasure_requested' else raw,
                index=event.index, change=replayable(event)))
        elif event.change.op in ('u', 'd') and table.schema.primary_key is None:
            # which row an update or delete changes, only a primary key can say
            dead.append(DeadLetter(
                reason='no_primary_key', stage='conform', table=table.name,
                source_file=event.source, row=event.line, index=event.index,
                problem=f'{"an update" if event.change.op == "u" else "a delete"} of a table '
                        f'whose schema declares no primary_key', subject=d.subject,
                raw={plan.field(k): v for k, v in event.change.row.items()
                     if plan.knows(k)}))
        elif event.change.op == 'd':
            deletes.append(d)
        else:
            upserts.append(d)
    parts, held = [], {}
    if upserts:
        rows = change_batch(table, [d.event for d in upserts])
        dead += rows.dead
        held = rows.held
        typed, refused = conform_batch(rows.batch, table, absent=rows.absent)
        dead += [dataclasses.replace(r, row=rows.kept[r.row].line, index=rows.kept[r.row].index)
                 for r in refused]
        by_event = {id(d.event): d for d in upserts}
        numbers = typed.column(ROW).to_pylist()
        kept = [by_event[id(rows.kept[n])] for n in numbers]
        typed, _ = suppress_sensitive(typed, table, pa.array([d.sensitive_ok for d in kept]))
        parts.append((mask_batch(typed, table, keyed_ops), kept,
                      [rows.present[n] for n in numbers]))
    if deletes:
        tombstones, kept, refused = _tombstones(table, deletes, keyed_ops)
        dead += refused
        parts.append((tombstones, kept, [None] * len(kept)))
    schema = pa.schema(list(table.delivered_schema) + list(CHANGE_COLUMNS))
    delivered = [_with_change_columns(batch, kept, present) for batch, kept, present in parts
                 if kept]
    if not delivered:
        return pa.RecordBatch.from_pylist([], schema=schema), dead, held
    # in the changes' own order (the key order's), upserts and deletes together
    rank = {id(d): i for i, d in enumerate(decided)}
    orders = [rank[id(d)] for _, kept, _ in parts if kept for d in kept]
    order = sorted(range(len(orders)), key=orders.__getitem__)
    combined = pa.Table.from_batches(delivered, schema=schema).combine_chunks()
    return combined.take(pa.array(order, pa.int64())).to_batches()[0], dead, held


def replayable(event) -> dict:
    """What a dead letter keeps of a refused change so that a replay can deliver it: no
    value of the row (the raw row is kept beside it)."""
    c = event.change
    return {'op': c.op, 'committed_at': c.committed_at, 'source': c.source,
            'position': c.position_text, 'index': event.index}


def masked_keys(table, values, subjects, keyed_ops) -> list:
    """Primary key ``values`` (text) as the acquirer receives them: cast to the key's type
    and masked by its rule, with each row's subject; None where a value is missing or not of
    its type."""
    spec = table.schema.field(table.schema.primary_key)
    cast = cast_column(text_array(values), spec, zone=table.timezone,
                       null_values=table.null_values)
    good = pc.is_valid(cast.values)
    ctx = MaskContext(keyed_ops=keyed_ops, subjects=string_form(
        pa.array(subjects, pa.string()).filter(good)))
    masked = iter(table.rule(spec.name).operator.apply(cast.values.filter(good),
                                                       ctx).to_pylist())
    return [next(masked) if ok else None for ok in good.to_pylist()]


def _with_change_columns(masked: pa.RecordBatch, kept, present) -> pa.RecordBatch:
    changes = [d.event.change for d in kept]
    extra = [pa.array([c.op for c in changes], pa.string()),
             pa.array([c.position_text for c in changes], pa.string()),
             pa.array([c.committed_at for c in changes], pa.timestamp('us', tz='UTC')),
             pa.array(present, pa.string())]
    keep = [i for i, name in enumerate(masked.schema.names) if name not in (SOURCE, ROW)]
    fields = [masked.schema.field(i) for i in keep] + list(CHANGE_COLUMNS)
    return pa.RecordBatch.from_arrays([masked.column(i) for i in keep] + extra,
                                      schema=pa.schema(fields))


def _tombstones(table, deletes, keyed_ops):
    """(deleted rows: the primary key masked by its own rule, every other field null;
    [DeadLetter] for deletes whose key is missing or not of its type)."""
    key = table.schema.primary_key
    spec = table.schema.field(key)
    cast = cast_column(text_array([_key_value(d.event.change.row, spec) for d in deletes]),
                       spec, zone=table.timezone, null_values=table.null_values)
    bad = pc.is_null(cast.values).to_numpy(zero_copy_only=False)
    dead = [DeadLetter(reason='missing_required' if cast.bad is None or not cast.bad[i].as_py()
                       else 'malformed', stage='conform', table=table.name,
                       source_file=d.event.source, row=d.event.line, field=key,
                       problem=f'a delete needs its {key}', subject=d.subject,
                       raw=d.event.change.row, index=d.event.index)
            for i, d in enumerate(deletes) if bad[i]]
    kept = [d for i, d in enumerate(deletes) if not bad[i]]
    plan = ColumnPlan(table)
    dead = [dataclasses.replace(letter, raw={plan.field(k): v for k, v in letter.raw.items()
                                             if plan.knows(k)}) for letter in dead]
    ctx = MaskContext(keyed_ops=keyed_ops, subjects=string_form(
        pa.array([d.subject for d in kept], pa.string())))
    delivered = table.delivered_schema
    values = cast.values.filter(pa.array(~bad))
    columns = [table.rule(key).operator.apply(values, ctx) if r.field.name == key
               else pa.nulls(len(kept), delivered.field(r.field.name).type)
               for r in table.rules if r.delivered]
    return pa.RecordBatch.from_arrays(columns, schema=delivered), kept, dead


def _key_value(row, spec):
    return next((row[c] for c in (spec.name,) + spec.aliases if row.get(c) is not None), None)
