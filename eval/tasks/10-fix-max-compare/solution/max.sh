#!/usr/bin/env bash
# Print the largest of the integer arguments.
# Usage: max.sh N [N...]
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: max.sh N [N...]" >&2
    exit 2
fi

max=$1
shift
for n in "$@"; do
    if [ "$n" -gt "$max" ]; then
        max=$n
    fi
done
echo "$max"
