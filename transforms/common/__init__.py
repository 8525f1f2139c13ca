"""Common: what every stage shares: errors, file access, record batches and their provenance,
progress and interrupts, sorted keys and the encrypted scratch partitions, reason codes."""
