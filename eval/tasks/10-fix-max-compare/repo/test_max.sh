#!/usr/bin/env bash
# Run: bash test_max.sh
cd "$(dirname "$0")"
status=0
expect() {
    local want=$1; shift
    local got
    got=$(bash max.sh "$@")
    if [ "$got" != "$want" ]; then
        echo "FAIL: max.sh $* printed '$got', expected '$want'"
        status=1
    fi
}
expect 5 3 5 1
expect 10 9 10
expect 100 7 100 42
[ "$status" -eq 0 ] && echo "all tests passed"
exit "$status"
