#!/usr/bin/env bash
# Print the size in bytes of every regular file directly inside DIR, then the total.
# Usage: report.sh DIR
set -eu
here=$(dirname "$0")
. "$here/lib/files.sh"
. "$here/lib/format.sh"

dir=${1:?usage: report.sh DIR}
total=0
for path in $(list_files "$dir"); do
    bytes=$(file_size "$path")
    format_line "$(basename "$path")" "$bytes"
    total=$((total + bytes))
done
format_line TOTAL "$total"
