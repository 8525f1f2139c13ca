"""CSV records line by line, with a broken quote found and its records recovered (pure).

A quote opens a value that runs, across line breaks, to the next quote: that is how a remark
typed with Enter is exported, and how one stray quote swallows every record after it into one
value (delivered as a customer's remark, the records in it never counted). The two are told
apart by what the value holds:

- a **genuine multi-line value** is text: no line of it after the first, read alone, has the
  table's number of fields with a subject key in its place;
- a **broken quote** holds what parses as a whole record of the table, or runs on past
  ``LOOKAHEAD_LINES``, or closes on a line that is a record of its own and leaves its record
  the wrong width. (A quote left open at the end of the file over lines that are no records
  is read as Arrow reads it: one value, and a dead letter if its record is the wrong width.)

A broken quote makes the record where it opened a dead letter (with the number of lines it
would have swallowed) and reading goes on from the next line, so every record after it is
read as itself. The fast reader (Arrow) checks every multi-line value with ``holds_a_record``
and hands the file over to ``csv_records`` from the first broken quote on.
"""

import csv
from typing import Iterable, Iterator, List, NamedTuple, Optional

__all__ = ['LOOKAHEAD_LINES', 'Record', 'broken_quote_problem', 'csv_records', 'holds_a_record',
           'split_fields']

# A quoted value longer than this many lines is taken as a broken quote: a remark is shorter,
# and the lines must be held to be read again.
LOOKAHEAD_LINES = 10_000


class Record(NamedTuple):
    """One record: its number (blank lines are not records), its fields (None: a broken quote
    opened in it), its text and, for a broken quote, the lines the quote ran across."""
    number: int
    fields: Optional[List[str]]
    text: str
    swallowed: int = 0


def broken_quote_problem(quote: str, swallowed: int) -> str:
    """The dead letter's problem for a record where a broken quote opened."""
    lines = (f'more than {LOOKAHEAD_LINES:,} lines' if swallowed > LOOKAHEAD_LINES else
             f'{swallowed:,} line' + ('s' if swallowed > 1 else ''))
    return (f'a {quote} quote opened in this record is not closed where the record ends: it '
            f'runs across the next {lines}, which are read as records of their own')


def split_fields(text: str, delimiter: str, quote: str) -> List[str]:
    """The fields of one record's text (its line ending removed), as Arrow splits them."""
    return next(csv.reader([text.rstrip('\r\n')], delimiter=delimiter, quotechar=quote), [])


def holds_a_record(value: str, *, width: int, delimiter: str, quote: str,
                   subject: Optional[int]) -> bool:
    """Whether a line of ``value`` after its first, read alone, is a whole record: ``width``
    fields with a value where the subject key is."""
    return any(_is_record(line, width, delimiter, quote, subject)
               for line in value.split('\n')[1:])


def _is_record(line: str, width: int, delimiter: str, quote: str, subject: Optional[int]):
    if line.count(delimiter) < width - 1:
        return False  # the usual remark line: too few delimiters to be a record
    fields = split_fields(line, delimiter, quote)
    return len(fields) == width and (subject is None or bool(fields[subject].strip()))


def _ends_open(line: str, open_at_start: bool, delimiter: str, quote: str) -> bool:
    """Whether a quoted value is still open at the end of ``line`` (the csv module's rules: a
    quote opens a value only at a field's start; inside, a doubled quote is a quote)."""
    if quote not in line:
        return open_at_start
    inside, at_start, i, n = open_at_start, not open_at_start, 0, len(line)
    while i < n:
        c = line[i]
        if inside:
            if c == quote:
                if i + 1 < n and line[i + 1] == quote:
                    i += 1
                else:
                    inside = False
        elif c == quote and at_start:
            inside = True
        at_start = c == delimiter and not inside
        i += 1
    return inside


class _Lines:
    """An iterator of lines that can be given lines back, read again first."""

    def __init__(self, lines: Iterable[str]):
        self._lines = iter(lines)
        self._back: List[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return self._back.pop() if self._back else next(self._lines)

    def give_back(self, lines: List[str]):
        self._back.extend(reversed(lines))


def csv_records(lines: Iterable[str], *, width: int, delimiter: str = ',', quote: str = '"',
                subject: Optional[int] = None) -> Iterator[Record]:
    """The records of CSV data lines (each with its line ending; the header already taken),
    numbered as Arrow numbers them, a broken quote recovered as the module says."""
    source, number = _Lines(lines), 0
    for line in source:
        if not line.rstrip('\r\n'):
            continue  # a blank line is no record
        number += 1
        if not _ends_open(line, False, delimiter, quote):
            yield Record(number, split_fields(line, delimiter, quote), line)
            continue
        held, closed = [line], False
        for more in source:
            held.append(more)
            if not _ends_open(more, True, delimiter, quote):
                closed = True
                break
            if len(held) > LOOKAHEAD_LINES + 1:
                break
        text = ''.join(held)
        fields = split_fields(text, delimiter, quote)
        broken = len(held) > LOOKAHEAD_LINES + 1 or any(
            '\n' in v and holds_a_record(v, width=width, delimiter=delimiter, quote=quote,
                                         subject=subject) for v in fields)
        if closed and not broken and len(fields) != width:
            broken = _is_record(held[-1], width, delimiter, quote, subject)
        if not broken:
            yield Record(number, fields, text)
            continue
        source.give_back(held[1:])
        yield Record(number, None, line, swallowed=len(held) - 1)
