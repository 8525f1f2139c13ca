"""A short human summary of a finished run, printed by `novation run` and `novation demo`."""

__all__ = ['print_summary']


def print_summary(manifest: dict, run_dir: str = None, seconds: float = None, out=print):
    totals = manifest['totals']
    out(f'Run {manifest["run_id"]}: {manifest["transfer"]["seller"]} -> '
        f'{manifest["transfer"]["acquirer"]}')
    rate = f' in {seconds:.1f} s ({totals["rows_read"] / seconds:,.0f} rows/s)' \
        if seconds else ''
    out(f'  {totals["rows_read"]:,} rows read, {totals["rows_written"]:,} written '
        f'(encrypted), {totals["rows_read"] - totals["rows_written"]:,} dead letters{rate}')
    width = max(len(t) for t in manifest['tables'])
    out(f'  {"table":<{width}}  {"read":>10}  {"written":>10}  dead letters by reason')
    for name, t in manifest['tables'].items():
        dead = ', '.join(f'{r} {n:,}' for r, n in t['dead_letters'].items()) or 'none'
        out(f'  {name:<{width}}  {t["rows_read"]:>10,}  {t["rows_written"]:>10,}  {dead}')
    suppressed = [f'{name} {t["sensitive_suppressed_rows"]:,}'
                  for name, t in manifest['tables'].items() if t['sensitive_suppressed_rows']]
    if suppressed:
        out(f'  sensitive fields nulled (no separate consent): {", ".join(suppressed)} rows')
    for key, what in (('missing_columns', 'fields missing from the export (delivered as nulls)'),
                      ('ignored_columns', 'columns left out (extra_columns: ignore)')):
        tables = [f'{name}: {", ".join(t[key])}{_in_files(manifest, name, key)}'
                  for name, t in manifest['tables'].items() if t.get(key)]
        if tables:
            out(f'  {what}: {"; ".join(tables)}')
    for line in _risk_lines(manifest.get('risk')):
        out(line)
    multiline = [f'{name} {lines - rows:,}' for name, lines, rows in _line_counts(manifest)
                 if lines > rows]
    if multiline:
        out(f'  lines more than records (quoted values over several lines): '
            f'{", ".join(multiline)}')
    if run_dir:
        avro = any(t.get('format') == 'avro' for t in manifest['tables'].values())
        out(f'  data:         {run_dir}/data/<table>/' + (
            'part-*.avro.enc (Avro in Tink streaming AEAD)' if avro else
            'part-*.parquet (Parquet Modular Encryption)'))
        out(f'  dead letters: {run_dir}/deadletter/<table>/part-*.jsonl.enc '
            f'(deadletter key only)')
        out(f'  manifest:     {run_dir}/manifest.json (counts, crc32c, key ids; sealed: '
            f'manifest.json.seal)')
        out(f'  report:       {run_dir}/report.html (for compliance operators; also '
            f'report.json)')


def _in_files(manifest, table, key):
    """' (in 1 of 3 files)' when only some of a table's files lack or add columns."""
    files = [s for s in manifest['sources'] if s['table'] == table]
    having = sum(1 for s in files if s.get(key))
    return '' if having == len(files) else f' (in {having} of {len(files)} files)'


def _line_counts(manifest):
    """(table, physical lines, records) for tables whose files are all text."""
    for name in manifest['tables']:
        files = [s for s in manifest['sources'] if s['table'] == name]
        if files and all('lines' in s for s in files):
            yield name, sum(s['lines'] for s in files), sum(s['rows_read'] for s in files)


def _risk_lines(risk):
    """The re-identification figure, and a warning when customers are in classes below
    risk.min_k (a run where everyone is alone in their class must not pass in silence)."""
    if not risk or not risk.get('customers'):
        return
    below, customers = risk['customers_below_min_k'], risk['customers']
    yield (f'  re-identification risk: the smallest class of quasi-identifiers holds '
           f'{risk["k"]:,} customer(s) (risk.min_k {risk["min_k"]})')
    if below:
        alone = ', every one alone in their class' if risk['k'] == 1 and \
            risk.get('classes') == customers else ''
        yield (f'  WARNING: {below:,} of {customers:,} customers ({below / customers:.1%}) are '
               f'in classes smaller than risk.min_k{alone}: generalize the quasi-identifiers '
               f'further (see the report)')
