"""Tests of app.matching."""
