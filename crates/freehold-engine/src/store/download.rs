//! Resumable HTTP downloads into the store's partial directory.
//!
//! A download goes to `.partial/<name>.part`, with `.partial/<name>.resume`
//! beside it saying which URL (and which version of the file, by ETag or
//! Last-Modified) the bytes came from. When a pull is interrupted, the next
//! one hashes the bytes already there and asks for the rest with
//! `Range: bytes=N-` (and `If-Range`); a server that answers the whole file
//! instead restarts the download from zero.

use std::path::Path;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, IF_RANGE, LAST_MODIFIED, RANGE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::error::{Result, StoreError, causes};
use super::files;
use super::{Fetched, Progress, ProgressFn, Throttle, blocking};

/// One HTTP source.
pub(crate) struct HttpSource<'a> {
    pub(crate) client: &'a reqwest::Client,
    pub(crate) url: &'a str,
    /// A bearer token (Hugging Face's `HF_TOKEN`).
    pub(crate) bearer: Option<&'a str>,
}

/// What the `.resume` file records about a partial download.
#[derive(Debug, Serialize, Deserialize)]
struct ResumeInfo {
    url: String,
    /// A strong ETag or a Last-Modified date, for `If-Range`.
    validator: Option<String>,
}

/// How a response lets the download go on.
enum Start {
    /// Append to the partial file.
    Append { total: Option<u64> },
    /// Write the file from its first byte.
    Fresh { total: Option<u64> },
    /// The partial file is already the whole file.
    Complete,
    /// The answer does not fit the partial file: start over.
    Restart(&'static str),
}

/// Downloads `source` into `part`, resuming what is there if it came from
/// the same URL. Returns the whole file's size and sha256.
pub(crate) async fn download(
    source: &HttpSource<'_>,
    part: &Path,
    resume_file: &Path,
    expected_size: Option<u64>,
    progress: ProgressFn<'_>,
) -> Result<Fetched> {
    let info = read_resume(resume_file);
    let existing = match tokio::fs::metadata(part).await {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(StoreError::io("read", part)(error)),
    };
    let same_url = info.as_ref().is_some_and(|info| info.url == source.url);
    let mut offset = if same_url { existing } else { 0 };
    if expected_size.is_some_and(|size| offset > size) {
        offset = 0;
    }
    let mut validator = info.and_then(|info| info.validator).filter(|_| offset > 0);
    // Without a validator the server cannot tell us whether the file changed
    // since the partial download; appending to it could splice two
    // versions. Start over instead.
    if offset > 0 && validator.is_none() {
        progress(Progress::Restarting {
            reason:
                "the server gave no ETag or Last-Modified to check the partial download against"
                    .into(),
        });
        offset = 0;
    }
    let mut hasher = Sha256::new();
    if offset > 0 {
        progress(Progress::Resuming { from: offset });
        let path = part.to_owned();
        hasher = blocking(move || files::hash_prefix(&path, offset, &|_| {})).await?;
    } else {
        files::remove_if_exists(part)?;
    }

    let (response, total) = loop {
        let response = send(source, offset, validator.as_deref()).await?;
        let start = match response.status() {
            StatusCode::PARTIAL_CONTENT if offset > 0 => match content_range(response.headers()) {
                Some((start, total)) if start == offset => Start::Append { total },
                _ => Start::Restart("the server answered a different range"),
            },
            StatusCode::OK => {
                if offset > 0 {
                    progress(Progress::Restarting {
                        reason: "the server sent the whole file instead of the rest (it ignores \
                                 ranges, or the file changed)"
                            .into(),
                    });
                }
                Start::Fresh {
                    total: response.content_length(),
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                match content_range(response.headers()) {
                    None => match unsatisfied_total(response.headers()) {
                        Some(total) if total == offset => Start::Complete,
                        _ => Start::Restart("the partial download is not a prefix of the file"),
                    },
                    Some(_) => Start::Restart("the server refused the range"),
                }
            }
            status => return Err(status_error(source.url, status)),
        };
        match start {
            Start::Append { total } => break (response, total),
            Start::Fresh { total } => {
                offset = 0;
                // The old validator described the old bytes.
                validator = None;
                hasher = Sha256::new();
                break (response, total);
            }
            Start::Complete => {
                return Ok(Fetched {
                    sha256: files::finish(hasher),
                    size: offset,
                });
            }
            Start::Restart(reason) => {
                progress(Progress::Restarting {
                    reason: reason.into(),
                });
                offset = 0;
                validator = None;
                hasher = Sha256::new();
            }
        }
    };
    if let (Some(expected), Some(total)) = (expected_size, total)
        && total != expected
    {
        drop(response);
        files::remove_if_exists(part)?;
        files::remove_if_exists(resume_file)?;
        return Err(StoreError::SizeMismatch {
            source_ref: source.url.to_owned(),
            expected,
            actual: total,
        });
    }
    let total = total.or(expected_size);

    let new_validator = strong_validator(response.headers());
    let info = ResumeInfo {
        url: source.url.to_owned(),
        validator: new_validator.or(validator),
    };
    write_resume(resume_file, &info)?;

    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(part)
        .await
        .map_err(StoreError::io("create", part))?;
    file.set_len(offset)
        .await
        .map_err(StoreError::io("write", part))?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(StoreError::io("write", part))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);

    let mut response = response;
    let mut done = offset;
    let mut throttle = Throttle::new(progress, total);
    throttle.report(done);
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                let len = bytes.len() as u64;
                if let Some(expected) = expected_size
                    && done + len > expected
                {
                    drop(writer);
                    files::remove_if_exists(part)?;
                    files::remove_if_exists(resume_file)?;
                    return Err(StoreError::SizeMismatch {
                        source_ref: source.url.to_owned(),
                        expected,
                        actual: done + len,
                    });
                }
                hasher.update(&bytes);
                writer
                    .write_all(&bytes)
                    .await
                    .map_err(StoreError::io("write", part))?;
                done += len;
                throttle.report(done);
            }
            Ok(None) => break,
            Err(error) => {
                keep(writer, part).await?;
                return Err(StoreError::Interrupted {
                    url: source.url.to_owned(),
                    received: done,
                    reason: causes(&error),
                });
            }
        }
    }
    if let Some(total) = total
        && done < total
    {
        keep(writer, part).await?;
        return Err(StoreError::Interrupted {
            url: source.url.to_owned(),
            received: done,
            reason: format!("the connection closed before the end of the {total} bytes"),
        });
    }
    keep(writer, part).await?;
    throttle.finish(done);
    Ok(Fetched {
        sha256: files::finish(hasher),
        size: done,
    })
}

