"""Tests of app.merge."""
