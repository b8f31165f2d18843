import unittest

from shop import Cart, compute_total
from shop.invoice import invoice_lines


class ShopTest(unittest.TestCase):
    def test_total_of_items(self):
        self.assertEqual(compute_total([(2.5, 4), (1.25, 1)]), 11.25)
        self.assertEqual(compute_total([]), 0)

    def test_cart_total(self):
        cart = Cart()
        cart.add(3.0, 2)
        self.assertEqual(cart.total(), 6.0)

    def test_invoice(self):
        self.assertEqual(invoice_lines([(10.0, 1)]),
                         ["net: 10.00", "tax: 2.00", "total: 12.00"])


if __name__ == "__main__":
    unittest.main()
