"""Split a list of items into numbered pages."""


def page_count(total, per_page):
    """Number of pages needed to show `total` items, `per_page` at a time."""
    if per_page <= 0:
        raise ValueError("per_page must be positive")
    return (total + per_page - 1) // per_page


def paginate(items, page, per_page):
    """Return the items on page `page` (pages are numbered from 1).

    A page past the end is empty.
    """
    if page < 1:
        raise ValueError("pages are numbered from 1")
    if per_page <= 0:
        raise ValueError("per_page must be positive")
    start = (page - 1) * per_page
    end = start + per_page - 1
    return items[start:end]
