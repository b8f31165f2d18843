"""Fetch and print weather forecasts."""

__version__ = "1.5.0"
