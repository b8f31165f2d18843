# Small string helpers. Source this file: . ./lib.sh

# trim STRING: print STRING without leading and trailing whitespace.
trim() {
    local s=$1
    s=${s#"${s%%[![:space:]]*}"}
    s=${s%"${s##*[![:space:]]}"}
    printf '%s\n' "$s"
}

# repeat N STRING: print STRING N times on one line.
repeat() {
    local i out=""
    for ((i = 0; i < $1; i++)); do
        out+=$2
    done
    printf '%s\n' "$out"
}
