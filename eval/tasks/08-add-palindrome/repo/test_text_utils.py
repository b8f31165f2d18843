import unittest

from text_utils import capitalize_words, is_palindrome, word_count


class TextUtilsTest(unittest.TestCase):
    def test_word_count(self):
        self.assertEqual(word_count("one two  three"), 3)

    def test_capitalize_words(self):
        self.assertEqual(capitalize_words("hello big world"), "Hello Big World")

    def test_palindromes(self):
        self.assertTrue(is_palindrome("racecar"))
        self.assertTrue(is_palindrome("A man, a plan, a canal: Panama"))
        self.assertTrue(is_palindrome(""))

    def test_not_palindromes(self):
        self.assertFalse(is_palindrome("hello"))
        self.assertFalse(is_palindrome("ab"))


if __name__ == "__main__":
    unittest.main()
