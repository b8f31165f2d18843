"""Small helpers for working with text."""


def word_count(text):
    """Number of whitespace-separated words in `text`."""
    return len(text.split())


def capitalize_words(text):
    """Upper-case the first letter of every word."""
    return " ".join(word[:1].upper() + word[1:] for word in text.split())


def is_palindrome(text):
    """True if `text` reads the same both ways, ignoring case and punctuation."""
    chars = [c.lower() for c in text if c.isalnum()]
    return chars == chars[::-1]
