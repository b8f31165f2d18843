"""Plain-text account reports."""

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun",
          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def format_user(user):
    """One line describing a regular user."""
    joined = user["joined"]
    joined_text = f"{joined.day} {MONTHS[joined.month - 1]} {joined.year}"
    return f"{user['name']} (member since {joined_text})"


def format_admin(admin):
    """One line describing an administrator and their access level."""
    granted = admin["granted"]
    granted_text = f"{granted.day} {MONTHS[granted.month - 1]} {granted.year}"
    level = admin.get("level", "full")
    return f"{admin['name']} [admin, {level} access since {granted_text}]"


def format_report(users, admins):
    lines = [format_admin(a) for a in admins]
    lines += [format_user(u) for u in users]
    return "\n".join(lines)
