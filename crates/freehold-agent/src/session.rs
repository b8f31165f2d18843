//! Sessions: every conversation is an append-only JSONL transcript.
//!
//! `<data dir>/sessions/<id>.jsonl`, one [`Record`] per line: a `meta`
//! line first (id, directory, model, start time), then every message as it
//! is added, usage per model call, checkpoints, and `compacted` records
//! that hold the conversation as it stands after a compaction. Nothing is
//! ever rewritten, so the transcript is also the audit of what happened;
//! loading replays it. The id starts with the UTC start time, so ids sort
//! by age.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use freehold_protocol::{Message, Role, Usage};
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::AgentError;

/// The transcript format's version, in the `meta` line.
pub const FORMAT_VERSION: u32 = 1;

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Record {
    /// The first line.
    Meta(SessionMeta),
    /// A message added to the conversation.
    Message {
        /// The message.
        message: Message,
    },
    /// The conversation after a compaction (or `/clear`): replaces every
    /// message before it when the transcript is loaded.
    Compacted {
        /// The messages that make up the conversation from here on.
        messages: Vec<Message>,
        /// How many messages the summary replaced.
        summarized: usize,
    },
    /// Tokens and cost of one model call.
    Usage {
        /// The model, as `provider:model`.
        model: String,
        /// Its usage.
        usage: Usage,
        /// Its cost in USD, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    /// A checkpoint of the working tree was taken.
    Checkpoint {
        /// Its id.
        id: String,
    },
}

/// What the `meta` line says about a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// The transcript format's version.
    pub version: u32,
    /// The session's id.
    pub id: String,
    /// The project directory it ran in.
    pub cwd: PathBuf,
    /// The model it started with.
    pub model: String,
    /// When it started (RFC 3339, UTC).
    pub created_at: String,
}

/// A session as listed by `freehold sessions`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// Its meta line.
    pub meta: SessionMeta,
    /// The first user prompt, shortened.
    pub title: String,
    /// Messages in the current conversation.
    pub messages: usize,
    /// Last change of the transcript (Unix seconds).
    pub updated: u64,
    /// Its file.
    pub path: PathBuf,
}

/// A session loaded to be resumed.
#[derive(Debug, Clone)]
pub struct LoadedSession {
    /// Its meta line.
    pub meta: SessionMeta,
    /// The conversation as it stands.
    pub messages: Vec<Message>,
    /// Tokens used so far.
    pub usage: Usage,
    /// Cost so far, where known.
    pub cost_usd: Option<f64>,
    /// The number of model calls so far.
    pub model_calls: u32,
}

/// The directory of transcripts.
#[derive(Debug, Clone)]
pub struct SessionStore {
    dir: PathBuf,
}

