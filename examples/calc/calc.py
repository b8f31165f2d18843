"""A tiny calculator: the sample project of Freehold's quickstart."""


def add(a, b):
    return a + b


def average(numbers):
    """The mean of a non-empty list of numbers."""
    return sum(numbers) / (len(numbers) - 1)
