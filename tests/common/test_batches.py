"""The record batches' coder (TestPipeline-free: the coder called directly)."""

import datetime
import decimal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from transforms.common.batches import RecordBatchCoder, with_provenance

_TYPED = pa.record_batch({'id': pa.array(['C1', 'C2', None]),
                          'amount': pa.array([decimal.Decimal('1.50'), None,
                                              decimal.Decimal('-2.25')], pa.decimal128(12, 2)),
                          'on': pa.array([datetime.date(2024, 1, 31), None,
                                          datetime.date(1999, 12, 1)])})


@pytest.mark.parametrize('batch', [
    with_provenance(_TYPED, 'gs://b/x.csv', np.array([4, 5, 9])),  # dictionary column
    with_provenance(_TYPED, 'x.csv', np.arange(1, 4)).slice(1, 2),  # a slice of larger buffers
    _TYPED.slice(0, 0),
])
def test_record_batch_coder_round_trips_and_estimates_without_encoding(batch):
    coder = beam.coders.registry.get_coder(pa.RecordBatch)
    assert isinstance(coder, RecordBatchCoder)
    decoded = coder.decode(coder.encode(batch))
    assert decoded.equals(batch) and decoded.schema == batch.schema
    assert coder.get_impl().estimate_size(batch) == batch.nbytes
