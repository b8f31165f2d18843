"""Which archive entries have expired."""
import time

DEFAULT_KEEP_DAYS = 30


def select_expired(entries, keep_days, now=None):
    now = time.time() if now is None else now
    limit = now - keep_days * 86400
    return [e for e in entries if e["mtime"] < limit]
