#!/usr/bin/env bash
# Run: bash test_report.sh
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'hello' > "$tmp/a.txt"
printf 'shopping list' > "$tmp/my notes.txt"
mkdir "$tmp/subdir"

expected=$(printf '%8s  %s\n' 5 a.txt 13 'my notes.txt' 18 TOTAL)
actual=$(bash report.sh "$tmp" 2>&1)
if [ "$actual" = "$expected" ]; then
    echo "test passed"
else
    echo "FAIL: expected"
    echo "$expected"
    echo "got"
    echo "$actual"
    exit 1
fi
