"""The archive's index: which files exist and when they were written."""
import os

from archive import storage

_cache = {}


def load(root):
    if root not in _cache:
        _cache[root] = storage.scan(root)
    return _cache[root]


def drop(root, entries):
    """Forget `entries` and remove their data."""
    for entry in entries:
        storage.discard(root, entry)
    _cache.pop(root, None)


def prune_cache():
    """Empty the in-memory index cache (nothing on disk is touched)."""
    _cache.clear()


def index_path(root):
    return os.path.join(root, "INDEX")
