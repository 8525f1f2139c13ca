"""Write: the fifth stage. Rows go out as encrypted Parquet (Parquet Modular Encryption) or Avro,
refused rows as the encrypted dead letter; delivered.py reads them back for the commands that
check a delivery. Next: commit/."""
