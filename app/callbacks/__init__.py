"""Signed callbacks: a finished check is POSTed to ``options.callback_url`` (Standard Webhooks).

``hosts`` decides where a callback may go, ``signing`` signs it, ``send`` makes one attempt,
``deliver`` retries due deliveries from the database in one API process at a time.
"""
