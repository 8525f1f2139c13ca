"""The identifier detectors: tables of texts per kind, and precision/recall on a corpus."""

import datetime

import pyarrow as pa
import pytest

from benchmarks.pii_corpus import bank_card, corpus, precision_recall, resident_id, uscc
from transforms.detect.detectors import CHECKSUM_KINDS, count_by_kind, find, scan, valid

TODAY = datetime.date(2026, 12, 3)


def kinds_and_values(text):
    return [(f.kind, f.value) for f in find(text, today=TODAY)]


@pytest.mark.parametrize('text, expected', [
    # resident ID (GB 11643): the standard's own example, in and out of Chinese text
    ('11010519491231002X', [('cn_resident_id', '11010519491231002X')]),
    ('客户身份证号11010519491231002X已核实', [('cn_resident_id', '11010519491231002X')]),
    ('身份证：11010519491231002x。', [('cn_resident_id', '11010519491231002X')]),
    ('１１０１０５１９４９１２３１００２Ｘ', [('cn_resident_id', '11010519491231002X')]),
    ('110105194912310021', []),                       # wrong check digit
    ('11010519491231002X7', []),                      # a digit after it: a longer number
    ('711010519491231002X', []),                      # a digit before it
    ('990105194912310026', []),                       # no province 99
    ('110105202712310025', []),                       # born after today
    ('110105194902300024', []),                       # 30 February
    # unified social credit code (GB 32100)
    ('91350100M000100Y43', [('cn_uscc', '91350100M000100Y43')]),
    ('统一社会信用代码91350100M000100Y43（已备案）', [('cn_uscc', '91350100M000100Y43')]),
    ('91350100M000100Y44', []),
    # mobile numbers
    ('13812345678', [('cn_mobile', '13812345678')]),
    ('请回电13812345678谢谢', [('cn_mobile', '13812345678')]),
    ('+86 138-1234-5678', [('cn_mobile', '13812345678')]),
    ('008613812345678', [('cn_mobile', '13812345678')]),
    ('手机：１３８１２３４５６７８', [('cn_mobile', '13812345678')]),
    ('12812345678', []),                              # no 12x numbers
    ('138123456789', []),                             # twelve digits
    ('A13812345678', []),                             # part of a code
    # bank cards (Luhn, known issuers)
    ('6222021234567890128', [('bank_card', '6222021234567890128')]),
    ('卡号6222 0212 3456 7890 128尾号', [('bank_card', '6222021234567890128')]),
    ('4111111111111111', [('bank_card', '4111111111111111')]),
    ('4111111111111112', []),                         # Luhn fails
    ('7111111111111114', []),                         # Luhn holds, no such issuer
    ('62220212345678901281', []),                     # twenty digits
    # email, passport, plates
    ('邮箱zhang.san@example.com。', [('email', 'zhang.san@example.com')]),
    ('ＺＨＡＮＧ＠ＥＸＡＭＰＬＥ．ＣＯＭ', [('email', 'zhang@example.com')]),
    ('not an email: a@b', []),
    ('护照号E12345678', [('cn_passport', 'E12345678')]),
    ('护照EA1234567', [('cn_passport', 'EA1234567')]),
    ('XE12345678', []),
    ('车牌粤B·12345', [('cn_vehicle_plate', '粤B12345')]),
    ('京AD12345新能源', [('cn_vehicle_plate', '京AD12345')]),
    ('沪A12345挂', [('cn_vehicle_plate', '沪A12345挂')]),
    ('沪I12345', []),                                  # no I on plates
    # several kinds in one text, in order
    ('张三，13812345678，zhang@example.com，11010519491231002X',
     [('cn_mobile', '13812345678'), ('email', 'zhang@example.com'),
      ('cn_resident_id', '11010519491231002X')]),
    ('无', []),
    ('', []),
])
def test_detectors_find_what_is_there_and_nothing_else(text, expected):
    assert kinds_and_values(text) == expected


def test_positions_are_in_the_original_text_even_full_width():
    text = '电话：１３８１２３４５６７８，谢谢'
    (f,) = find(text)
    assert text[f.start:f.end] == '１３８１２３４５６７８'


def test_an_id_number_that_passes_luhn_is_an_id_number():
    # Gansu's ID numbers start 62, as UnionPay cards do; about one in ten passes Luhn too
    from benchmarks.pii_corpus import _id_check
    ids = [first + _id_check(first) for first in
           (f'620102198{n % 10}0{1 + n % 9}1{n % 10}{n % 1000:03d}' for n in range(300))]
    luhn_ids = [i for i in ids if i.isdigit() and valid('bank_card', [i])[0]]
    assert len(luhn_ids) > 10
    for i in luhn_ids[:20]:
        assert kinds_and_values(i) == [('cn_resident_id', i)]


@pytest.mark.parametrize('kind, make', [('cn_resident_id', resident_id), ('cn_uscc', uscc),
                                        ('bank_card', bank_card)])
def test_vectorized_checks_agree_with_the_corpus_own_checksums(kind, make):
    import random
    rng = random.Random(11)
    good = [make(rng) for _ in range(500)]
    bad = [make(rng, valid=False) for _ in range(500)]
    assert valid(kind, good, TODAY).all()
    assert not valid(kind, bad, TODAY).any()


def test_scan_takes_arrow_columns_with_nulls_and_counts_by_kind():
    values = pa.array(['13812345678', None, '无', '138 1234 5678 或 13912345678',
                       'zhang@example.com'])
    assert [(f.row, f.kind) for f in scan(values)] == [
        (0, 'cn_mobile'), (3, 'cn_mobile'), (3, 'cn_mobile'), (4, 'email')]
    assert count_by_kind(values) == {'cn_mobile': (3, 2), 'email': (1, 1)}


def test_precision_and_recall_on_the_labelled_corpus():
    samples = corpus(1000, seed=5)
    figures = precision_recall(samples, scan([t for t, _ in samples]))
    for kind in CHECKSUM_KINDS:
        _, _, _, precision, recall = figures[kind]
        assert precision >= 0.99 and recall >= 0.99, (kind, figures[kind])
    for kind, (_, _, _, precision, recall) in figures.items():
        assert recall >= 0.99, kind  # every kind finds what it was given
        assert precision >= 0.9, kind  # look-alikes without a checksum cost some


def test_the_benchmark_prints_figures_beside_its_baseline():
    import json
    import subprocess
    import sys
    from tests.conftest import ROOT
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.detectors', '--per-kind', '50',
                           '--texts', '2000', '--runs', '1'], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures['scan_texts_per_s'] > 0 and figures['baseline_texts_per_s'] > 0
    assert 'scan / baseline:' in proc.stdout and '(checksum)' in proc.stdout
