"""Reading is streamed: peak memory does not grow with the file (generated here, not committed).

A child process reads a file through the read DoFn, dropping each batch, and reports its peak
RSS; a file over three times larger must not need more memory. (Below about 100 MB the peak still
rises while Arrow's allocator and the CSV read-ahead warm up.) The imports alone hold about
210 MiB, so the bound on the file's size is put on what reading adds to them; measured here:
421 MiB at 142 MiB, 444 MiB at 475 MiB, of which 212 MiB before the first byte; on a later
day 348 to 391 MiB at 142 MiB and 430 to 454 MiB at 475 MiB.
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.read.test_dirty_exports import make_table

pytestmark = pytest.mark.slow  # subprocesses reading hundreds of MB

READER = r'''
import os, sys
sys.path.insert(0, sys.argv[3])
from tests.read.test_dirty_exports import make_table
from transforms.read.ranges import FileRange
from transforms.read.tables import _ReadBatchesFn
table = make_table(sys.argv[1], 'csv', encoding='gbk')
path = table.path
# what the interpreter and the imported libraries already hold before any byte is read
base = [l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]
rows = 0
for out in _ReadBatchesFn(table).process(FileRange(path)):
    rows += getattr(out, 'num_rows', 0)
peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(rows, int(base) // 1024, int(peak) // 1024)
'''

LINE = ('R{},12345.67,2024-01-02,是,客户要求下午致电，地址北京市朝阳区建国路{}号院,'
        '2024-01-02 08:00:00\n')


def write_csv(directory, rows):
    make_table(directory, 'csv', encoding='gbk')
    with open(os.path.join(directory, 'data.csv'), 'wb') as f:
        f.write(b'rid,amount,day,flag,note,at\n')
        block = 10_000
        for start in range(0, rows, block):
            f.write(''.join(LINE.format(i, i % 999) for i in range(start, start + block))
                    .encode('gbk'))
    return os.path.getsize(os.path.join(directory, 'data.csv'))


def read_peak(directory):
    out = subprocess.run([sys.executable, '-c', READER, directory, 'unused', ROOT],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    rows, base_mb, peak_mb = map(int, out.split())
    return rows, base_mb, peak_mb


def test_reading_a_large_file_keeps_memory_flat(tmp_path):
    small_dir, large_dir = str(tmp_path / 'small'), str(tmp_path / 'large')
    small_bytes = write_csv(small_dir, 1_500_000)
    large_bytes = write_csv(large_dir, 5_000_000)
    small_rows, _, small_peak = read_peak(small_dir)
    large_rows, large_base, large_peak = read_peak(large_dir)
    assert (small_rows, large_rows) == (1_500_000, 5_000_000)
    print(f'\npeak RSS reading {small_bytes / 2**20:.0f} MiB: {small_peak} MiB; '
          f'{large_bytes / 2**20:.0f} MiB: {large_peak} MiB ({large_base} MiB before reading)')
    assert large_bytes > 400 * 2**20
    # over three times the data, and the peak grows by well under the data added: a reader
    # holding the file, or a third of it, fails; the allocator's and the read-ahead's warm-up
    # does not (measured 23 to 82 MiB more over runs of the same code on this machine); and
    # what reading adds to the imported libraries is well under the file itself (the imports
    # alone grow as features do)
    assert large_peak - small_peak < (large_bytes - small_bytes) / 2**20 / 3
    assert large_peak - large_base < large_bytes / 2**20
