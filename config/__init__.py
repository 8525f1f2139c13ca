"""Transfer configs (``*.yaml``) and the loader that validates them into frozen objects."""

from config.loader import (ConsentConfig, DeadLetterConfig, FieldRule, MigrationConfig,
                           OutputConfig, Purpose, TableConfig, Transfer, load_config,
                           parse_config)

__all__ = ['ConsentConfig', 'DeadLetterConfig', 'FieldRule', 'MigrationConfig', 'OutputConfig',
           'Purpose', 'TableConfig', 'Transfer', 'load_config', 'parse_config']
