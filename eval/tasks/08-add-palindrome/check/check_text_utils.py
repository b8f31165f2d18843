"""Check: is_palindrome exists and behaves; the old helpers still work."""
import os
import sys

sys.path.insert(0, os.getcwd())
import text_utils  # noqa: E402

if not callable(getattr(text_utils, "is_palindrome", None)):
    sys.exit("text_utils.is_palindrome is missing")
cases = {
    "racecar": True,
    "RaceCar": True,
    "A man, a plan, a canal: Panama": True,
    "No 'x' in Nixon": True,
    "Was it a car or a cat I saw?": True,
    "12321": True,
    "": True,
    "a": True,
    "!!": True,
    "hello": False,
    "ab": False,
    "abca": False,
    "123 45": False,
    "palindrome": False,
}
for text, want in cases.items():
    got = text_utils.is_palindrome(text)
    if got is not want:
        sys.exit(f"is_palindrome({text!r}) returned {got!r}, expected {want!r}")
if text_utils.word_count("one two  three") != 3:
    sys.exit("word_count changed")
if text_utils.capitalize_words("hello big world") != "Hello Big World":
    sys.exit("capitalize_words changed")
print("ok")
