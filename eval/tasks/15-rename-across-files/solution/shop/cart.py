TAX_RATE = 0.2


def compute_total(items):
    """Sum of price * quantity over (price, quantity) pairs, before tax."""
    return round(sum(price * qty for price, qty in items), 2)


def calc_tax(amount):
    return round(amount * TAX_RATE, 2)


class Cart:
    def __init__(self):
        self.items = []

    def add(self, price, qty=1):
        self.items.append((price, qty))

    def total(self):
        return compute_total(self.items)
