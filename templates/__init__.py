"""Jinja2 templates (ATC cards, documentation site), shipped as package data."""
