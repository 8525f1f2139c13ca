"""Masking record batches, and the DoFn that does it, called directly."""

import decimal

import numpy as np
import pyarrow as pa

from tests.stages import GOOD, text_batch
from transforms.common.batches import ROW, SOURCE, with_provenance
from transforms.conform.conform import conform_batch
from transforms.keys.crypto import keyed_ops
from transforms.keys.keyring import load_keyring
from transforms.mask.mask import mask_batch


def test_mask_batch_follows_the_policy(config, keys_dir):
    table = config.table('customers')
    typed, _ = conform_batch(text_batch(table, [{**GOOD, 'name': '张三丰',
                                                 'login_password_hash': 'secret'}]), table)
    ops = keyed_ops(load_keyring(keys_dir))
    out = mask_batch(typed, table, ops).to_pylist()[0]
    assert out['name'] == '张**' and out['mobile'] == '138****5678'
    assert out['birth_date'] == '1990'
    assert out['monthly_income'] == decimal.Decimal('8000.50')  # encrypt: clear, own column key
    assert 'login_password_hash' not in out
    assert out['customer_id'] == ops.pseudonym('customer_id', 'C1')
    assert out[SOURCE] == 'src.csv' and out[ROW] == 1


def test_mask_dofn_builds_keys_in_setup_then_masks_batches(config, keys_dir):
    from transforms.mask.mask import KeyedBatchFn, _masked
    table = config.table('contracts')
    fn = KeyedBatchFn(_masked, table, keys_dir)
    fn.setup()
    batch = pa.RecordBatch.from_pydict({
        'contract_id': ['L1'], 'customer_id': ['C1'], 'product': ['auto_lease'],
        'principal': ['1000.00'], 'annual_rate': ['0.0500'], 'term_months': ['12'],
        'monthly_payment': ['90.00'], 'start_date': ['2024-01-02'], 'status': ['active'],
        'overdue_days': ['0'], 'vehicle_plate': ['京A12345'], 'vehicle_vin': ['LSV1'],
        'repayment_account': ['6222021234567890'], 'guarantor_name': ['王五'],
        'guarantor_mobile': ['13900001111'], 'signed_at': ['2024-01-01 10:00:00']})
    typed, dead = conform_batch(with_provenance(batch, 'k.parquet', np.array([1])), table)
    assert not dead
    [out] = list(fn.process(typed))
    row = out.to_pylist()[0]
    assert row['vehicle_plate'] == '京A*****' and row['guarantor_mobile'] == '139****1111'
    assert row['customer_id'] == fn._ops.pseudonym('customer_id', 'C1')
    assert row['repayment_account'] != '6222021234567890'
