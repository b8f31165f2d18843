#!/usr/bin/env bash
# Copy a directory into a timestamped archive.
# Usage: backup.sh SOURCE_DIR DEST_DIR
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: backup.sh SOURCE_DIR DEST_DIR" >&2
    exit 2
fi

src=$1
dest=$2

if [ ! -d "$src" ]; then
    echo "backup: source directory '$src' does not exist" >&2
    exit 17
fi

if ! mkdir -p "$dest"; then
    echo "backup: cannot create '$dest'" >&2
    exit 23
fi

stamp=$(date +%Y%m%d-%H%M%S)
archive="$dest/backup-$stamp.tar.gz"
tar -czf "$archive" -C "$src" .
echo "wrote $archive"
