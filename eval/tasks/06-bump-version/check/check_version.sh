#!/usr/bin/env bash
# Check: the version is 1.5.0 in every place and 1.4.2 is gone.
fail() { echo "FAIL: $*" >&2; exit 1; }

if grep -rnF '1.4.2' --include='*.toml' --include='*.py' --include='*.md' .; then
    fail "1.4.2 still appears"
fi
python3 - <<'PY' || fail "pyproject.toml"
import sys, tomllib
with open("pyproject.toml", "rb") as f:
    p = tomllib.load(f)["project"]
sys.exit(not (p["version"] == "1.5.0" and p["name"] == "weatherly"
              and p["requires-python"] == ">=3.9"))
PY
out=$(PYTHONPATH=src python3 -c 'from weatherly.cli import main; main(["--version"])') \
    || fail "weatherly --version does not run"
[ "$out" = "weatherly 1.5.0" ] || fail "weatherly --version prints '$out'"
grep -qF 'pip install weatherly==1.5.0' README.md || fail "README install line"
grep -qF 'weatherly 1.5.0' README.md || fail "README version output"
echo ok
