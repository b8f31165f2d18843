//! File helpers shared by the editing tools: decoding text while
//! remembering its BOM and line endings, atomic writes, unified diffs.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ToolError;

const BOM: &str = "\u{feff}";

/// A UTF-8 text file with its line endings normalized to `\n`, remembering
/// what to restore on writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text {
    /// The file started with a UTF-8 byte order mark.
    pub(crate) bom: bool,
    /// The file used `\r\n` line endings.
    pub(crate) crlf: bool,
    /// The content without the BOM, with `\n` line endings.
    pub(crate) body: String,
}

impl Text {
    /// Decode `bytes`; `None` when they are not UTF-8.
    pub(crate) fn decode(bytes: Vec<u8>) -> Option<Self> {
        let mut body = String::from_utf8(bytes).ok()?;
        let bom = body.starts_with(BOM);
        if bom {
            body.drain(..BOM.len());
        }
        // A file with any CRLF is treated as a CRLF file: the model writes
        // `\n`, and we write back what the file used. (Mixed files end up
        // all CRLF, which is what editors do too.)
        let crlf = body.contains("\r\n");
        if crlf {
            body = body.replace("\r\n", "\n");
        }
        Some(Self { bom, crlf, body })
    }

    /// The bytes to write for `body` (with `\n` line endings) in this
    /// file's style.
    pub(crate) fn encode(&self, body: &str) -> Vec<u8> {
        let mut out = String::with_capacity(body.len() + 8);
        if self.bom {
            out.push_str(BOM);
        }
        if self.crlf {
            out.push_str(&body.replace("\r\n", "\n").replace('\n', "\r\n"));
        } else {
            out.push_str(body);
        }
        out.into_bytes()
    }
}

/// Read `path` as text, with messages for the model when it cannot be.
pub(crate) fn read_text(path: &Path, shown: &str) -> Result<Text, ToolError> {
    if path.is_dir() {
        return Err(ToolError::failed(format!(
            "{shown} is a directory, not a file"
        )));
    }
    let bytes = std::fs::read(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => ToolError::failed(format!(
            "{shown} does not exist; use glob to find the right path"
        )),
        _ => io_error(format!("reading {shown}"))(error),
    })?;
    Text::decode(bytes).ok_or_else(|| {
        ToolError::failed(format!(
            "{shown} is not UTF-8 text; this tool only edits UTF-8 files"
        ))
    })
}

/// Replace `path` with `bytes` through a temporary file and a rename, so a
/// reader never sees half a file; keeps the old file's permissions.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.freehold-{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        if let Ok(metadata) = std::fs::metadata(path) {
            file.set_permissions(metadata.permissions())?;
        }
        drop(file);
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// A unified diff from `old` to `new` with `a/` and `b/` file headers.
pub(crate) fn unified_diff(old_name: &str, new_name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{old_name}"), &format!("b/{new_name}"))
        .to_string()
}

/// Wrap an I/O error with what was being done.
pub(crate) fn io_error(context: String) -> impl FnOnce(std::io::Error) -> ToolError {
    move |source| ToolError::Io { context, source }
}

/// Run blocking file work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ToolError> + Send + 'static,
) -> Result<T, ToolError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ToolError::failed(format!("the tool stopped unexpectedly: {error}")))?
}

/// The number of lines in `text` (a last line without `\n` counts).
pub(crate) fn line_count(text: &str) -> usize {
    text.lines().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_and_encode_round_trip_bom_and_crlf() {
        let bytes = "\u{feff}a\r\nb\r\n".as_bytes().to_vec();
        let text = Text::decode(bytes.clone()).unwrap();
        assert!(text.bom && text.crlf);
        assert_eq!(text.body, "a\nb\n");
        assert_eq!(text.encode(&text.body), bytes);
        assert_eq!(text.encode("x\ny\n"), "\u{feff}x\r\ny\r\n".as_bytes());
    }

    #[test]
    fn decode_refuses_non_utf8() {
        assert!(Text::decode(vec![0xff, 0xfe, b'a']).is_none());
        let plain = Text::decode(b"a\nb".to_vec()).unwrap();
        assert!(!plain.bom && !plain.crlf);
        assert_eq!(plain.encode("c\n"), b"c\n");
    }

    #[test]
    fn write_atomic_replaces_and_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/run.sh");
        write_atomic(&path, b"one").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // No temporary files are left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }

    #[test]
    fn diff_has_git_style_headers() {
        let diff = unified_diff("f.txt", "f.txt", "a\nb\n", "a\nc\n");
        assert!(diff.starts_with("--- a/f.txt\n+++ b/f.txt\n"), "{diff}");
        assert!(diff.contains("-b\n+c\n"), "{diff}");
    }
}