impl SessionStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default directory: `sessions` in [`data_dir`].
    pub fn default_dir() -> Option<PathBuf> {
        data_dir().map(|dir| dir.join("sessions"))
    }

    /// Where the transcripts are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Start a new session.
    ///
    /// # Errors
    /// When the directory or the file cannot be created.
    pub fn create(&self, cwd: &Path, model: &str) -> Result<SessionWriter, AgentError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| AgentError::Session {
            context: format!(
                "cannot create the sessions directory {}",
                self.dir.display()
            ),
            source,
        })?;
        let now = clock::unix_now();
        let id = format!("{}-{:04x}", clock::compact(now), fastrand::u16(..));
        let meta = SessionMeta {
            version: FORMAT_VERSION,
            id: id.clone(),
            cwd: cwd.to_path_buf(),
            model: model.to_owned(),
            created_at: clock::rfc3339(now),
        };
        let path = self.path_of(&id);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| AgentError::Session {
                context: format!("cannot create the transcript {}", path.display()),
                source,
            })?;
        let mut writer = SessionWriter { id, path, file };
        writer.append(&Record::Meta(meta))?;
        Ok(writer)
    }

    /// Open an existing session to continue it: loads it and returns a
    /// writer that appends to the same transcript.
    ///
    /// # Errors
    /// [`AgentError::NoSuchSession`] when `id` is unknown; I/O or format
    /// errors naming the file and line.
    pub fn resume(&self, id: &str) -> Result<(LoadedSession, SessionWriter), AgentError> {
        let path = self.find(id)?;
        let loaded = load(&path)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| AgentError::Session {
                context: format!("cannot append to {}", path.display()),
                source,
            })?;
        let writer = SessionWriter {
            id: loaded.meta.id.clone(),
            path,
            file,
        };
        Ok((loaded, writer))
    }

    /// Every session, newest first.
    ///
    /// # Errors
    /// When the directory cannot be read. Unreadable transcripts are
    /// skipped (with a warning in the log).
    pub fn list(&self) -> Result<Vec<SessionInfo>, AgentError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(AgentError::Session {
                    context: format!("cannot read {}", self.dir.display()),
                    source,
                });
            }
        };
        let mut sessions = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "jsonl") {
                continue;
            }
            match info(&path) {
                Ok(info) => sessions.push(info),
                Err(error) => tracing::warn!(%error, "skipping an unreadable transcript"),
            }
        }
        sessions.sort_by(|a, b| {
            b.updated
                .cmp(&a.updated)
                .then_with(|| b.meta.id.cmp(&a.meta.id))
        });
        Ok(sessions)
    }

    /// The most recent session that ran in `cwd`.
    ///
    /// # Errors
    /// As [`SessionStore::list`].
    pub fn latest_in(&self, cwd: &Path) -> Result<Option<SessionInfo>, AgentError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|session| session.meta.cwd == cwd))
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.jsonl"))
    }

    /// The transcript of `id`, also accepting a unique prefix of an id.
    fn find(&self, id: &str) -> Result<PathBuf, AgentError> {
        let valid = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            let exact = self.path_of(id);
            if exact.is_file() {
                return Ok(exact);
            }
            let matches: Vec<PathBuf> = self
                .list()?
                .into_iter()
                .filter(|s| s.meta.id.starts_with(id))
                .map(|s| s.path)
                .collect();
            if let [only] = matches.as_slice() {
                return Ok(only.clone());
            }
        }
        Err(AgentError::NoSuchSession {
            id: id.to_owned(),
            dir: self.dir.clone(),
        })
    }
}

/// Where Freehold keeps sessions and checkpoints: `$FREEHOLD_DATA_DIR`,
/// else `$XDG_DATA_HOME/freehold`, else `~/.local/share/freehold`.
pub fn data_dir() -> Option<PathBuf> {
    let var = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
    if let Some(dir) = var("FREEHOLD_DATA_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(xdg) = var("XDG_DATA_HOME") {
        return Some(PathBuf::from(xdg).join("freehold"));
    }
    Some(PathBuf::from(var("HOME")?).join(".local/share/freehold"))
}

/// Appends records to one transcript.
#[derive(Debug)]
pub struct SessionWriter {
    id: String,
    path: PathBuf,
    file: File,
}

impl SessionWriter {
    /// The session's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The transcript's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record and flush it, so a crash loses at most the line
    /// being written.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn append(&mut self, record: &Record) -> Result<(), AgentError> {
        let mut line = serde_json::to_vec(record).map_err(|error| AgentError::Session {
            context: "cannot encode a transcript record".into(),
            source: std::io::Error::other(error),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|source| AgentError::Session {
                context: format!("cannot write to {}", self.path.display()),
                source,
            })
    }
}

/// Replay a transcript.
///
/// # Errors
/// When it cannot be read, or a line is not a record (naming the line).
pub fn load(path: &Path) -> Result<LoadedSession, AgentError> {
    let file = File::open(path).map_err(|source| AgentError::Session {
        context: format!("cannot open {}", path.display()),
        source,
    })?;
    let mut meta = None;
    let mut messages = Vec::new();
    let mut usage = Usage::default();
    let mut cost: Option<f64> = Some(0.0);
    let mut model_calls = 0;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| AgentError::Session {
            context: format!("cannot read {}", path.display()),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = match serde_json::from_str(&line) {
            Ok(record) => record,
            // A torn last line (the process died mid-write) is dropped;
            // anything else is corruption worth reporting.
            Err(_) if is_last_line(path, index) => break,
            Err(error) => {
                return Err(AgentError::CorruptTranscript {
                    path: path.to_path_buf(),
                    line: index + 1,
                    message: error.to_string(),
                });
            }
        };
        match record {
            Record::Meta(m) => meta = Some(m),
            Record::Message { message } => messages.push(message),
            Record::Compacted { messages: kept, .. } => messages = kept,
            Record::Usage {
                usage: u, cost_usd, ..
            } => {
                usage.add(&u);
                model_calls += 1;
                cost = match (cost, cost_usd) {
                    (Some(total), Some(c)) => Some(total + c),
                    _ => None,
                };
            }
            Record::Checkpoint { .. } => {}
        }
    }
    let meta = meta.ok_or_else(|| AgentError::CorruptTranscript {
        path: path.to_path_buf(),
        line: 1,
        message: "no meta line".into(),
    })?;
    Ok(LoadedSession {
        meta,
        messages,
        usage,
        cost_usd: cost,
        model_calls,
    })
}

