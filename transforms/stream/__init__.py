"""Stream: the live feed until cut-over. Feed files (feeds.py, pubsub.py) become changes in each CDC
tool's own form (changes.py, cdc_values.py); consent is decided in order per customer
(consent.py), each row keeps its newest change (order.py), and epochs (epochs.py) deliver them
with the batch's conform and mask (deliver.py) and commit them, encrypted, as a chain of sealed
manifests closed by the cut-over (chain.py)."""
