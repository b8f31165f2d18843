"""A tiny shop: carts, taxes and invoices."""
from shop.cart import Cart, calc_tax, compute_total

__all__ = ["Cart", "calc_tax", "compute_total"]
