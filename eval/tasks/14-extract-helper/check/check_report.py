"""Check: format_date exists at module level, both formatters call it, output unchanged."""
import ast
import datetime
import os
import sys

sys.path.insert(0, os.getcwd())
with open("report.py") as f:
    tree = ast.parse(f.read())
funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
for name in ["format_date", "format_user", "format_admin", "format_report"]:
    if name not in funcs:
        sys.exit(f"report.py has no module-level function {name}")


def calls(func, callee):
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == callee
        for n in ast.walk(func)
    )


for name in ["format_user", "format_admin"]:
    if not calls(funcs[name], "format_date"):
        sys.exit(f"{name} does not call format_date")
    if any(isinstance(n, ast.Name) and n.id == "MONTHS" for n in ast.walk(funcs[name])):
        sys.exit(f"{name} still formats the date itself (uses MONTHS)")

import report  # noqa: E402

D = datetime.date
for d, want in [(D(2024, 3, 3), "3 Mar 2024"), (D(1999, 12, 31), "31 Dec 1999"),
                (D(2020, 1, 1), "1 Jan 2020"), (D(2023, 7, 14), "14 Jul 2023")]:
    got = report.format_date(d)
    if got != want:
        sys.exit(f"format_date({d!r}) returned {got!r}, expected {want!r}")

users = [{"name": "Ana", "joined": D(2024, 3, 3)}, {"name": "Cy", "joined": D(2019, 10, 30)}]
admins = [{"name": "Bo", "granted": D(2021, 12, 25), "level": "read"},
          {"name": "Di", "granted": D(2021, 1, 9)}]
want = ("Bo [admin, read access since 25 Dec 2021]\n"
        "Di [admin, full access since 9 Jan 2021]\n"
        "Ana (member since 3 Mar 2024)\n"
        "Cy (member since 30 Oct 2019)")
got = report.format_report(users, admins)
if got != want:
    sys.exit(f"format_report output changed:\n{got}\nexpected:\n{want}")
print("ok")
