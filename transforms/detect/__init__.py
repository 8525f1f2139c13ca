"""Detect: what personal data looks like (mainland-China identifiers and contact data, their check
digits). Read by `classify` to propose a schema, by the reader to tell a header from a data row, by
masking's checks and by `verify's leak check. Pure: no Beam."""
