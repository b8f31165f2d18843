#!/usr/bin/env bash
# Check: max.sh compares numerically, including negative numbers.
status=0
expect() {
    local want=$1; shift
    local got
    got=$(bash max.sh "$@" 2>/dev/null)
    if [ "$got" != "$want" ]; then
        echo "FAIL: max.sh $* printed '$got', expected '$want'" >&2
        status=1
    fi
}
expect 5 3 5 1
expect 10 9 10
expect 100 7 100 42
expect 42 42
expect 1000 999 1000 2
expect -1 -5 -1 -3
expect 0 -10 0 -2
expect 21 21 3 20 19
if bash max.sh >/dev/null 2>&1; then
    echo "FAIL: max.sh without arguments should fail" >&2
    status=1
fi
[ "$status" -eq 0 ] && echo ok
exit "$status"
