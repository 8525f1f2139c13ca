"""Stream: the live feed until cut-over. Feed files (feeds.py, pubsub.py) become changes in each CDC
tool's own form (changes.py, cdc_values.py); consent is decided in order per customer
(consent.py), each row keeps its newest change (order.py), and epochs deliver, mask, encrypt and
commit them (epochs.py) with the batch's conform and mask."""
