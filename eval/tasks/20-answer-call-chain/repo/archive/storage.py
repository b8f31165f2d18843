"""Files on disk."""
import os


def scan(root):
    if not os.path.isdir(root):
        return []
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            out.append({"name": name, "mtime": os.path.getmtime(path)})
    return out


def discard(root, entry):
    """Mark an entry as discarded; the data goes when the trash is emptied."""
    _move_to_trash(root, entry["name"])
    _empty_trash(root)


def _move_to_trash(root, name):
    trash = os.path.join(root, ".trash")
    os.makedirs(trash, exist_ok=True)
    os.replace(os.path.join(root, name), os.path.join(trash, name))


def _empty_trash(root):
    trash = os.path.join(root, ".trash")
    for name in os.listdir(trash):
        os.unlink(os.path.join(trash, name))
