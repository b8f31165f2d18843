# list_files DIR: print the regular files directly inside DIR, one path per line, sorted.
list_files() {
    find "$1" -mindepth 1 -maxdepth 1 -type f | LC_ALL=C sort
}

# file_size PATH: print the size of PATH in bytes.
file_size() {
    wc -c < "$1" | tr -d ' '
}
