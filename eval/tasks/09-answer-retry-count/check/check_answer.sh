#!/usr/bin/env bash
# Check: the answer says 4 (or "four") and not one of the tempting wrong counts.
answer=$(tr '[:upper:]' '[:lower:]' < "$FREEHOLD_EVAL_ANSWER")
grep -qE '(^|[^0-9.])4([^0-9.]|$)|\bfour\b' <<<"$answer" || { echo "FAIL: no 4 in answer" >&2; exit 1; }
# A list of guesses ("3, 4 or 5 times") is not an answer.
if grep -qE '(^|[^0-9.])5([^0-9.]|$)|\bfive\b' <<<"$answer"; then
    echo "FAIL: answer also says 5" >&2; exit 1
fi
echo ok
