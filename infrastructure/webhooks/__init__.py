"""Webhook delivery: the secrets vault, which targets may be called, and the deliverer."""
