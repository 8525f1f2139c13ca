"""The run-id rule, one for batch runs, streams and replays: it names a directory."""

import re

import pytest

from transforms.common.errors import ConfigError
from transforms.common.run import RUN_ID_PATTERN, check_run_id, new_run_id


@pytest.mark.parametrize('run_id, ok', [
    ('20261207T120000Z-abcdef', True),
    ('stream-20261207T120000Z-abcdef', True),
    ('stream-acquisition-2026-replay-2', True),
    ('a', True),
    ('a' * 100, True),
    ('a' * 101, False),
    ('..', False),          # the output root's parent
    ('.hidden', False),
    ('-rf', False),         # read as an option
    ('a/b', False),
    ('', False),
    ('客户', False),
    ('a b', False),
])
def test_a_run_id_names_a_directory(run_id, ok):
    if ok:
        assert check_run_id(run_id) == run_id
    else:
        with pytest.raises(ConfigError, match='starting with a letter or digit'):
            check_run_id(run_id, '--run-id')


def test_new_run_ids_keep_the_rule_and_sort_by_time():
    for prefix in ('', 'stream-'):
        assert re.fullmatch(RUN_ID_PATTERN, new_run_id(prefix))
    assert new_run_id() != new_run_id()
