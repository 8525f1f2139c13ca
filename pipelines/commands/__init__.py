"""One module per `novation` command: its options and what it does. `pipelines.cli` only
dispatches to them."""
