"""Fetch and print weather forecasts."""

__version__ = "1.4.2"
