# format_line NAME BYTES: print one line of the report.
format_line() {
    printf '%8s  %s\n' "$2" "$1"
}