/// Flushes and syncs what was written, so that a resume finds it.
async fn keep(mut writer: BufWriter<tokio::fs::File>, part: &Path) -> Result<()> {
    writer
        .flush()
        .await
        .map_err(StoreError::io("write", part))?;
    writer
        .into_inner()
        .sync_all()
        .await
        .map_err(StoreError::io("sync", part))
}

async fn send(
    source: &HttpSource<'_>,
    offset: u64,
    validator: Option<&str>,
) -> Result<reqwest::Response> {
    let mut request = source.client.get(source.url);
    if let Some(token) = source.bearer {
        request = request.bearer_auth(token);
    }
    if offset > 0 {
        request = request.header(RANGE, format!("bytes={offset}-"));
        if let Some(validator) = validator {
            request = request.header(IF_RANGE, validator);
        }
    }
    request
        .send()
        .await
        .map_err(|source_error| StoreError::Network {
            url: source.url.to_owned(),
            reason: causes(&source_error),
            source: source_error,
        })
}

fn status_error(url: &str, status: StatusCode) -> StoreError {
    let hint = match status.as_u16() {
        401 | 403 => {
            ": access denied; for a gated or private Hugging Face repository, accept its terms on \
             the website and set HF_TOKEN to an access token"
        }
        404 => ": no such file; check the repository, path and revision",
        429 => ": too many requests; wait a while and try again",
        500..=599 => ": the server failed; try again later",
        _ => "",
    };
    StoreError::HttpStatus {
        url: url.to_owned(),
        status: status.as_u16(),
        hint,
    }
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL if known).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        number => Some(number.parse().ok()?),
    };
    Some((start, total))
}

/// `Content-Range: bytes */TOTAL` (on a 416) → TOTAL.
fn unsatisfied_total(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    value.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

/// A validator usable in `If-Range`: a strong ETag, else Last-Modified.
fn strong_validator(headers: &HeaderMap) -> Option<String> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
    };
    match text(ETAG) {
        Some(etag) if !etag.starts_with("W/") => Some(etag.to_owned()),
        _ => text(LAST_MODIFIED).map(str::to_owned),
    }
}

fn read_resume(path: &Path) -> Option<ResumeInfo> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_resume(path: &Path, info: &ResumeInfo) -> Result<()> {
    let text = serde_json::to_vec(info).map_err(|error| StoreError::Io {
        action: "write",
        path: path.to_owned(),
        source: std::io::Error::other(error),
    })?;
    files::write_synced(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(name: reqwest::header::HeaderName, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            content_range(&headers(CONTENT_RANGE, "bytes 100-199/200")),
            Some((100, Some(200)))
        );
        assert_eq!(
            content_range(&headers(CONTENT_RANGE, "bytes 5-9/*")),
            Some((5, None))
        );
        assert_eq!(content_range(&headers(CONTENT_RANGE, "bytes 9-5/10")), None);
        assert_eq!(content_range(&headers(CONTENT_RANGE, "bytes */10")), None);
        assert_eq!(
            unsatisfied_total(&headers(CONTENT_RANGE, "bytes */10")),
            Some(10)
        );
        assert_eq!(content_range(&HeaderMap::new()), None);
    }

    #[test]
    fn validators() {
        assert_eq!(
            strong_validator(&headers(ETAG, "\"abc\"")).as_deref(),
            Some("\"abc\"")
        );
        assert_eq!(strong_validator(&headers(ETAG, "W/\"abc\"")), None);
        assert_eq!(
            strong_validator(&headers(LAST_MODIFIED, "Wed, 21 Oct 2015 07:28:00 GMT")).as_deref(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT")
        );
    }
}