fn is_last_line(path: &Path, index: usize) -> bool {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count() == index + 1)
        .unwrap_or(false)
}

fn info(path: &Path) -> Result<SessionInfo, AgentError> {
    let loaded = load(path)?;
    let updated = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let title = loaded
        .messages
        .iter()
        .find(|m| m.role == Role::User)
        .map(|m| title_of(&m.text()))
        .unwrap_or_default();
    Ok(SessionInfo {
        meta: loaded.meta,
        title,
        messages: loaded.messages.len(),
        updated,
        path: path.to_path_buf(),
    })
}

/// The user's words of a first message, without the environment note, on
/// one line of at most 72 characters.
fn title_of(text: &str) -> String {
    let text = match text.find("</env>") {
        Some(end) => &text[end + "</env>".len()..],
        None => text,
    };
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 72 {
        let cut: String = line.chars().take(71).collect();
        format!("{cut}…")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (SessionStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "freehold-sessions-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        (SessionStore::new(&dir), dir)
    }

    #[test]
    fn a_transcript_replays_messages_compactions_and_usage() {
        let (store, dir) = store();
        let mut writer = store.create(Path::new("/project"), "local:x").unwrap();
        let first = Message::user("<env>\nDate: x\n</env>\n\nFix   the\nbug");
        writer
            .append(&Record::Message {
                message: first.clone(),
            })
            .unwrap();
        writer
            .append(&Record::Message {
                message: Message::assistant("done"),
            })
            .unwrap();
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 2,
            ..Usage::default()
        };
        writer
            .append(&Record::Usage {
                model: "local:x".into(),
                usage,
                cost_usd: None,
            })
            .unwrap();
        let id = writer.id().to_owned();
        drop(writer);

        let (loaded, mut writer) = store.resume(&id).unwrap();
        assert_eq!(loaded.messages, [first.clone(), Message::assistant("done")]);
        assert_eq!(loaded.usage, usage);
        assert_eq!(loaded.model_calls, 1);
        assert_eq!(loaded.cost_usd, None);
        writer
            .append(&Record::Compacted {
                messages: vec![Message::user("summary")],
                summarized: 2,
            })
            .unwrap();
        writer
            .append(&Record::Message {
                message: Message::user("next"),
            })
            .unwrap();
        let (loaded, _) = store.resume(&id[..12]).unwrap();
        assert_eq!(
            loaded.messages,
            [Message::user("summary"), Message::user("next")]
        );

        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].title, "summary");
        assert_eq!(
            store
                .latest_in(Path::new("/project"))
                .unwrap()
                .unwrap()
                .meta
                .id,
            id
        );
        assert!(store.latest_in(Path::new("/elsewhere")).unwrap().is_none());
        assert_eq!(title_of(&first.text()), "Fix the bug");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_ids_and_corrupt_lines_are_reported() {
        let (store, dir) = store();
        let error = store.resume("nope").unwrap_err().to_string();
        assert!(error.contains("no session `nope`"), "{error}");
        let writer = store.create(Path::new("/p"), "m").unwrap();
        let path = writer.path().to_path_buf();
        drop(writer);
        // A torn last line is dropped…
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"type\":\"mess");
        std::fs::write(&path, &text).unwrap();
        assert!(load(&path).is_ok());
        // …corruption in the middle is an error naming the line.
        text.push_str("\n{\"type\":\"message\",\"message\":{\"role\":\"user\",\"content\":[]}}\n");
        std::fs::write(&path, &text).unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains(":2"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
