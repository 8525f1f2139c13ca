"""Annotated Avro schemas of the seller's tables, and their loader.

Every field carries a ``classification`` (and, where it helps, a ``category``); a table names its
``subject_key``. Loading fails closed: a field without a classification, an unknown level or
category, or a category classified below its floor is an error before any data is read.
"""

from schemas.loader import (CATEGORIES, LEVELS, FieldSpec, TableSchema, level_rank,
                            load_schema, parse_schema)

__all__ = ['CATEGORIES', 'LEVELS', 'FieldSpec', 'TableSchema', 'level_rank', 'load_schema',
           'parse_schema']
