"""Plain-text account reports."""

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun",
          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def format_date(d):
    """A date as text, e.g. '3 Mar 2024'."""
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def format_user(user):
    """One line describing a regular user."""
    return f"{user['name']} (member since {format_date(user['joined'])})"


def format_admin(admin):
    """One line describing an administrator and their access level."""
    level = admin.get("level", "full")
    return f"{admin['name']} [admin, {level} access since {format_date(admin['granted'])}]"


def format_report(users, admins):
    lines = [format_admin(a) for a in admins]
    lines += [format_user(u) for u in users]
    return "\n".join(lines)
