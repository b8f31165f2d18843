"""A client that retries failed requests."""
import time

MAX_RETRIES = 3
BACKOFF_SECONDS = 0.5


class RequestFailed(Exception):
    pass


def send(request):
    """Send `request` over the network; raises RequestFailed on failure."""
    raise NotImplementedError("wired up by the application")


def fetch_with_retry(request, sender=send, sleep=time.sleep):
    """Send `request`, retrying up to MAX_RETRIES times after the first try."""
    last_error = None
    for attempt in range(MAX_RETRIES + 1):
        try:
            return sender(request)
        except RequestFailed as err:
            last_error = err
            if attempt < MAX_RETRIES:
                sleep(BACKOFF_SECONDS * 2 ** attempt)
    raise last_error
