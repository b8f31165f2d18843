#!/usr/bin/env bash
# Check: join_by is defined in lib.sh and joins correctly; the old helpers still work.
. ./lib.sh || { echo "FAIL: lib.sh does not source" >&2; exit 1; }
declare -F join_by >/dev/null || { echo "FAIL: join_by is not a function" >&2; exit 1; }
status=0
expect() {
    local want=$1; shift
    local got
    got=$("$@" 2>/dev/null)
    if [ "$got" != "$want" ]; then
        echo "FAIL: $* printed '$got', expected '$want'" >&2
        status=1
    fi
}
expect "a b" trim "  a b  "
expect "xyxyxy" repeat 3 xy
expect "a,b,c" join_by , a b c
expect "a, b, c" join_by ", " a b c
expect "1 :: 2 :: 3 :: 4" join_by " :: " 1 2 3 4
expect "only" join_by - only
expect "x y-z" join_by - "x y" z
expect "*-?" join_by - "*" "?"
expect "" join_by ,
# Exactly one trailing newline.
out=$(join_by / usr local bin; printf x)
[ "$out" = $'usr/local/bin\nx' ] || { echo "FAIL: join_by / usr local bin printed '$out'" >&2; status=1; }
[ "$status" -eq 0 ] && echo ok
exit "$status"
