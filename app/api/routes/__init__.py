"""Routers of the public API."""
