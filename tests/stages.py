"""Helpers shared by the tests of several stages: demo config, typed batches, consent codes."""

import numpy as np
import pyarrow as pa

from transforms.common.batches import with_provenance


def text_batch(table, rows):
    names = table.schema.field_names
    columns = {n: [r.get(n, '') for r in rows] for n in names}
    batch = pa.RecordBatch.from_pydict(columns, schema=pa.schema([(n, pa.string())
                                                                  for n in names]))
    return with_provenance(batch, 'src.csv', np.arange(1, len(rows) + 1))


GOOD = {'customer_id': 'C1', 'birth_date': '1990-01-02', 'monthly_income': '8000.50',
        'created_at': '2020-01-01 08:00:00', 'mobile': '13812345678'}
