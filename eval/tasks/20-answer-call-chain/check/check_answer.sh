#!/usr/bin/env bash
# Check: the answer names _empty_trash and storage.py, and is an answer rather
# than a dump of the code.
answer=$(cat "$FREEHOLD_EVAL_ANSWER")
[ "${#answer}" -le 2000 ] || { echo "FAIL: the answer is ${#answer} characters long" >&2; exit 1; }
grep -qE '(^|[^A-Za-z0-9_])_?empty_trash([^A-Za-z0-9_]|$)' <<<"$answer" \
    || { echo "FAIL: the answer does not name _empty_trash" >&2; exit 1; }
grep -qiE '(^|[^A-Za-z0-9_])storage(\.py)?([^A-Za-z0-9_]|$)' <<<"$answer" \
    || { echo "FAIL: the answer does not name storage.py" >&2; exit 1; }
echo ok
