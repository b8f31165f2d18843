#!/usr/bin/env bash
# Check: report.sh handles file names with spaces and glob characters, skips
# directories, and still adds up the total.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
run_case() {
    local dir=$1 expected=$2 actual
    actual=$(bash report.sh "$dir" 2>&1)
    if [ "$actual" != "$expected" ]; then
        printf 'FAIL: report.sh %s printed\n%s\nexpected\n%s\n' "$dir" "$actual" "$expected" >&2
        status=1
    fi
}

mkdir "$tmp/one"
printf 'hello' > "$tmp/one/a.txt"
printf 'shopping list' > "$tmp/one/my notes.txt"
mkdir "$tmp/one/subdir"
printf 'ignored' > "$tmp/one/subdir/inner.txt"
run_case "$tmp/one" "$(printf '%8s  %s\n' 5 a.txt 13 'my notes.txt' 18 TOTAL)"

mkdir "$tmp/two words"
printf '1234567890' > "$tmp/two words/b  c.log"
printf 'xyz' > "$tmp/two words/star*.txt"
printf '' > "$tmp/two words/empty"
printf 'abcd' > "$tmp/two words/plain"
run_case "$tmp/two words" \
    "$(printf '%8s  %s\n' 10 'b  c.log' 0 empty 4 plain 3 'star*.txt' 17 TOTAL)"

mkdir "$tmp/none"
run_case "$tmp/none" "$(printf '%8s  %s\n' 0 TOTAL)"

[ "$status" -eq 0 ] && echo ok
exit "$status"
