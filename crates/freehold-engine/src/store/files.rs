//! Small file-system and formatting helpers for the store.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::error::{Result, StoreError};

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// The lowercase hex sha256 of what `hasher` has seen.
pub(crate) fn finish(hasher: Sha256) -> String {
    hex(&hasher.finalize())
}

/// Feeds the first `len` bytes of `path` to a new hasher, calling
/// `on_bytes` with the running count now and then.
pub(crate) fn hash_prefix(path: &Path, len: u64, on_bytes: &dyn Fn(u64)) -> Result<Sha256> {
    let mut file = fs::File::open(path).map_err(StoreError::io("read", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(buffer.len() as u64)).unwrap_or(buffer.len());
        let n = match file.read(&mut buffer[..want]) {
            Ok(0) => {
                return Err(StoreError::Io {
                    action: "read",
                    path: path.to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file is shorter than expected",
                    ),
                });
            }
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(StoreError::io("read", path)(error)),
        };
        hasher.update(&buffer[..n]);
        done += n as u64;
        on_bytes(done);
    }
    Ok(hasher)
}

/// Removes a file; a missing file is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::io("remove", path)(error)),
    }
}

/// Makes a directory and its parents.
pub(crate) fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(StoreError::io("create the directory", path))
}

/// Flushes a directory's entries (renames into it) to disk. Only Unix can
/// open a directory for this; elsewhere it does nothing.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = fs::File::open(path).map_err(StoreError::io("open the directory", path))?;
        dir.sync_all()
            .map_err(StoreError::io("sync the directory", path))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes `bytes` to `path` durably: written and synced before it returns.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(StoreError::io("create", path))?;
    file.write_all(bytes)
        .map_err(StoreError::io("write", path))?;
    file.sync_all().map_err(StoreError::io("sync", path))
}

/// Renames `from` to `to` (same file system, so atomic).
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|source| StoreError::Io {
        action: "move a file into",
        path: to.to_owned(),
        source,
    })
}

/// Moves `from` to `to` without ever replacing a file at `to`: a hard link
/// fails if `to` exists (atomically, unlike checking first), then `from` is
/// removed. Falls back to check-and-rename where hard links are not
/// supported.
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from).map_err(StoreError::io("remove", from)),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(StoreError::FileInTheWay {
                path: to.to_owned(),
            })
        }
        Err(_) => {
            if to.exists() {
                return Err(StoreError::FileInTheWay {
                    path: to.to_owned(),
                });
            }
            rename(from, to)
        }
    }
}

/// Now, as RFC 3339 UTC to the second (`2025-01-31T12:00:00Z`).
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the Unix epoch as RFC 3339 UTC.
pub(crate) fn rfc3339(secs: u64) -> String {
    freehold_protocol::time::utc_rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_dates() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(
            finish(Sha256::new()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
