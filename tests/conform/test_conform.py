"""Conform with TestPipeline and assert_that on rows and dead letters."""

import datetime
import decimal

from tests.stages import GOOD, text_batch
from transforms.conform.conform import conform_batch


def test_conform_casts_and_refuses_bad_rows_without_values(config):
    table = config.table('customers')
    batch = text_batch(table, [GOOD, {**GOOD, 'customer_id': 'C2', 'birth_date': '1990-02-30',
                                      'monthly_income': '五千'},
                               {**GOOD, 'customer_id': 'C3', 'created_at': ''}])
    typed, dead = conform_batch(batch, table)
    assert typed.num_rows == 1
    assert typed.column('birth_date').to_pylist() == [datetime.date(1990, 1, 2)]
    assert typed.column('monthly_income').to_pylist() == [decimal.Decimal('8000.50')]
    assert [(d.reason, d.row, d.field, d.subject) for d in dead] == [
        ('malformed', 2, 'birth_date, monthly_income', 'C2'),
        ('missing_required', 3, 'created_at', 'C3')]
    for d in dead:
        assert '1990-02-30' not in d.problem and '五千' not in d.problem
        assert d.raw['mobile'] == '13812345678'  # kept only for the encrypted dead letter
