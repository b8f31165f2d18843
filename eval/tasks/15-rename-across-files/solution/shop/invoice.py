from shop.cart import calc_tax, compute_total


def invoice_lines(items):
    net = compute_total(items)
    tax = calc_tax(net)
    return [f"net: {net:.2f}", f"tax: {tax:.2f}", f"total: {net + tax:.2f}"]
