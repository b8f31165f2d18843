#!/usr/bin/env bash
# Run: bash test_lib.sh
cd "$(dirname "$0")"
. ./lib.sh
status=0
expect() {
    local want=$1; shift
    local got
    got=$("$@")
    if [ "$got" != "$want" ]; then
        echo "FAIL: $* printed '$got', expected '$want'"
        status=1
    fi
}
expect "a b" trim "  a b  "
expect "xyxyxy" repeat 3 xy
expect "a,b,c" join_by , a b c
expect "a, b, c" join_by ", " a b c
expect "only" join_by - only
[ "$status" -eq 0 ] && echo "all tests passed"
exit "$status"
