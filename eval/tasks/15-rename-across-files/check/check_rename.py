"""Check: calc_total is gone everywhere; compute_total works; main and tests still run."""
import os
import subprocess
import sys

sys.path.insert(0, os.getcwd())
env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

for root, dirs, files in os.walk("."):
    dirs[:] = [d for d in dirs if d not in ("__pycache__", ".git")]
    for name in files:
        path = os.path.join(root, name)
        with open(path, "rb") as f:
            if b"calc_total" in f.read():
                sys.exit(f"{path} still mentions calc_total")

import shop  # noqa: E402
import shop.cart  # noqa: E402
import shop.invoice  # noqa: E402

for mod in (shop, shop.cart):
    if not callable(getattr(mod, "compute_total", None)):
        sys.exit(f"{mod.__name__}.compute_total is missing")
if shop.compute_total([(2.5, 4), (1.25, 1)]) != 11.25:
    sys.exit("compute_total gives a wrong result")
if shop.calc_tax(10.0) != 2.0:
    sys.exit("calc_tax must keep its name and behaviour")
if shop.invoice.invoice_lines([(10.0, 1)]) != ["net: 10.00", "tax: 2.00", "total: 12.00"]:
    sys.exit("invoice_lines changed")

run = subprocess.run([sys.executable, "main.py"], capture_output=True, text=True, env=env)
if run.returncode != 0 or run.stdout.split() != ["net:", "11.25", "tax:", "2.25", "total:", "13.50"]:
    sys.exit(f"python3 main.py failed or printed something else:\n{run.stdout}{run.stderr}")

run = subprocess.run([sys.executable, "-m", "unittest", "-q"], capture_output=True, text=True, env=env)
if run.returncode != 0 or "Ran 0 tests" in run.stderr:
    sys.exit(f"python3 -m unittest failed:\n{run.stderr}")
print("ok")
