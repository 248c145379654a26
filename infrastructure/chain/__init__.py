"""Tamper evidence: a hash chain over the stored event log (encoding.py, pure: the canonical bytes
of a stored event, the link digest, checking a sequence of events against a sequence of links)
and its table, catch-up, verification and checkpoints in the database (store.py)."""
