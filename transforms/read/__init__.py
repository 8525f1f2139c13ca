"""Read: the first stage. A seller's export (CSV in any encoding, JSON Lines, Avro, Parquet; local
or
gs://) becomes Arrow record batches with each row's provenance; a row that cannot be read is a dead
letter. Next: conform/."""
