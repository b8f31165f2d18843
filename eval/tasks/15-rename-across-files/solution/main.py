from shop import Cart
from shop import compute_total
from shop.invoice import invoice_lines

cart = Cart()
cart.add(2.50, 4)
cart.add(1.25)
assert cart.total() == compute_total(cart.items)
print("\n".join(invoice_lines(cart.items)))
