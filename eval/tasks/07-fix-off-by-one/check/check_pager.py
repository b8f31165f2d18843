"""Check: paginate returns exactly the items of the requested page."""
import os
import sys

sys.path.insert(0, os.getcwd())
from pager import page_count, paginate  # noqa: E402

items = list(range(10))
cases = [
    ((items, 1, 3), [0, 1, 2]),
    ((items, 2, 3), [3, 4, 5]),
    ((items, 4, 3), [9]),
    ((items, 5, 3), []),
    ((items, 1, 10), items),
    ((items, 2, 5), [5, 6, 7, 8, 9]),
    ((items, 1, 1), [0]),
    ((list("abcdefg"), 3, 2), ["e", "f"]),
    (([], 1, 4), []),
]
for args, want in cases:
    got = paginate(*args)
    if got != want:
        sys.exit(f"paginate{args[1:]} on {args[0]!r} gave {got!r}, expected {want!r}")
for bad in [(items, 0, 3), (items, 1, 0)]:
    try:
        paginate(*bad)
    except ValueError:
        pass
    else:
        sys.exit(f"paginate{bad[1:]} should raise ValueError")
if page_count(10, 3) != 4 or page_count(9, 3) != 3 or page_count(0, 3) != 0:
    sys.exit("page_count changed")
print("ok")
