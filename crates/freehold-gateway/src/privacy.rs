//! Privacy routing: keep requests that carry secrets or personal data on
//! local providers, redact them before they leave the machine, or refuse
//! them, and say why in one secret-free line for the audit log.
//!
//! ```toml
//! [gateway.privacy]
//! # Built-in detectors that are on (default: all of them).
//! detectors = ["aws_access_key", "private_key", "github_token", "openai_key",
//!              "anthropic_key", "slack_token", "google_api_key",
//!              "password_assignment", "jwt", "email", "credit_card", "iban", "us_ssn"]
//! # What a match does: local_only (default) | redact | block | off.
//! action = "local_only"
//! # A client sending `x-freehold-privacy: local-only` forces local routing
//! # ("" turns the header off).
//! header = "x-freehold-privacy"
//! # What a document does, which no detector can read (a PDF):
//! # off (default) | local_only | block.
//! documents = "off"
//!
//! # Per-detector overrides of `action`.
//! [gateway.privacy.actions]
//! private_key = "block"
//! email = "redact"
//!
//! # Your own patterns. A group named `secret` limits redaction to it.
//! [[gateway.privacy.patterns]]
//! name = "employee_id"
//! regex = '\bEMP-[0-9]{6}\b'
//! action = "redact"          # optional, default: `action`
//! ```
//!
//! What is inspected: text parts, tool-call arguments, tool results and
//! reasoning text of every message, a document's title and URL and an
//! image's URL (a match there is not redacted, so `redact` keeps the
//! request local). Images' bytes, documents' bytes (PDFs, which would need
//! a PDF reader), tool definitions, the model name and stop sequences are
//! not; `documents` decides on a request that carries a document, as a
//! finding named `document`. A text is read with its backslash escapes
//! undone (`\n`, `\"`, `\u0041`…, however deep), so that a secret in JSON
//! text held as a string is found, and redacted, as in the string it
//! encodes.
//!
//! Cost: one [`RegexSet`] pass over each inspected text; the individual
//! detectors run only on texts the set matched, so a clean request costs one
//! scan and no allocation but a copy of each text with backslash escapes,
//! which is the one scanned.
//!
//! Phone numbers have no detector: their formats are too close to ids,
//! dates, versions and amounts to match with a low false-positive rate.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use freehold_protocol::{ChatRequest, ContentPart};
use regex::{Regex, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

/// The header a client sends to force local routing, unless configured.
pub const DEFAULT_HEADER: &str = "x-freehold-privacy";

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// PEM private key blocks (`-----BEGIN … PRIVATE KEY-----` to its END
    /// line, or to the end of the text when it is cut).
    PrivateKey,
    /// GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// OpenAI-style keys (`sk-…`, `sk-proj-…`) that look random.
    OpenaiKey,
    /// Anthropic keys (`sk-ant-api03-…`).
    AnthropicKey,
    /// Slack tokens (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`).
    SlackToken,
    /// Google API keys (`AIza…`).
    GoogleApiKey,
    /// `password = "…"`, `DB_PASSWORD=…`, `"api_key": "…"` and the like, with
    /// a value that is not a placeholder, a variable, a type or other code
    /// (`getenv("X")`, `self.password`); tokens
    /// (`HF_TOKEN=…`, `.npmrc`'s `_authToken=…`) with a random-looking value;
    /// `Authorization: Bearer …` / `Basic …`; a password in a URL
    /// (`postgres://user:pass@db/x`); a signature in a URL's query (`sig=`,
    /// `Signature=`, `X-Amz-Signature=`, `X-Goog-Signature=`,
    /// `q-signature=`, Backblaze's `Authorization=`, a presigned link's
    /// `X-Amz-Security-Token=`: a presigned or shared access link) or among
    /// a presigned POST form's fields.
    PasswordAssignment,
    /// JSON Web Tokens (`eyJ….eyJ….…`).
    Jwt,
    /// E-mail addresses.
    Email,
    /// Payment card numbers: 13 to 19 digits, known issuer prefixes,
    /// consistent grouping, Luhn-checked.
    CreditCard,
    /// IBANs: known country, its length, mod-97 checksum.
    Iban,
    /// US social security numbers written `ddd-dd-dddd`.
    UsSsn,
}

impl Detector {
    /// Every built-in detector.
    pub const ALL: [Detector; 13] = [
        Detector::AwsAccessKey,
        Detector::PrivateKey,
        Detector::GithubToken,
        Detector::OpenaiKey,
        Detector::AnthropicKey,
        Detector::SlackToken,
        Detector::GoogleApiKey,
        Detector::PasswordAssignment,
        Detector::Jwt,
        Detector::Email,
        Detector::CreditCard,
        Detector::Iban,
        Detector::UsSsn,
    ];

    /// The name used in configuration, findings and `[REDACTED:<name>]`.
    pub fn name(self) -> &'static str {
        match self {
            Detector::AwsAccessKey => "aws_access_key",
            Detector::PrivateKey => "private_key",
            Detector::GithubToken => "github_token",
            Detector::OpenaiKey => "openai_key",
            Detector::AnthropicKey => "anthropic_key",
            Detector::SlackToken => "slack_token",
            Detector::GoogleApiKey => "google_api_key",
            Detector::PasswordAssignment => "password_assignment",
            Detector::Jwt => "jwt",
            Detector::Email => "email",
            Detector::CreditCard => "credit_card",
            Detector::Iban => "iban",
            Detector::UsSsn => "us_ssn",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a match does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Route the request to local providers only.
    #[default]
    LocalOnly,
    /// Replace the matches with `[REDACTED:<detector>]`; the request may then
    /// go anywhere.
    Redact,
    /// Refuse the request.
    Block,
    /// Ignore matches (the detector does not run).
    Off,
}

impl Action {
    /// The configuration name (`local_only`, `redact`, `block`, `off`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::LocalOnly => "local_only",
            Action::Redact => "redact",
            Action::Block => "block",
            Action::Off => "off",
        }
    }

    /// How strict the action is: the strictest action among the findings
    /// decides (block > local_only > redact > off).
    fn strictness(self) -> u8 {
        match self {
            Action::Off => 0,
            Action::Redact => 1,
            Action::LocalOnly => 2,
            Action::Block => 3,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[gateway.privacy]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySettings {
    /// The built-in detectors that are on (default: all).
    #[serde(default = "all_detectors")]
    pub detectors: Vec<Detector>,
    /// What a match does, for detectors without an override (default
    /// `local_only`).
    #[serde(default)]
    pub action: Action,
    /// Per-detector overrides of [`PrivacySettings::action`]; each detector
    /// named must be on.
    #[serde(default)]
    pub actions: BTreeMap<Detector, Action>,
    /// The request header a client sets to `local-only` to force local
    /// routing (default `x-freehold-privacy`; empty: no header).
    #[serde(default = "default_header")]
    pub header: String,
    /// Patterns of your own, checked with the built-in detectors.
    #[serde(default)]
    pub patterns: Vec<CustomPattern>,
    /// What a document does, whose bytes the detectors cannot read (a PDF
    /// by its bytes or URL): `off` (the default) lets it go where the
    /// request is routed; `local_only` keeps the request on this machine;
    /// `block` refuses it. `redact` is refused: there is no text to redact.
    #[serde(default = "documents_off")]
    pub documents: Action,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            detectors: all_detectors(),
            action: Action::default(),
            actions: BTreeMap::new(),
            header: default_header(),
            patterns: Vec::new(),
            documents: documents_off(),
        }
    }
}

fn documents_off() -> Action {
    Action::Off
}

/// The name documents are found under ([`PrivacySettings::documents`]):
/// `local_only trigger=content detectors=document:1`.
const DOCUMENT: &str = "document";

fn all_detectors() -> Vec<Detector> {
    Detector::ALL.to_vec()
}

fn default_header() -> String {
    DEFAULT_HEADER.to_owned()
}

/// One `[[gateway.privacy.patterns]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// The name in findings and in `[REDACTED:<name>]`: lowercase ASCII
    /// letters, digits, `_` and `-`, not a built-in detector's name.
    pub name: String,
    /// A regular expression ([`regex`] syntax; `(?i)` for case-insensitive).
    /// When it has a group named `secret`, only that group is redacted.
    pub regex: String,
    /// What a match does (default: the table's `action`).
    #[serde(default)]
    pub action: Option<Action>,
}

/// What can be wrong with the privacy settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivacyError {
    /// A custom pattern does not compile.
    #[error("[gateway.privacy] pattern `{name}` is not a valid regular expression: {message}")]
    InvalidPattern {
        /// The pattern's name.
        name: String,
        /// The regex compiler's explanation.
        message: String,
    },
    /// A custom pattern matches the empty string, so it would match
    /// everything.
    #[error(
        "[gateway.privacy] pattern `{name}` matches the empty string; make it require at least one character"
    )]
    EmptyMatch {
        /// The pattern's name.
        name: String,
    },
    /// A custom pattern's name is unusable.
    #[error("[gateway.privacy] pattern name `{name}`: {reason}")]
    InvalidName {
        /// The name as configured.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An `actions` entry names a detector that is not in `detectors`.
    #[error(
        "[gateway.privacy] actions.{detector} is set but `{detector}` is not in `detectors`; add it there or remove the override"
    )]
    OverrideForDisabled {
        /// The detector.
        detector: Detector,
    },
    /// The header name is not a valid HTTP header name.
    #[error("[gateway.privacy] header `{0}` is not a valid HTTP header name")]
    InvalidHeader(String),
    /// A built-in detector failed to compile (a bug, reported rather than
    /// panicking).
    #[error("[gateway.privacy] built-in detector `{detector}` failed to compile: {message}")]
    Builtin {
        /// The detector.
        detector: &'static str,
        /// The regex compiler's explanation.
        message: String,
    },
    /// The patterns together are too large to compile into one set.
    #[error("[gateway.privacy] the detectors and patterns together are too large: {0}")]
    TooLarge(String),
    /// `documents = "redact"`: a document's bytes hold no text to redact.
    #[error(
        "[gateway.privacy] documents = \"redact\" cannot work: the detectors cannot read a document's bytes, so nothing in them can be redacted; use \"local_only\" or \"block\" (or \"off\")"
    )]
    DocumentsRedact,
}

/// Where in a request a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The message's index in [`ChatRequest::messages`].
    pub message: usize,
    /// The part's index in that message's content.
    pub part: usize,
    /// Which text of the part.
    pub field: Field,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}.p{}.{}", self.message, self.part, self.field)
    }
}

/// The inspected text of a content part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// [`ContentPart::Text`].
    Text,
    /// The arguments of a [`ContentPart::ToolCall`].
    ToolArguments,
    /// The content of a [`ContentPart::ToolResult`].
    ToolResult,
    /// The text of a [`ContentPart::Reasoning`].
    Reasoning,
    /// A [`ContentPart::Document`], which the detectors cannot read
    /// ([`PrivacySettings::documents`]).
    Document,
    /// A document's title and URL, which they can; a match there is not
    /// redacted (the URL would no longer lead to the file, and the title is
    /// the file's name to some providers), so a `redact` action keeps the
    /// request local instead.
    DocumentName,
    /// An image's URL (any but a `data:` URL, which is the image's bytes,
    /// not read), not redacted either: the image would no longer be found.
    ImageUrl,
}

impl Field {
    /// A short name (`text`, `tool_arguments`, `tool_result`, `reasoning`,
    /// `document`, `document_name`, `image_url`).
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Text => "text",
            Field::ToolArguments => "tool_arguments",
            Field::ToolResult => "tool_result",
            Field::Reasoning => "reasoning",
            Field::Document => "document",
            Field::DocumentName => "document_name",
            Field::ImageUrl => "image_url",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Matches of one detector in one place. It never holds the matched text,
/// so findings are safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The detector's or custom pattern's name.
    pub detector: Arc<str>,
    /// The action configured for it.
    pub action: Action,
    /// Where the matches are.
    pub location: Location,
    /// How many matches there.
    pub count: usize,
}

/// Everything the detectors found in a request (never the matched text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    items: Vec<Finding>,
}

impl Findings {
    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The findings, in request order.
    pub fn iter(&self) -> impl Iterator<Item = &Finding> {
        self.items.iter()
    }

    /// The number of matches in all.
    pub fn total(&self) -> usize {
        self.items.iter().map(|finding| finding.count).sum()
    }

    /// Matches per detector, sorted by name.
    pub fn by_detector(&self) -> Vec<(&str, usize)> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for finding in &self.items {
            *counts.entry(&*finding.detector).or_default() += finding.count;
        }
        counts.into_iter().collect()
    }

    /// The strictest action among the findings (`None` when empty).
    pub fn strictest(&self) -> Option<Action> {
        self.items
            .iter()
            .map(|finding| finding.action)
            .max_by_key(|action| action.strictness())
    }

    fn has(&self, action: Action) -> bool {
        self.items.iter().any(|finding| finding.action == action)
    }

    /// Whether any finding is in text (a detector's or pattern's match),
    /// not a document the detectors cannot read.
    pub fn in_text(&self) -> bool {
        self.items
            .iter()
            .any(|finding| finding.location.field != Field::Document)
    }

    /// Whether any finding is a document ([`PrivacySettings::documents`]).
    pub fn has_document(&self) -> bool {
        self.items
            .iter()
            .any(|finding| finding.location.field == Field::Document)
    }

    /// The findings where redaction does not reach: an image's URL, a
    /// document's title or URL (neither is rewritten).
    pub fn unredactable(&self) -> Findings {
        Findings {
            items: self
                .items
                .iter()
                .filter(|finding| {
                    matches!(
                        finding.location.field,
                        Field::ImageUrl | Field::DocumentName
                    )
                })
                .cloned()
                .collect(),
        }
    }

    /// Whether any finding is in a document's title or URL.
    pub fn in_document_name(&self) -> bool {
        self.items
            .iter()
            .any(|finding| finding.location.field == Field::DocumentName)
    }

    /// The findings whose action is to block the request: what a refusal
    /// must name.
    pub fn blocking(&self) -> Findings {
        Findings {
            items: self
                .items
                .iter()
                .filter(|finding| finding.action == Action::Block)
                .cloned()
                .collect(),
        }
    }

    /// Whether any finding is in an image's URL.
    pub fn in_image_url(&self) -> bool {
        self.items
            .iter()
            .any(|finding| finding.location.field == Field::ImageUrl)
    }
}

/// `aws_access_key:1,email:2`, or `none`.
impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.items.is_empty() {
            return f.write_str("none");
        }
        for (i, (name, count)) in self.by_detector().into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{name}:{count}")?;
        }
        Ok(())
    }
}

/// What led to a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    /// The request's content matched a detector.
    Content,
    /// The client sent the privacy header.
    Header,
    /// The virtual key is `local_only`.
    Key,
}

impl Trigger {
    /// `content`, `header` or `key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Content => "content",
            Trigger::Header => "header",
            Trigger::Key => "key",
        }
    }
}

/// Why a request was not simply passed on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reasons {
    /// What forced the outcome (each of them alone would have).
    pub triggers: Vec<Trigger>,
    /// All the findings, including ones with a milder action.
    pub findings: Findings,
    /// Redaction was asked for but some match survived it, so the request
    /// was kept local instead.
    pub redaction_incomplete: bool,
}

/// `trigger=key+content detectors=email:2`.
impl fmt::Display for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("trigger=")?;
        for (i, trigger) in self.triggers.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(trigger.as_str())?;
        }
        if !self.findings.is_empty() {
            write!(f, " detectors={}", self.findings)?;
        }
        if self.redaction_incomplete {
            f.write_str(" redaction=incomplete")?;
        }
        Ok(())
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing matched and nothing forces local routing: route as usual.
    Pass,
    /// Route to local providers only.
    LocalOnly {
        /// Why.
        reasons: Reasons,
    },
    /// Send this request instead of the original: every match is replaced
    /// by `[REDACTED:<detector>]`.
    Redacted {
        /// The redacted request.
        request: Box<ChatRequest>,
        /// Why.
        reasons: Reasons,
    },
    /// Refuse the request.
    Block {
        /// Why.
        reasons: Reasons,
    },
}

impl Decision {
    /// `pass`, `local_only`, `redacted` or `block`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Pass => "pass",
            Decision::LocalOnly { .. } => "local_only",
            Decision::Redacted { .. } => "redacted",
            Decision::Block { .. } => "block",
        }
    }

    /// The reasons, for every outcome but [`Decision::Pass`].
    pub fn reasons(&self) -> Option<&Reasons> {
        match self {
            Decision::Pass => None,
            Decision::LocalOnly { reasons }
            | Decision::Redacted { reasons, .. }
            | Decision::Block { reasons } => Some(reasons),
        }
    }

    /// Whether the request must stay on local providers.
    pub fn is_local_only(&self) -> bool {
        matches!(self, Decision::LocalOnly { .. })
    }

    /// The decision as the usage ledger keeps it (`local_only
    /// trigger=content detectors=email:1`), or `None` for
    /// [`Decision::Pass`]. Like [`fmt::Display`], it holds no matched text.
    pub fn audit_line(&self) -> Option<String> {
        self.reasons()
            .map(|reasons| format!("{} {reasons}", self.outcome()))
    }

    /// Writes the decision to the log: [`Decision::Pass`] at debug level,
    /// the others at info, as the secret-free line of [`fmt::Display`].
    /// The gateway calls it inside the request's `request` span, whose
    /// `request_id` names the request as its answer's headers and its
    /// ledger line do.
    pub fn log(&self) {
        match self {
            Decision::Pass => tracing::debug!(outcome = self.outcome(), "{self}"),
            _ => tracing::info!(outcome = self.outcome(), "{self}"),
        }
    }
}

/// One line for the audit log, without any matched text:
/// `privacy=local_only trigger=content detectors=aws_access_key:1,email:2`.
impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "privacy={}", self.outcome())?;
        if let Some(reasons) = self.reasons() {
            write!(f, " {reasons}")?;
        }
        Ok(())
    }
}

/// The compiled privacy policy: build it once with [`Privacy::new`], then
/// call [`Privacy::decide`] on every request.
#[derive(Debug)]
pub struct Privacy {
    /// All rules' regexes, in `rules` order: the prefilter.
    set: RegexSet,
    rules: Vec<Rule>,
    /// The header name, lowercase; `None` when off.
    header: Option<String>,
    /// Object keys whose string value is a secret in JSON tool arguments
    /// (present when `password_assignment` is on).
    secret_key: Option<Regex>,
    /// What a document does ([`PrivacySettings::documents`]).
    documents: Action,
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    regex: Regex,
    /// The group to redact (named `secret`); the whole match when `None`.
    secret_group: Option<usize>,
    check: Check,
    action: Action,
}

/// The validation a candidate match must pass.
#[derive(Debug, Clone, Copy)]
enum Check {
    None,
    OpenaiKey,
    QuotedValue,
    BareValue,
    TokenValue,
    HeaderCredential,
    Email,
    CreditCard,
    Iban,
    UsSsn,
}

/// Key names whose value is a secret, as a regex alternation. `pwd` is left
/// out (`PWD=/home/…` is in every environment dump).
macro_rules! secret_keys {
    () => {
        "password|passwd|passphrase|secret|secret[_-]?key|api[_-]?key|access[_-]?key|access[_-]?token|auth[_-]?token"
    };
}

/// The built-in rules; `\b` is made ASCII-only when compiled (Unicode word
/// boundaries would keep the set off its fast DFA).
const BUILTIN_RULES: &[(Detector, &str, Check)] = &[
    (
        Detector::AwsAccessKey,
        r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
        Check::None,
    ),
    (
        Detector::PrivateKey,
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
        Check::None,
    ),
    (
        Detector::GithubToken,
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})\b",
        Check::None,
    ),
    (
        Detector::AnthropicKey,
        r"\bsk-ant-[a-z]+[0-9]{2}-[A-Za-z0-9_-]{32,}",
        Check::None,
    ),
    (
        Detector::OpenaiKey,
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}",
        Check::OpenaiKey,
    ),
    (
        Detector::SlackToken,
        r"\bxox[abprs]-[0-9]{6,}-[A-Za-z0-9-]{8,}",
        Check::None,
    ),
    (
        Detector::GoogleApiKey,
        r"\bAIza[0-9A-Za-z_-]{35}",
        Check::None,
    ),
    // A quoted value ends at the quote that opened it, so that the other
    // kind may be in it (`"it's-S3cret9"`); the regex crate has no
    // backreferences, hence a rule for each kind. The other kind only
    // inside a word (between letters, digits or `_`): elsewhere it is one end
    // of a literal of that kind, and the value would run across code
    // (`"password: '" + pw + "'"`) or JSON (`{"a": "secret: 'x", …}`).
    (
        Detector::PasswordAssignment,
        concat!(
            r"(?i)\b(?:[a-z0-9]+[_-])*(?:",
            secret_keys!(),
            r#")\b\\?["']?\s*(?::=|=>|[:=])\s*\\?"(?P<secret>(?:[^"'\r\n]|\b'\b){4,200})\\?""#
        ),
        Check::QuotedValue,
    ),
    (
        Detector::PasswordAssignment,
        concat!(
            r"(?i)\b(?:[a-z0-9]+[_-])*(?:",
            secret_keys!(),
            r#")\b\\?["']?\s*(?::=|=>|[:=])\s*\\?'(?P<secret>(?:[^"'\r\n]|\b"\b){4,200})\\?'"#
        ),
        Check::QuotedValue,
    ),
    // An unquoted value runs to the next whitespace, whatever symbols it
    // holds (`Tr0ub4dor&3xyz`); [`bare_value`] cuts off what follows it in
    // code and tells code from a password.
    (
        Detector::PasswordAssignment,
        concat!(
            r"(?i)\b(?:[a-z0-9]+[_-])*(?:",
            secret_keys!(),
            r#")\b\\?["']?[ \t]*(?::=|=>|[:=])[ \t]*(?P<secret>[^\s"'`]{4,200})"#
        ),
        Check::BareValue,
    ),
    (
        Detector::PasswordAssignment,
        r#"(?i)\b(?:[a-z0-9]*[_-])*[a-z0-9]*token\b\\?["']?\s*(?::=|=>|[:=])\s*\\?["']?(?P<secret>[A-Za-z0-9._~+/=-]{16,200})"#,
        Check::TokenValue,
    ),
    (
        Detector::PasswordAssignment,
        r#"(?i)\bauthorization\b\\?["']?\s*[:=]\s*\\?["'`]?\s*(?:bearer|basic|token)\s+(?P<secret>[A-Za-z0-9._~+/=-]{12,})"#,
        Check::HeaderCredential,
    ),
    (
        Detector::PasswordAssignment,
        r#"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@"<>{}\\`]+:(?P<secret>[^/\s@"<>{}\\`]{3,200})@"#,
        Check::QuotedValue,
    ),
    // A link's own signature, which grants whoever holds the link access:
    // an Azure shared access signature (`sig=`), CloudFront's and Alibaba
    // OSS's `Signature=`, Backblaze B2's download token (`Authorization=`),
    // also with the `&` escaped as HTML and JSON write it, or the link
    // percent-encoded inside another (once or more: `%26`, `%2526`). These
    // names are common words, so only a query's parameter counts. A value
    // has no upper bound, so that a long one is redacted whole.
    (
        Detector::PasswordAssignment,
        r"(?i)(?:[?&]|&amp;|\\u0026|%(?:25)*(?:26|3f))(?:sig|signature|authorization)(?:=|%(?:25)*3d)(?P<secret>[A-Za-z0-9%+/=_.~-]{16,})",
        Check::HeaderCredential,
    ),
    // Names no other text uses, so they count anywhere (whatever comes
    // before them: `&`, `\u0026`, a percent-encoded `%26` or `%2526`, a
    // quote): in a presigned URL (S3's and Google Cloud Storage's
    // `X-Amz-Signature=` and `X-Goog-Signature=`, Alibaba OSS's V4
    // `x-oss-signature=`, the session token of a link made with temporary
    // credentials, Tencent COS's `q-signature=`) and among the fields of a
    // presigned POST form (`"x-amz-signature": "…"`, as boto3's
    // `generate_presigned_post` returns them).
    (
        Detector::PasswordAssignment,
        r#"(?i)(?:x-amz-signature|x-goog-signature|x-oss-signature|x-amz-security-token|q-signature)\\?["']?\s*(?::|=|%(?:25)*3d)\s*\\?["']?(?P<secret>[A-Za-z0-9%+/=_.~-]{16,})"#,
        Check::HeaderCredential,
    ),
    (
        Detector::Jwt,
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}",
        Check::None,
    ),
    (
        Detector::Email,
        r"\b[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b",
        Check::Email,
    ),
    (
        Detector::CreditCard,
        r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        Check::CreditCard,
    ),
    (
        Detector::Iban,
        r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        Check::Iban,
    ),
    (
        Detector::UsSsn,
        r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        Check::UsSsn,
    ),
];

impl Privacy {
    /// Compiles the settings: every regex once, checked, with errors that
    /// name the bad pattern.
    pub fn new(settings: PrivacySettings) -> Result<Self, PrivacyError> {
        let header = header_name(&settings.header)?;
        if settings.documents == Action::Redact {
            return Err(PrivacyError::DocumentsRedact);
        }
        if let Some(&detector) = settings
            .actions
            .keys()
            .find(|detector| !settings.detectors.contains(detector))
        {
            return Err(PrivacyError::OverrideForDisabled { detector });
        }

        let mut rules = Vec::new();
        let mut password_on = false;
        for detector in Detector::ALL {
            if !settings.detectors.contains(&detector) {
                continue;
            }
            let action = settings
                .actions
                .get(&detector)
                .copied()
                .unwrap_or(settings.action);
            if action == Action::Off {
                continue;
            }
            password_on |= detector == Detector::PasswordAssignment;
            let name: Arc<str> = Arc::from(detector.name());
            for &(_, pattern, check) in BUILTIN_RULES.iter().filter(|rule| rule.0 == detector) {
                let regex = builtin_regex(detector, pattern)?;
                rules.push(Rule {
                    name: Arc::clone(&name),
                    secret_group: secret_group(&regex),
                    regex,
                    check,
                    action,
                });
            }
        }

        for (index, pattern) in settings.patterns.iter().enumerate() {
            check_pattern_name(&pattern.name, &settings.patterns[..index])?;
            let regex =
                Regex::new(&pattern.regex).map_err(|error| PrivacyError::InvalidPattern {
                    name: pattern.name.clone(),
                    message: error.to_string(),
                })?;
            if regex.is_match("") {
                return Err(PrivacyError::EmptyMatch {
                    name: pattern.name.clone(),
                });
            }
            let action = pattern.action.unwrap_or(settings.action);
            if action == Action::Off {
                continue;
            }
            rules.push(Rule {
                name: Arc::from(pattern.name.as_str()),
                secret_group: secret_group(&regex),
                regex,
                check: Check::None,
                action,
            });
        }

        let set = RegexSetBuilder::new(rules.iter().map(|rule| rule.regex.as_str()))
            .build()
            .map_err(|error| PrivacyError::TooLarge(error.to_string()))?;
        let secret_key = if password_on {
            let pattern = concat!("(?i)^(?:[a-z0-9]+[_-])*(?:", secret_keys!(), ")$");
            Some(builtin_regex(Detector::PasswordAssignment, pattern)?)
        } else {
            None
        };
        Ok(Self {
            set,
            rules,
            header,
            secret_key,
            documents: settings.documents,
        })
    }

    /// The request header to pass to [`Privacy::decide`] (lowercase), or
    /// `None` when the header is off.
    pub fn header_name(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// The detectors and custom patterns that run, with their actions.
    pub fn active(&self) -> Vec<(&str, Action)> {
        let mut active: Vec<(&str, Action)> = Vec::new();
        for rule in &self.rules {
            if !active.iter().any(|(name, _)| **name == *rule.name) {
                active.push((&rule.name, rule.action));
            }
        }
        if self.documents != Action::Off {
            active.push((DOCUMENT, self.documents));
        }
        active
    }

    /// Whether any detector finds anything in `text`, whatever its action:
    /// for an end user's id a client gave for the provider
    /// ([`ChatRequest::end_user`]), which is not the request's content and
    /// so never the reason to keep a request local. The gateway leaves such
    /// an id out instead (an email address, say).
    pub fn finds_anything_in(&self, text: &str) -> bool {
        let mut findings = Findings::default();
        let location = Location {
            message: 0,
            part: 0,
            field: Field::Text,
        };
        self.inspect_text(text, location, &mut findings);
        !findings.is_empty()
    }

    /// Runs the detectors over the request's texts, and notes each
    /// document when [`PrivacySettings::documents`] is on (as `document`).
    /// The findings say which detector matched where and how often, never
    /// what.
    pub fn inspect(&self, request: &ChatRequest) -> Findings {
        let mut findings = Findings::default();
        if self.rules.is_empty() && self.documents == Action::Off {
            return findings;
        }
        for (message_index, message) in request.messages.iter().enumerate() {
            for (part_index, part) in message.content.iter().enumerate() {
                if let ContentPart::Document(document) = part {
                    if self.documents != Action::Off {
                        findings.items.push(Finding {
                            detector: Arc::from(DOCUMENT),
                            action: self.documents,
                            location: Location {
                                message: message_index,
                                part: part_index,
                                field: Field::Document,
                            },
                            count: 1,
                        });
                    }
                    // Its title and URL are text the detectors can read.
                    if !self.rules.is_empty() {
                        let location = Location {
                            message: message_index,
                            part: part_index,
                            field: Field::DocumentName,
                        };
                        for text in document_names(document) {
                            self.inspect_text(text, location, &mut findings);
                        }
                    }
                    continue;
                }
                if self.rules.is_empty() {
                    continue;
                }
                if let Some(url) = image_url(part) {
                    let location = Location {
                        message: message_index,
                        part: part_index,
                        field: Field::ImageUrl,
                    };
                    self.inspect_text(url, location, &mut findings);
                    continue;
                }
                let Some((field, text)) = part_text(part) else {
                    continue;
                };
                let location = Location {
                    message: message_index,
                    part: part_index,
                    field,
                };
                self.inspect_text(text, location, &mut findings);
            }
        }
        findings
    }

    /// Decides what happens to a request. `header` is the value of the
    /// [`Privacy::header_name`] header, if the client sent it;
    /// `key_local_only` is the virtual key's `local_only` setting.
    ///
    /// The strictest outcome wins: a `block` match blocks; otherwise the
    /// header, the key or a `local_only` match keeps the request local;
    /// otherwise `redact` matches are redacted (kept local instead if a
    /// match survives redaction); otherwise it passes.
    pub fn decide(
        &self,
        request: &ChatRequest,
        header: Option<&str>,
        key_local_only: bool,
    ) -> Decision {
        let header_local = self.header.is_some() && header.is_some_and(forces_local);
        let findings = self.inspect(request);

        if findings.has(Action::Block) {
            return Decision::Block {
                reasons: Reasons {
                    triggers: vec![Trigger::Content],
                    findings,
                    redaction_incomplete: false,
                },
            };
        }
        let content_local = findings.has(Action::LocalOnly);
        if key_local_only || header_local || content_local {
            let mut triggers = Vec::with_capacity(3);
            if key_local_only {
                triggers.push(Trigger::Key);
            }
            if header_local {
                triggers.push(Trigger::Header);
            }
            if content_local {
                triggers.push(Trigger::Content);
            }
            return Decision::LocalOnly {
                reasons: Reasons {
                    triggers,
                    findings,
                    redaction_incomplete: false,
                },
            };
        }
        if findings.is_empty() {
            return Decision::Pass;
        }

        let redacted = self.redact(request);
        let incomplete = !self.inspect(&redacted).is_empty();
        let reasons = Reasons {
            triggers: vec![Trigger::Content],
            findings,
            redaction_incomplete: incomplete,
        };
        if incomplete {
            Decision::LocalOnly { reasons }
        } else {
            Decision::Redacted {
                request: Box::new(redacted),
                reasons,
            }
        }
    }

    /// A copy of the request with every match replaced by
    /// `[REDACTED:<detector>]`: in text, tool results and reasoning text
    /// (whose signature is then dropped, as it no longer signs the text);
    /// in tool-call arguments inside JSON strings only, so valid JSON stays
    /// valid. Documents and images are left as they are: a match in a
    /// title or URL is found again, and the request kept local
    /// ([`Field::DocumentName`], [`Field::ImageUrl`]).
    fn redact(&self, request: &ChatRequest) -> ChatRequest {
        let mut request = request.clone();
        for message in &mut request.messages {
            for part in &mut message.content {
                match part {
                    ContentPart::Text { text } => {
                        if let Some(redacted) = self.redact_text(text) {
                            *text = redacted;
                        }
                    }
                    ContentPart::ToolCall(call) => {
                        if let Some(redacted) = self.redact_arguments(&call.arguments) {
                            call.arguments = redacted;
                        }
                    }
                    ContentPart::ToolResult(result) => {
                        if let Some(redacted) = self.redact_text(&result.content) {
                            result.content = redacted;
                        }
                    }
                    ContentPart::Reasoning(reasoning) => {
                        if let Some(redacted) = self.redact_text(&reasoning.text) {
                            reasoning.text = redacted;
                            reasoning.signature = None;
                            reasoning.origin = None;
                        }
                    }
                    ContentPart::Image { .. } | ContentPart::Document(_) => {}
                }
            }
        }
        request
    }

    /// Counts the matches in `text`, read with its escapes undone
    /// ([`Unescaped`]).
    fn inspect_text(&self, text: &str, location: Location, findings: &mut Findings) {
        let unescaped = Unescaped::of(text);
        let text = unescaped.as_ref().map_or(text, |view| view.text.as_str());
        if text.is_empty() || !self.set.is_match(text) {
            return;
        }
        let first = findings.items.len();
        for index in self.set.matches(text).iter() {
            let mut count = 0;
            self.each_match(index, text, |_| count += 1);
            if count == 0 {
                continue;
            }
            let rule = &self.rules[index];
            match findings.items[first..]
                .iter_mut()
                .find(|finding| Arc::ptr_eq(&finding.detector, &rule.name))
            {
                Some(finding) => finding.count += count,
                None => findings.items.push(Finding {
                    detector: Arc::clone(&rule.name),
                    action: rule.action,
                    location,
                    count,
                }),
            }
        }
    }

    /// Calls `found` with the span to redact of each validated match of
    /// rule `index`.
    fn each_match(&self, index: usize, text: &str, mut found: impl FnMut(Range<usize>)) {
        let rule = &self.rules[index];
        match rule.secret_group {
            None => {
                for m in rule.regex.find_iter(text) {
                    if m.is_empty() {
                        continue;
                    }
                    if let Some(span) = rule.check.validate(text, m.range()) {
                        found(span);
                    }
                }
            }
            Some(group) => {
                for captures in rule.regex.captures_iter(text) {
                    let Some(m) = captures.get(group).or_else(|| captures.get(0)) else {
                        continue;
                    };
                    if m.is_empty() {
                        continue;
                    }
                    if let Some(span) = rule.check.validate(text, m.range()) {
                        found(span);
                    }
                }
            }
        }
    }

    /// `text` with every match of every enabled detector replaced, whatever
    /// its action: what the ledger keeps of a body (`log_bodies`) when the
    /// request had findings, so that a secret the policy kept local or
    /// redacted is not written to a database that may be elsewhere.
    ///
    /// A JSON body is redacted value by value, as the detectors read the
    /// request, each value with its own escapes undone too (as the module
    /// docs say):
    /// OpenAI's tool arguments are JSON in a JSON string, which keeps its
    /// `\n` before a key once the body is parsed.
    pub fn redacted_for_log(&self, text: &str) -> String {
        // Value by value first (escapes undone), then the whole text again
        // for the rules that read a key with its value (`"password": …`).
        let mut text = std::borrow::Cow::Borrowed(text);
        if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&text) {
            self.redact_json_strings(&mut value);
            if let Ok(redacted) = serde_json::to_string(&value) {
                text = std::borrow::Cow::Owned(redacted);
            }
        }
        self.redact_text(&text).unwrap_or_else(|| text.into_owned())
    }

    /// Redacts every string in `value` (object keys are names, not data),
    /// and the summary inside a compaction the gateway made (base64, which
    /// the detectors would not read).
    fn redact_json_strings(&self, value: &mut serde_json::Value) {
        use freehold_llm::wire::openai_responses::{compaction_content, compaction_summary};
        match value {
            serde_json::Value::String(text) => {
                if let Some(summary) = compaction_summary(text) {
                    if let Some(redacted) = self.redact_text(&summary) {
                        *text = compaction_content(&redacted);
                    }
                } else if let Some(redacted) = self.redact_text(text) {
                    *text = redacted;
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    self.redact_json_strings(item);
                }
            }
            serde_json::Value::Object(fields) => {
                for field in fields.values_mut() {
                    self.redact_json_strings(field);
                }
            }
            _ => {}
        }
    }

    /// The text with every match replaced, or `None` when nothing matched.
    /// The detectors read it with its escapes undone ([`Unescaped`]), as
    /// [`Privacy::inspect`] does; each match is replaced in the text itself,
    /// with the escapes around it kept (`token:\n[REDACTED:github_token]`).
    fn redact_text(&self, text: &str) -> Option<String> {
        let unescaped = Unescaped::of(text);
        let scanned = unescaped.as_ref().map_or(text, |view| view.text.as_str());
        if scanned.is_empty() || !self.set.is_match(scanned) {
            return None;
        }
        let mut spans: Vec<(Range<usize>, usize)> = Vec::new();
        for index in self.set.matches(scanned).iter() {
            self.each_match(index, scanned, |span| {
                let span = match &unescaped {
                    Some(view) => view.original(span),
                    None => span,
                };
                spans.push((span, index));
            });
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_by(|(a, _), (b, _)| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut last: Option<(Range<usize>, usize)> = None;
        for (span, index) in spans {
            match &mut last {
                Some((current, _)) if span.start < current.end => {
                    current.end = current.end.max(span.end);
                }
                _ => {
                    if let Some((current, rule)) = last.take() {
                        push_redacted(&mut out, text, &mut copied, current, &self.rules[rule].name);
                    }
                    last = Some((span, index));
                }
            }
        }
        if let Some((current, rule)) = last {
            push_redacted(&mut out, text, &mut copied, current, &self.rules[rule].name);
        }
        out.push_str(&text[copied..]);
        Some(out)
    }

    /// Tool-call arguments with every match replaced. Valid JSON is redacted
    /// inside its strings only (a secret-like number becomes a string), and
    /// a string or number under a password-like key is redacted whole; text
    /// that is not JSON is redacted as text.
    fn redact_arguments(&self, arguments: &str) -> Option<String> {
        let unescaped = Unescaped::of(arguments);
        let scanned = unescaped
            .as_ref()
            .map_or(arguments, |view| view.text.as_str());
        if scanned.is_empty() || !self.set.is_match(scanned) {
            return None;
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(arguments).is_err() {
            return self.redact_text(arguments);
        }
        let bytes = arguments.as_bytes();
        let mut out = String::with_capacity(arguments.len());
        let mut copied = 0;
        let mut changed = false;
        let mut under_secret_key = false;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    let end = string_end(bytes, i);
                    let literal = &arguments[i..end];
                    let mut next = end;
                    while next < bytes.len() && bytes[next].is_ascii_whitespace() {
                        next += 1;
                    }
                    if bytes.get(next) == Some(&b':') {
                        under_secret_key = self.is_secret_key(literal);
                    } else {
                        if let Some(replacement) =
                            self.redact_json_string(literal, under_secret_key)
                        {
                            out.push_str(&arguments[copied..i]);
                            out.push_str(&replacement);
                            copied = end;
                            changed = true;
                        }
                        under_secret_key = false;
                    }
                    i = end;
                }
                b'-' | b'0'..=b'9' => {
                    let mut end = i + 1;
                    while end < bytes.len()
                        && matches!(bytes[end], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                    {
                        end += 1;
                    }
                    let number = &arguments[i..end];
                    let replacement = if under_secret_key && number.len() >= 4 {
                        Some(format!(
                            "\"[REDACTED:{}]\"",
                            Detector::PasswordAssignment.name()
                        ))
                    } else {
                        self.redact_text(number)
                            .and_then(|text| serde_json::to_string(&text).ok())
                    };
                    if let Some(replacement) = replacement {
                        out.push_str(&arguments[copied..i]);
                        out.push_str(&replacement);
                        copied = end;
                        changed = true;
                    }
                    under_secret_key = false;
                    i = end;
                }
                b'{' | b'[' | b't' | b'f' | b'n' => {
                    under_secret_key = false;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        if !changed {
            return None;
        }
        out.push_str(&arguments[copied..]);
        Some(out)
    }

    /// Whether a JSON key literal (with its quotes) names a secret.
    fn is_secret_key(&self, literal: &str) -> bool {
        let Some(secret_key) = &self.secret_key else {
            return false;
        };
        serde_json::from_str::<String>(literal).is_ok_and(|key| secret_key.is_match(&key))
    }

    /// A JSON string literal's replacement literal, or `None` to keep it.
    fn redact_json_string(&self, literal: &str, under_secret_key: bool) -> Option<String> {
        let value = serde_json::from_str::<String>(literal).ok()?;
        if under_secret_key
            && value.chars().count() >= 4
            && Check::QuotedValue
                .validate(&value, 0..value.len())
                .is_some()
        {
            return Some(format!(
                "\"[REDACTED:{}]\"",
                Detector::PasswordAssignment.name()
            ));
        }
        let redacted = self.redact_text(&value)?;
        serde_json::to_string(&redacted).ok()
    }
}

/// A text as the detectors read it, with its backslash escapes undone
/// (`\n`, `\t`, `\r`, `\b`, `\f`, `\"`, `\/`, `\u00e9`, a surrogate pair),
/// however many backslashes deep (`\\n` in a JSON string inside a JSON
/// string): JSON text held as text (tool arguments, a tool's JSON output,
/// a body's string that is JSON itself) puts an escape's letter right
/// before a secret (`token:\nghp_…`), where the rules that start at a
/// word boundary would not see it; the string it encodes has the boundary.
/// A backslash that starts no escape (`C:\Users`) is kept.
struct Unescaped {
    text: String,
    /// `(offset in text, offset in the original)` just after each escape
    /// (and `(0, 0)`): between two, the text is the original's, copied.
    anchors: Vec<(usize, usize)>,
    /// The original's length.
    original_len: usize,
}

impl Unescaped {
    /// The view of `text`, or `None` when it has no escape to undo.
    fn of(text: &str) -> Option<Self> {
        let mut at = text.find('\\')?;
        let mut view: Option<Self> = None;
        let mut copied = 0;
        while let Some(found) = text[at..].find('\\') {
            let start = at + found;
            let Some((decoded, end)) = escape_at(text.as_bytes(), start) else {
                // Past the whole run of backslashes, which starts no escape.
                at = start + backslashes_at(text.as_bytes(), start);
                continue;
            };
            let unescaped = view.get_or_insert_with(|| Self {
                text: String::with_capacity(text.len()),
                anchors: vec![(0, 0)],
                original_len: text.len(),
            });
            unescaped.text.push_str(&text[copied..start]);
            unescaped.text.push(decoded);
            unescaped.anchors.push((unescaped.text.len(), end));
            copied = end;
            at = end;
        }
        let mut view = view?;
        view.text.push_str(&text[copied..]);
        Some(view)
    }

    /// The original's span that `span` of the view was read from: an
    /// escape's character stands for the whole escape.
    fn original(&self, span: Range<usize>) -> Range<usize> {
        self.original_offset(span.start)..self.original_offset(span.end)
    }

    fn original_offset(&self, offset: usize) -> usize {
        // The last escape that ends at or before `offset`; the text after
        // it is copied, byte for byte.
        let after = self
            .anchors
            .partition_point(|&(in_view, _)| in_view <= offset)
            .saturating_sub(1);
        let (in_view, in_original) = self.anchors.get(after).copied().unwrap_or((0, 0));
        (in_original + (offset - in_view)).min(self.original_len)
    }
}

/// The character of the escape that starts at `start` (a run of
/// backslashes, then its letter) and the offset just past it, or `None`
/// when the run starts no escape.
fn escape_at(bytes: &[u8], start: usize) -> Option<(char, usize)> {
    let letter = start + backslashes_at(bytes, start);
    let decoded = match *bytes.get(letter)? {
        b'n' => '\n',
        b't' => '\t',
        b'r' => '\r',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'"' => '"',
        b'/' => '/',
        b'u' => return unicode_escape_at(bytes, letter + 1),
        _ => return None,
    };
    Some((decoded, letter + 1))
}

/// The character of a `\u` escape whose hex digits start at `digits`, a
/// surrogate pair's two halves (the second as deep as the first) taken
/// together, and the offset just past it.
fn unicode_escape_at(bytes: &[u8], digits: usize) -> Option<(char, usize)> {
    let unit = hex4(bytes, digits)?;
    let end = digits + 4;
    if !(0xD800..0xDC00).contains(&unit) {
        return char::from_u32(unit).map(|c| (c, end));
    }
    let letter = end + backslashes_at(bytes, end);
    if letter == end || bytes.get(letter) != Some(&b'u') {
        return None;
    }
    let low = hex4(bytes, letter + 1).filter(|low| (0xDC00..0xE000).contains(low))?;
    char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)).map(|c| (c, letter + 5))
}

/// How many backslashes there are in a row from `at`.
fn backslashes_at(bytes: &[u8], at: usize) -> usize {
    bytes
        .get(at..)
        .map_or(0, |rest| rest.iter().take_while(|&&b| b == b'\\').count())
}

/// The value of the four hex digits at `at`.
fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// A document's title and URL (when it is given by one).
fn document_names(document: &freehold_protocol::Document) -> impl Iterator<Item = &str> {
    let url = match &document.source {
        freehold_protocol::DocumentSource::Url { url } => Some(url.as_str()),
        freehold_protocol::DocumentSource::Base64 { .. } => None,
    };
    document.title.as_deref().into_iter().chain(url)
}

/// The URL of an image given by one that is not its bytes (any but a
/// `data:` URL).
fn image_url(part: &ContentPart) -> Option<&str> {
    match part {
        ContentPart::Image {
            source: freehold_protocol::ImageSource::Url { url },
        } if !url
            .trim_start()
            .get(..5)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("data:")) =>
        {
            Some(url)
        }
        _ => None,
    }
}

/// The part's inspected text, if it has one.
fn part_text(part: &ContentPart) -> Option<(Field, &str)> {
    match part {
        ContentPart::Text { text } => Some((Field::Text, text)),
        ContentPart::ToolCall(call) => Some((Field::ToolArguments, &call.arguments)),
        ContentPart::ToolResult(result) => Some((Field::ToolResult, &result.content)),
        ContentPart::Reasoning(reasoning) => Some((Field::Reasoning, &reasoning.text)),
        ContentPart::Image { .. } | ContentPart::Document(_) => None,
    }
}

fn push_redacted(out: &mut String, text: &str, copied: &mut usize, span: Range<usize>, name: &str) {
    out.push_str(&text[*copied..span.start]);
    out.push_str("[REDACTED:");
    out.push_str(name);
    out.push(']');
    *copied = span.end;
}

/// The index just past the JSON string literal starting at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Whether `value` is one the privacy header takes: `local-only` (or
/// `local_only`), or empty (no effect). Anything else is refused rather
/// than ignored: a client that sends `local` or `true` believes its request
/// stays on this machine.
pub fn known_header_value(value: &str) -> bool {
    value.trim().is_empty() || forces_local(value)
}

/// Whether a privacy header value asks for local routing.
fn forces_local(value: &str) -> bool {
    let value = value.trim();
    value.eq_ignore_ascii_case("local-only") || value.eq_ignore_ascii_case("local_only")
}

fn header_name(configured: &str) -> Result<Option<String>, PrivacyError> {
    let name = configured.trim();
    if name.is_empty() {
        return Ok(None);
    }
    let token = |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    if !name.bytes().all(token) {
        return Err(PrivacyError::InvalidHeader(configured.to_owned()));
    }
    Ok(Some(name.to_ascii_lowercase()))
}

fn check_pattern_name(name: &str, earlier: &[CustomPattern]) -> Result<(), PrivacyError> {
    let invalid = |reason| PrivacyError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(invalid("must have 1 to 64 characters"));
    }
    if !name.bytes().all(|byte| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
    }) {
        return Err(invalid(
            "may only hold lowercase ASCII letters, digits, `_` and `-`",
        ));
    }
    if Detector::ALL.iter().any(|detector| detector.name() == name) {
        return Err(invalid("is a built-in detector's name"));
    }
    if name == DOCUMENT {
        return Err(invalid(
            "is reserved: documents are found under it (`documents = …`)",
        ));
    }
    if earlier.iter().any(|pattern| pattern.name == name) {
        return Err(invalid("is used by two patterns"));
    }
    Ok(())
}

fn builtin_regex(detector: Detector, pattern: &str) -> Result<Regex, PrivacyError> {
    Regex::new(&pattern.replace(r"\b", r"(?-u:\b)")).map_err(|error| PrivacyError::Builtin {
        detector: detector.name(),
        message: error.to_string(),
    })
}

fn secret_group(regex: &Regex) -> Option<usize> {
    regex
        .capture_names()
        .position(|name| name == Some("secret"))
}

impl Check {
    /// The span to redact when the candidate at `span` is a real match.
    fn validate(self, text: &str, span: Range<usize>) -> Option<Range<usize>> {
        let candidate = &text[span.clone()];
        let ok = match self {
            Check::None => true,
            Check::OpenaiKey => openai_key(candidate),
            Check::QuotedValue => quoted_value(candidate),
            Check::BareValue => return bare_value(text, span),
            Check::TokenValue => {
                token_value(candidate) && !token_context_says_otherwise(text, &span)
            }
            Check::HeaderCredential => token_value(candidate),
            Check::Email => email(candidate),
            Check::CreditCard => return card_in(text, span),
            Check::Iban => return iban(text, span),
            Check::UsSsn => us_ssn(text, &span),
        };
        ok.then_some(span)
    }
}

/// An `sk-` key: not Anthropic's, and random-looking (digits and both
/// cases), which slugs such as `sk-learn-…` are not.
fn openai_key(candidate: &str) -> bool {
    if candidate.starts_with("sk-ant-") {
        return false;
    }
    let bytes = candidate.as_bytes();
    bytes.iter().any(u8::is_ascii_digit)
        && bytes.iter().any(u8::is_ascii_uppercase)
        && bytes.iter().any(u8::is_ascii_lowercase)
}

/// Values that stand for a secret rather than being one.
fn placeholder(value: &str) -> bool {
    const WORDS: [&str; 10] = [
        "password",
        "passwd",
        "changeme",
        "secret",
        "example",
        "redacted",
        "null",
        "none",
        "undefined",
        "your_password",
    ];
    let first = value.chars().next();
    let upper = value.to_ascii_uppercase();
    value.chars().all(|c| Some(c) == first)
        // `YOUR_API_KEY`, `<your-token>` written plainly, `XXXX-XXXX`.
        || upper.starts_with("YOUR_")
        || upper.starts_with("YOUR-")
        || upper.starts_with("XXXX")
        || upper.starts_with("REPLACE_")
        || value.starts_with('$')
        || value.starts_with('<')
        || value.starts_with("{{")
        || value.starts_with("%(")
        || value.starts_with("[REDACTED")
        || WORDS.iter().any(|word| value.eq_ignore_ascii_case(word))
}

/// A quoted value: not a placeholder, and not prose (words without digits
/// or symbols, such as a label `"Enter your password"` or `"Don't share
/// your password"`).
fn quoted_value(value: &str) -> bool {
    if placeholder(value) {
        return false;
    }
    let prose = value.contains(' ')
        && value.chars().all(|c| {
            c.is_alphabetic()
                || c == ' '
                || matches!(c, '.' | ',' | '!' | '?' | '-' | '\'' | '\u{2019}' | '"')
        });
    !prose
}

/// The span of an unquoted value that is a password: the value without
/// what follows it in code ([`bare_value_len`]), when that is not a
/// placeholder, not code ([`looks_like_code`]) and not a bare identifier or
/// dotted path without digits (`password=password`, `secret: String`,
/// `self.password`).
fn bare_value(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let value = &text[span.clone()];
    let value = &value[..bare_value_len(value)];
    let password = value.chars().count() >= 4
        && !placeholder(value)
        && !looks_like_code(value)
        // A type, required or optional (GraphQL's `String!`, `String?`).
        && !identifier(value.trim_end_matches(['!', '?']));
    password.then_some(span.start..span.start + value.len())
}

/// The length of an unquoted value (which runs to the next whitespace)
/// without what belongs to the code around it: the next field after a
/// `&`, `,` or `;` (a URL's query, a call's keyword arguments, a connection
/// string), then the `,` or `;` and the closing brackets opened before the
/// value that end it (`f(password=hunter22),`). A `&`, `,` or `;` inside a
/// password stays in it (`Tr0ub4dor&3xyz`), so that it is redacted whole.
fn bare_value_len(value: &str) -> usize {
    let mut end = value
        .char_indices()
        .find(|&(at, c)| matches!(c, '&' | ',' | ';') && starts_a_field(&value[at + 1..]))
        .map_or(value.len(), |(at, _)| at);
    // A closing bracket with no opening one before it in the value was
    // opened before the value: the value ends there, and what follows is
    // the code's (`None):`, `pw).cursor()`).
    let mut open = [0usize; 3];
    for (at, byte) in value.bytes().enumerate().take(end) {
        let kind = match byte {
            b'(' | b')' => 0,
            b'[' | b']' => 1,
            b'{' | b'}' => 2,
            _ => continue,
        };
        if matches!(byte, b'(' | b'[' | b'{') {
            open[kind] += 1;
        } else if open[kind] == 0 {
            end = at;
            break;
        } else {
            open[kind] -= 1;
        }
    }
    let bytes = value.as_bytes();
    while let Some(b',' | b';' | b':') = bytes[..end].last() {
        end -= 1;
    }
    end
}

/// Whether `rest` starts with another field's `name=` or `name:` (a
/// minified object literal's next key), after HTML's `&amp;`, whose `amp;`
/// follows the `&`.
fn starts_a_field(rest: &str) -> bool {
    let rest = rest.strip_prefix("amp;").unwrap_or(rest);
    let bytes = rest.as_bytes();
    let name_len = bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        .count();
    bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && matches!(bytes.get(name_len), Some(b'=' | b':'))
}

/// Whether an unquoted value is code rather than a password: it starts
/// with a sigil (a variable `$PASS` / `%PASS%`, a pointer or reference
/// `*ptr` / `&str`, a YAML alias `*name` or anchor `&name`), a bracket (a
/// literal, `{password}` in JSX or an f-string, `[u8; 32]`), `@` or `!`
/// before a name (a Ruby or SQL variable, a YAML tag such as `!Ref`); or a
/// name or path is called, indexed or given type arguments
/// (`getenv("X")`, `os.environ["X"]`, `Option<String>`, `Config{`,
/// `env!("X")`).
/// A password's own symbols elsewhere (`9xK*2mQ!pL`, `S3cr3t$Pa55`) are not
/// code.
fn looks_like_code(value: &str) -> bool {
    // `>`: the rest of a hash rocket (`=>$password`); a backslash: a
    // regular expression's class (`\S+`).
    if value.starts_with(['$', '%', '*', '&', '(', '[', '{', '>', '\\']) {
        return true;
    }
    if value
        .strip_prefix(['@', '!'])
        .is_some_and(|name| !name.is_empty() && identifier(name))
    {
        return true;
    }
    let bytes = value.as_bytes();
    let path_len = bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'>'))
        .count();
    let starts_like_a_name = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
    // A Rust macro's `!` may come between (`env!("X")`, `vec![0; 32]`).
    let bracket = match bytes.get(path_len) {
        Some(b'!') => path_len + 1,
        _ => path_len,
    };
    starts_like_a_name && matches!(bytes.get(bracket), Some(b'(' | b'[' | b'{' | b'<'))
}

/// A name or path without digits: letters joined by `_`, `-`, `.`, `::`
/// or `->` (`password`, `String`, `self.password`, `self->password`).
fn identifier(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b'.' | b'-' | b':' | b'>'))
}

/// Whether what surrounds a token's value shows it is not a secret: a call
/// (`token = base64.b64encode(raw)`), or a pagination or sync token
/// (`"nextPageToken": "CiAK…"`), which an API hands to anyone who asks.
fn token_context_says_otherwise(text: &str, span: &Range<usize>) -> bool {
    if text[span.end..].starts_with('(') {
        return true;
    }
    // This value's own key: what comes before it on its line, back to the
    // previous field of an object or a list.
    let mut start = span.start.saturating_sub(48);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let before = &text[start..span.start];
    let key = before
        .rfind(['\n', ',', ';', '{', '&'])
        .map_or(before, |cut| &before[cut + 1..]);
    let before = key.to_ascii_lowercase().replace(['_', '-'], "");
    [
        "pagetoken",
        "nexttoken",
        "continuationtoken",
        "synctoken",
        "cursortoken",
    ]
    .iter()
    .any(|key| before.contains(key))
}

/// A token's value: not a placeholder, random-looking (a letter and a
/// digit), which counts (`max_token = 4096`), names (`token =
/// next_token_kind`) and paths are not, and not of a kind a detector of
/// its own reports (a JWT, a GitHub or OpenAI key…).
fn token_value(value: &str) -> bool {
    const OWN_DETECTORS: [&str; 12] = [
        "eyJ",
        "sk-",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "xox",
        "AIza",
        "AKIA",
        "ASIA",
    ];
    !placeholder(value)
        && value.bytes().any(|b| b.is_ascii_digit())
        && value.bytes().any(|b| b.is_ascii_alphabetic())
        && !OWN_DETECTORS.iter().any(|prefix| value.starts_with(prefix))
}

/// An address that is personal data: not an SSH remote's `git@`, not a
/// file name (`icon@2x.png`), not a no-reply address (commit trailers such
/// as Claude Code's `Co-Authored-By: Claude <noreply@anthropic.com>` would
/// otherwise keep a whole conversation local), and not at a domain
/// reserved for examples (RFC 2606: `example.com`, `.test`, `.invalid`…).
fn email(candidate: &str) -> bool {
    let Some((user, domain)) = candidate.split_once('@') else {
        return false;
    };
    let user = user.to_ascii_lowercase();
    let domain = domain.to_ascii_lowercase();
    // `noreply+tag@…` is a no-reply address too.
    let mailbox = user.split('+').next().unwrap_or_default();
    let no_reply = matches!(
        mailbox,
        "noreply" | "no-reply" | "no_reply" | "donotreply" | "do-not-reply"
    ) || domain == "users.noreply.github.com";
    let tld = domain.rsplit('.').next().unwrap_or_default();
    let under = |name: &str| {
        domain == name
            || domain
                .strip_suffix(name)
                .is_some_and(|rest| rest.ends_with('.'))
    };
    let reserved = matches!(tld, "example" | "test" | "invalid" | "localhost")
        || ["example.com", "example.org", "example.net"]
            .into_iter()
            .any(under);
    !no_reply && !reserved && not_a_file_or_remote(&user, &domain)
}

/// An address whose user is not `git` (SSH remotes) and whose top-level
/// domain is not a file extension (`icon@2x.png`).
fn not_a_file_or_remote(user: &str, domain: &str) -> bool {
    // Documents' names too (`Scan@2024-01-05.pdf`), which are read as a
    // document's title.
    const EXTENSIONS: [&str; 31] = [
        "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "css", "js", "mjs", "ts", "tsx",
        "jsx", "json", "md", "txt", "html", "lock", "yaml", "pdf", "doc", "docx", "xls", "xlsx",
        "ppt", "pptx", "csv", "odt", "rtf", "epub",
    ];
    let tld = domain.rsplit('.').next().unwrap_or_default();
    !user.eq_ignore_ascii_case("git") && !EXTENSIONS.iter().any(|ext| tld.eq_ignore_ascii_case(ext))
}

/// The card number at the start of `span`: the whole candidate, or else the
/// longest part of it that ends at a separator (the regex takes as many
/// digits as it can, so a card followed by its expiry or CVV, `4111 1111
/// 1111 1111 12/29`, arrives as one 18-digit run that no network issues).
fn card_in(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if credit_card(text, &span) {
        return Some(span);
    }
    let bytes = text.as_bytes();
    (span.start + 1..span.end)
        .rev()
        .filter(|&end| matches!(bytes[end], b' ' | b'-') && bytes[end - 1].is_ascii_digit())
        .map(|end| span.start..end)
        .find(|prefix| credit_card(text, prefix))
}

/// A card number: not part of a decimal or version, consistently grouped,
/// an issuer prefix and length that exist, and a valid Luhn digit.
fn credit_card(text: &str, span: &Range<usize>) -> bool {
    let bytes = text.as_bytes();
    let before_dot =
        span.start >= 2 && bytes[span.start - 1] == b'.' && bytes[span.start - 2].is_ascii_digit();
    let after_dot = bytes.get(span.end) == Some(&b'.')
        && bytes.get(span.end + 1).is_some_and(u8::is_ascii_digit);
    if before_dot || after_dot {
        return false;
    }

    let mut digits = [0u8; 19];
    let mut len = 0;
    let mut separator = None;
    let mut groups = [0usize; 19];
    let mut group_count = 0;
    let mut group_len = 0;
    for &byte in &bytes[span.clone()] {
        if byte.is_ascii_digit() {
            if len == digits.len() {
                return false;
            }
            digits[len] = byte - b'0';
            len += 1;
            group_len += 1;
        } else {
            if separator.is_some_and(|s| s != byte) {
                return false;
            }
            separator = Some(byte);
            groups[group_count] = group_len;
            group_count += 1;
            group_len = 0;
        }
    }
    groups[group_count] = group_len;
    group_count += 1;
    let digits = &digits[..len];
    let groups = &groups[..group_count];

    if group_count > 1 {
        let fours = groups[..group_count - 1].iter().all(|&g| g == 4)
            && (1..=4).contains(&groups[group_count - 1]);
        let amex_or_diners = groups == [4, 6, 5] || groups == [4, 6, 4];
        if !fours && !amex_or_diners {
            return false;
        }
    }
    issuer_length(digits) && luhn(digits)
}

/// Whether the prefix belongs to a card network that issues this length.
fn issuer_length(digits: &[u8]) -> bool {
    let len = digits.len();
    let prefix = |n: usize| {
        digits[..n]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    match digits[0] {
        // Mastercard 2-series.
        2 => len == 16 && (2221..=2720).contains(&prefix(4)),
        3 => match prefix(2) {
            34 | 37 => len == 15,
            35 => (16..=19).contains(&len),
            30 | 36 | 38 | 39 => (14..=19).contains(&len),
            _ => false,
        },
        4 => matches!(len, 13 | 16 | 19),
        5 => match prefix(2) {
            51..=55 => len == 16,
            // Maestro.
            50 | 56..=59 => (13..=19).contains(&len),
            _ => false,
        },
        6 => (13..=19).contains(&len),
        _ => false,
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBAN lengths by country (the SWIFT registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// An IBAN of its country's length (the candidate is cut there if the
/// pattern took more) with a valid mod-97 checksum.
fn iban(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let candidate = &text[span.clone()];
    let country = candidate.get(..2)?;
    let &(_, length) = IBAN_LENGTHS.iter().find(|(code, _)| *code == country)?;
    let mut taken = 0;
    let mut end = span.start;
    for (offset, byte) in candidate.bytes().enumerate() {
        if byte != b' ' {
            taken += 1;
        }
        if taken == length {
            end = span.start + offset + 1;
            break;
        }
    }
    if taken < length
        || text
            .as_bytes()
            .get(end)
            .is_some_and(u8::is_ascii_alphanumeric)
    {
        return None;
    }
    let compact = text[span.start..end].bytes().filter(|&b| b != b' ');
    let rearranged = compact.clone().skip(4).chain(compact.take(4));
    let mut remainder = 0u32;
    for byte in rearranged {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            b'A'..=b'Z' => u32::from(byte - b'A') + 10,
            _ => return None,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    (remainder == 1).then_some(span.start..end)
}

/// An SSN that can be issued (area not 000, 666 or 9xx; group and serial
/// not zero), not part of a longer dashed number.
fn us_ssn(text: &str, span: &Range<usize>) -> bool {
    let bytes = text.as_bytes();
    let dashed_before =
        span.start >= 2 && bytes[span.start - 1] == b'-' && bytes[span.start - 2].is_ascii_digit();
    let dashed_after = bytes.get(span.end) == Some(&b'-')
        && bytes.get(span.end + 1).is_some_and(u8::is_ascii_digit);
    if dashed_before || dashed_after {
        return false;
    }
    let candidate = &text[span.clone()];
    let area = candidate.get(0..3).unwrap_or_default();
    let group = candidate.get(4..6).unwrap_or_default();
    let serial = candidate.get(7..11).unwrap_or_default();
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

#[cfg(test)]
mod tests {
    use freehold_protocol::{Message, Reasoning, ToolCall};

    use super::*;

    // Secret-shaped test values are assembled at run time so that no
    // scanner mistakes this file for a leak.
    fn aws_key() -> String {
        format!("{}{}", "AKIA", "Q3EGHX5MZPR7TW2N")
    }
    fn private_key() -> String {
        format!(
            "-----BEGIN {0}PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END {0}PRIVATE KEY-----",
            "RSA "
        )
    }
    fn github_token() -> String {
        format!("gh{}_{}", "p", &"a1B2c3D4e5".repeat(4)[..36])
    }
    fn openai_key() -> String {
        format!("sk-{}{}", "proj-", "T3BlbkFJ9x".repeat(5))
    }
    fn anthropic_key() -> String {
        format!("sk-{}-{}", "ant-api03", "Xy7_Qz2-".repeat(12))
    }
    fn slack_token() -> String {
        format!("xo{}-{}-{}", "xb", "123456789012", "AbCdEfGh1234ijKL")
    }
    fn google_key() -> String {
        format!("AI{}{}", "za", &"SyAb3_x-9Q".repeat(4)[..35])
    }
    fn jwt() -> String {
        format!(
            "{}.{}.{}",
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        )
    }

    fn privacy() -> Privacy {
        Privacy::new(PrivacySettings::default()).unwrap()
    }

    fn with(settings: serde_json::Value) -> Privacy {
        Privacy::new(serde_json::from_value(settings).unwrap()).unwrap()
    }

    fn request(text: &str) -> ChatRequest {
        ChatRequest::new(
            "m",
            vec![Message::system("You are helpful."), Message::user(text)],
        )
    }

    /// The detectors that match `text`, sorted.
    fn detect(privacy: &Privacy, text: &str) -> Vec<String> {
        privacy
            .inspect(&request(text))
            .by_detector()
            .into_iter()
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    fn assert_detects(text: &str, detector: Detector) {
        let found = detect(&privacy(), text);
        assert_eq!(found, vec![detector.name().to_owned()], "in {text:?}");
    }

    fn assert_clean(text: &str) {
        let found = detect(&privacy(), text);
        assert!(found.is_empty(), "{found:?} in {text:?}");
    }

    fn redact_settings() -> serde_json::Value {
        serde_json::json!({ "action": "redact" })
    }

    #[test]
    fn aws_access_keys() {
        assert_detects(
            &format!("aws_access_key_id {}", aws_key()),
            Detector::AwsAccessKey,
        );
        assert_detects(
            &format!("key={}.", aws_key().replace("AKIA", "ASIA")),
            Detector::AwsAccessKey,
        );
        assert_clean(&aws_key()[..19]);
        assert_clean(&format!("X{}", aws_key()));
        assert_clean(&aws_key().to_lowercase());
    }

    #[test]
    fn private_keys() {
        assert_detects(
            &format!("here:\n{}\nthanks", private_key()),
            Detector::PrivateKey,
        );
        // Cut off before its END line: still a key.
        let cut = private_key();
        assert_detects(&cut[..60], Detector::PrivateKey);
        assert_detects(
            &format!("-----BEGIN {} PRIVATE KEY BLOCK-----\nlQOYBF", "PGP"),
            Detector::PrivateKey,
        );
        assert_clean("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqh\n-----END PUBLIC KEY-----");
        assert_clean("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
    }

    #[test]
    fn github_tokens() {
        assert_detects(&format!("token: {}", github_token()), Detector::GithubToken);
        assert_detects(
            &format!(
                "github_{}_{}",
                "pat", "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV"
            ),
            Detector::GithubToken,
        );
        assert_clean("ghp_short and gho_ also short");
        assert_clean("the ghp_ prefix marks personal access tokens");
    }

    #[test]
    fn openai_and_anthropic_keys() {
        assert_detects(&format!("OPENAI {}", openai_key()), Detector::OpenaiKey);
        assert_detects(
            &format!(
                "key {}",
                format_args!("sk-{}", "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kL9n")
            ),
            Detector::OpenaiKey,
        );
        assert_detects(
            &format!("ANTHROPIC {}", anthropic_key()),
            Detector::AnthropicKey,
        );
        // Prose and slugs are not keys.
        assert_clean("Use sk-learn for this, not a task-force of scripts.");
        assert_clean("see sk-this-is-a-long-slug-without-any-digits-at-all for details");
        assert_clean("sk-abc123");
        assert_clean("the risk-management-framework-document-version-two-final is out");
    }

    #[test]
    fn slack_google_and_jwt() {
        assert_detects(&format!("SLACK={}", slack_token()), Detector::SlackToken);
        assert_clean("xoxb-not-a-token");
        assert_detects(&format!("key {}", google_key()), Detector::GoogleApiKey);
        assert_clean("AIzaShort");
        assert_detects(&format!("Authorization: Bearer {}", jwt()), Detector::Jwt);
        assert_clean("eyJhbGciOi.eyJ.notajwt");
    }

    #[test]
    fn password_assignments() {
        for text in [
            "DB_PASSWORD=hunter22",
            "password: \"s3cr3t!x\"",
            "{\"api_key\": \"abcd1234efgh\"}",
            "run it with --password=letmein42",
            "secret: Xk9#pq2z",
            "client_secret = 'Zm9vYmFy1'",
            "$password = 'correct-horse-9';",
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
            "{\"password\": 12345678}",
            "login(user, password=hunter22)",
        ] {
            assert_detects(text, Detector::PasswordAssignment);
        }
        for text in [
            "password: String,",
            "fn login(password: &str) -> bool",
            "connect(user=user, password=password)",
            "self.password = password",
            "password = os.environ[\"DB_PASSWORD\"]",
            "password = getpass.getpass()",
            "PASSWORD=${DB_PASSWORD}",
            "password: \"<your password>\"",
            "\"password\": \"Enter your password\"",
            "\"password\": \"********\"",
            "password_hash = \"5f4dcc3b5aa765d61d8327deb882cf99\"",
            "PWD=/home/alice/project",
            "The secret: patience.",
            "if password == \"\" { return }",
        ] {
            assert_clean(text);
        }
    }

    #[test]
    fn tokens_authorization_headers_and_urls_with_passwords() {
        for text in [
            "HF_TOKEN=hf_aB3dE6gH9jK2mN5pQ8sT1vW4",
            "export NPM_TOKEN=npm_Zx81Kq02LmPw77RtYu55",
            "//registry.npmjs.org/:_authToken=npm_Zx81Kq02LmPw77RtYu55",
            "VAULT_TOKEN: hvs.CAESIJ3x9Kq2Lm8Pw7",
            "GITLAB_TOKEN=glpat-x9Kq2Lm8Pw7RtYu5Ab",
            "curl -H 'Authorization: Bearer 9f8e7d6c5b4a39281706f5e4'",
            "Authorization: Basic dXNlcjpwYXNzd29yZDEyMw==",
            "DATABASE_URL=postgres://app:S3cret@db:5432/x",
            "redis://default:pa55word@10.0.0.7:6379",
        ] {
            assert_detects(text, Detector::PasswordAssignment);
        }
        for text in [
            "max_token = 4096",
            "token = next_token_kind",
            "let token = tokens.next()",
            "HF_TOKEN=${HF_TOKEN}",
            "api_token: YOUR_API_TOKEN_HERE",
            "Authorization: Bearer $OPENAI_API_KEY",
            "https://user:password@example.com/",
            "see https://docs.rs/tokio/latest/tokio/ and git@github.com:a/b.git",
            // Calls, pagination tokens, and JSON that only looks like a URL
            // with credentials.
            "token = base64.b64encode(raw)",
            "access_token = oauth2_session.fetch_token(url)",
            "csrf_token = generate_token_v2(u)",
            "{\"nextPageToken\": \"CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA3\"}",
            "{\"homepage\":\"https://freehold.dev\",\"repository\":\"git@github.com:a/b.git\"}",
            "{\"url\":\"http://localhost:3000\",\"pkg\":\"@types/node\"}",
            "ünïcödé_token = ünïcödé_value",
        ] {
            assert_clean(text);
        }
        // Authorization headers written as code, keys near a pagination
        // token's, a note after a value, characters RFC 3986 allows.
        for text in [
            "NEXT_PAGE_TOKEN=CiAKGjBpNDd2\nHF_TOKEN=hf_aB3dE6gH9jK2mN5pQ8sT1vW4",
            "{\"nextPageToken\":\"\",\"refresh_token\":\"1//0gAbCdEf123456789xyzQ\"}",
            "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4 (expires in 1h)",
            "GITLAB_TOKEN=glpat-x9Kq2Lm8Pw7RtYu5Ab (rotated)",
            "mysql://root:pa,ss99@db/x",
            "amqp://guest:it's-9x@mq",
            "headers = {\"Authorization\": \"Bearer 9f8e7d6c5b4a39281706f5e4\"}",
            "headers: {Authorization: `Bearer 9f8e7d6c5b4a39281706f5e4`}",
        ] {
            assert_detects(text, Detector::PasswordAssignment);
        }
    }

    /// A link's signature grants whoever holds the link access: Azure's
    /// shared access signatures, S3's and Google Cloud Storage's presigned
    /// URLs.
    #[test]
    fn signed_links() {
        for text in [
            "https://acct.blob.core.windows.net/c/report.pdf?sv=2022-11-02&ss=b&srt=o&sp=r\
             &se=2026-12-08T00:00:00Z&spr=https&sig=Xo5%2BzRk8Yt3qLm9Pw2vN7bC4dF6gH1jK0sA%3D",
            "https://bucket.s3.amazonaws.com/k.png?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Date=20261207T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            "https://storage.googleapis.com/b/o.pdf?X-Goog-Algorithm=GOOG4-RSA-SHA256\
             &X-Goog-Expires=900&X-Goog-Signature=8a2b9c3d4e5f60718293a4b5c6d7e8f90a1b2c3d",
            // Escaped by HTML and JSON, and percent-encoded inside another
            // link.
            "<a href=\"https://b.s3.amazonaws.com/k?X-Amz-Expires=60&amp;X-Amz-Signature=\
             5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7\">",
            "{\"url\": \"https://b.s3.amazonaws.com/k?X-Amz-Expires=60\\u0026X-Amz-Signature=\
             5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7\"}",
            "https://login.example/?next=https%3A%2F%2Facct.blob.core.windows.net%2Fc%3Fsv%3D1\
             %26sig%3DXo5%252BzRk8Yt3qLm9Pw2vN7bC4dF6gH1jK0sA%253D",
            "https://login.example/?next=https%3A%2F%2Fb.s3.amazonaws.com%2Fk%3FX-Amz-Expires%3D60\
             %26X-Amz-Signature%3D5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            // Encoded twice, as a link inside a link inside a link.
            "https://a.example/?to=https%253A%252F%252Fb.s3.amazonaws.com%252Fk%253FX-Amz-Expires%253D60\
             %2526X-Amz-Signature%253D5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            "https://a.example/?to=https%253A%252F%252Facct.blob.core.windows.net%252Fc%253Fsv%253D1\
             %2526sig%253DXo5zRk8Yt3qLm9Pw2vN7bC4dF6gH1jK0sA",
            // Alibaba OSS's V4 signature.
            "https://b.oss-cn-hangzhou.aliyuncs.com/a.pdf?x-oss-signature-version=OSS4-HMAC-SHA256\
             &x-oss-date=20261207T000000Z&x-oss-expires=3600\
             &x-oss-signature=2f2b8c0e5d6a7f8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b",
            // CloudFront, Tencent COS, Backblaze B2.
            "https://d111111abcdef8.cloudfront.net/v.mp4?Expires=1765000000\
             &Signature=Nql641NHEUkUaXQHZINK1FZ~SYeUSoBJMxjdgqrzIdzV2gyEXPDNv0pYdWJkflDKJ3xIu7lbwRpSkG98NBlgPi4ZJpRRnVX4kXAJK6tdNx6FucDB7OVqzcxkxHsGFd8VCG1BkC-Afh9~lOCMIYHIaiOB6~5jt9w2EOwi6sIIqrg_&Key-Pair-Id=K2JCJMDEHXQW5F",
            "https://b-1250000000.cos.ap-guangzhou.myqcloud.com/a.pdf?q-sign-algorithm=sha1\
             &q-ak=AKIDxxxxxxxx&q-sign-time=1765000000;1765003600&q-key-time=1765000000;1765003600\
             &q-header-list=host&q-url-param-list=&q-signature=3a1f0c9b2d4e5f60718293a4b5c6d7e8f90a1b2c",
            "https://f002.backblazeb2.com/file/bucket/report.pdf?Authorization=\
             3_20261207000000_4a3b2c1d0e9f8a7b6c5d4e3f_a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0_002_20261208000000_0024_dnld",
            // A presigned link made with temporary credentials carries
            // their session token.
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=ASIAEXAMPLE%2F20261207%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Security-Token=IQoJb3JpZ2luX2VjEJr%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEaCXVzLWVhc3QtMSJHMEUCIQD",
            // A presigned POST's form fields, as boto3 returns them and
            // as a form or `curl -F` sends them.
            "{'url': 'https://b.s3.amazonaws.com/', 'fields': {'key': 'up/a.csv', \
             'x-amz-algorithm': 'AWS4-HMAC-SHA256', 'policy': 'eyJleHBpcmF0aW9uIjoi', \
             'x-amz-signature': '9f0c8b1d2e3a4f5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b'}}",
            "{\"fields\": {\"X-Amz-Signature\": \"9f0c8b1d2e3a4f5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f\"}}",
            "curl -F x-amz-signature=9f0c8b1d2e3a4f5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f -F file=@a.csv",
        ] {
            assert_detects(text, Detector::PasswordAssignment);
        }
        for text in [
            // Not a query, or no signature's value.
            "sig=Xo5zRk8Yt3qLm9Pw2vN7 in a shell script",
            "https://example.org/search?q=signature&signature=none",
            "https://example.org/a?sig=${SIGNATURE}",
            // The names in prose and code, without a value.
            "Send X-Amz-Signature: it is computed from the policy.",
            "let q_signature = sign(&key); // the q-signature parameter",
            "the OAuth server returns ?authorization_code=abc123def456ghi789",
        ] {
            assert_clean(text);
        }
        // A session token of any length is redacted whole.
        let token = "IQoJb3JpZ2luX2VjEJr".repeat(80);
        let link = format!("https://b.s3.amazonaws.com/k?X-Amz-Security-Token={token}&x=1");
        let redacted = privacy().redacted_for_log(&link);
        assert_eq!(
            redacted,
            "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=[REDACTED:password_assignment]&x=1"
        );
    }

    #[test]
    fn emails() {
        assert_detects(
            "write to alice.smith+work@mail.corp.co.uk today",
            Detector::Email,
        );
        assert_clean("git clone git@github.com:freehold-ai/freehold.git");
        assert_clean("icons: logo@2x.png, logo@3x.png");
        assert_clean("npm i react@18.2.0 @types/node");
        assert_clean("@property\ndef name(self): ...");
        // No-reply senders and documentation domains are nobody's address.
        assert_clean("Co-Authored-By: Claude <noreply@anthropic.com>");
        assert_clean("Author: bot <12345+bot@users.noreply.github.com>");
        assert_clean("send it to user@example.com or admin@corp.test");
        assert_detects("ask bob@corp.io", Detector::Email);
    }

    #[test]
    fn credit_cards() {
        assert_detects("card 4111 1111 1111 1111 exp 12/29", Detector::CreditCard);
        assert_detects("card 4111-1111-1111-1111", Detector::CreditCard);
        assert_detects("amex 3782 822463 10005", Detector::CreditCard);
        assert_detects("mc 5555555555554444", Detector::CreditCard);
        // Near misses: Luhn fails, mixed separators, a millisecond timestamp,
        // a version, an order number of the wrong length.
        assert_clean("card 4111 1111 1111 1112");
        assert_clean("card 4111 1111-1111 1111");
        assert_clean("at 1700000000000 ms");
        assert_clean("version 3.4111111111111111");
        assert_clean("order 41111111111111");
        // A card followed by digits of its own (expiry, CVV).
        assert_detects("card 4111 1111 1111 1111 12/29", Detector::CreditCard);
        assert_detects("4111111111111111 123", Detector::CreditCard);
        assert_detects("4242 4242 4242 4242 123", Detector::CreditCard);
    }

    #[test]
    fn ibans() {
        assert_detects("IBAN GB82 WEST 1234 5698 7654 32, thanks", Detector::Iban);
        assert_detects("pay to DE89370400440532013000", Detector::Iban);
        // Wrong checksum, wrong length, unknown country.
        assert_clean("IBAN GB82 WEST 1234 5698 7654 33");
        assert_clean("IBAN DE8937040044053201300");
        assert_clean("ZZ82 WEST 1234 5698 7654 32");
    }

    #[test]
    fn us_ssns() {
        assert_detects("SSN 123-45-6789.", Detector::UsSsn);
        for text in [
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
            "2024-123-45-6789",
        ] {
            assert_clean(text);
        }
        assert_clean("call 555-123-4567");
    }

    #[test]
    fn text_is_redacted_with_the_detector_name() {
        let privacy = with(redact_settings());
        let text = format!("use {} and mail bob@corp.io", aws_key());
        let Decision::Redacted { request, reasons } = privacy.decide(&request(&text), None, false)
        else {
            panic!("not redacted");
        };
        assert_eq!(
            request.messages[1].text(),
            "use [REDACTED:aws_access_key] and mail [REDACTED:email]"
        );
        assert_eq!(reasons.triggers, vec![Trigger::Content]);
        assert_eq!(reasons.findings.total(), 2);
        assert!(privacy.inspect(&request).is_empty());
    }

    #[test]
    fn password_redaction_keeps_the_key() {
        let privacy = with(redact_settings());
        let Decision::Redacted { request, .. } =
            privacy.decide(&request("DB_PASSWORD=hunter22 ok"), None, false)
        else {
            panic!("not redacted");
        };
        assert_eq!(
            request.messages[1].text(),
            "DB_PASSWORD=[REDACTED:password_assignment] ok"
        );
    }

    /// The tool call of an assistant message with `arguments`, as the
    /// policy redacts it (it must redact something).
    fn redacted_call(privacy: &Privacy, arguments: String) -> ToolCall {
        let chat = ChatRequest::new(
            "m",
            vec![Message {
                role: freehold_protocol::Role::Assistant,
                content: vec![ContentPart::ToolCall(ToolCall::new(
                    "c1", "shell", arguments,
                ))],
            }],
        );
        let Decision::Redacted { request, .. } = privacy.decide(&chat, None, false) else {
            panic!("not redacted");
        };
        let Some(ContentPart::ToolCall(call)) = request.messages[0].content.first() else {
            panic!("not a tool call");
        };
        call.clone()
    }

    #[test]
    fn tool_arguments_stay_valid_json() {
        let privacy = with(redact_settings());
        let arguments = format!(
            r#"{{"command": "export KEY={}", "password": "hunter22", "card": 4111111111111111, "n": 3, "nested": {{"to": ["alice@corp.io", "plain"], "token": "quote \" {}"}}}}"#,
            aws_key(),
            github_token()
        );
        let original: serde_json::Value = serde_json::from_str(&arguments).unwrap();
        let call = redacted_call(&privacy, arguments);
        let value: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(value["command"], "export KEY=[REDACTED:aws_access_key]");
        assert_eq!(value["password"], "[REDACTED:password_assignment]");
        assert_eq!(value["card"], "[REDACTED:credit_card]");
        assert_eq!(value["n"], 3);
        assert_eq!(value["nested"]["to"][0], "[REDACTED:email]");
        assert_eq!(value["nested"]["to"][1], "plain");
        assert_eq!(value["nested"]["token"], "quote \" [REDACTED:github_token]");
        // Nothing else changed: same keys, order and spacing.
        assert_eq!(
            call.arguments,
            r#"{"command": "export KEY=[REDACTED:aws_access_key]", "password": "[REDACTED:password_assignment]", "card": "[REDACTED:credit_card]", "n": 3, "nested": {"to": ["[REDACTED:email]", "plain"], "token": "quote \" [REDACTED:github_token]"}}"#
        );
        assert_eq!(
            value.as_object().map(|o| o.len()),
            original.as_object().map(|o| o.len())
        );
    }

    #[test]
    fn a_secret_after_an_escape_in_tool_arguments_is_found() {
        // In the arguments' JSON text the key follows `\n`: no word
        // boundary there, but there is one in the string they hold.
        let privacy = with(redact_settings());
        let arguments = format!(r#"{{"cmd": "echo x\n{}"}}"#, aws_key());
        let call = redacted_call(&privacy, arguments);
        assert_eq!(
            call.arguments,
            r#"{"cmd": "echo x\n[REDACTED:aws_access_key]"}"#
        );
        // A logged body keeps no secret either way: not after an escape,
        // not under a password key.
        let logged = privacy.redacted_for_log(&format!(
            r#"{{"a": "x\n{}", "input": {{"password": "hunter2!x"}}}}"#,
            aws_key()
        ));
        assert!(!logged.contains(&aws_key()), "{logged}");
        assert!(!logged.contains("hunter2!x"), "{logged}");
    }

    /// A compaction's summary is base64 in the body: a logged body has it
    /// redacted inside, still a compaction the gateway reads back.
    #[test]
    fn a_secret_in_a_compactions_summary_is_redacted_in_the_log() {
        use freehold_llm::wire::openai_responses::{compaction_content, compaction_summary};
        let privacy = with(redact_settings());
        let content = compaction_content(&format!("The deploy key is {}.", aws_key()));
        assert!(!content.contains(&aws_key()));
        let logged = privacy.redacted_for_log(
            &serde_json::json!({"input": [{"type": "compaction", "encrypted_content": content}]})
                .to_string(),
        );
        let logged: serde_json::Value = serde_json::from_str(&logged).unwrap();
        let summary =
            compaction_summary(logged["input"][0]["encrypted_content"].as_str().unwrap()).unwrap();
        assert_eq!(summary, "The deploy key is [REDACTED:aws_access_key].");
    }

    /// The text of the tool result a redacting policy sends instead of
    /// `content` (it must redact something).
    fn redacted_tool_result(privacy: &Privacy, content: &str) -> String {
        let chat = ChatRequest::new("m", vec![Message::tool_result("c1", content)]);
        let decision = privacy.decide(&chat, None, false);
        let Decision::Redacted { request, .. } = &decision else {
            panic!("not redacted: {decision}");
        };
        let Some(ContentPart::ToolResult(result)) = request.messages[0].content.first() else {
            panic!("not a tool result");
        };
        result.content.clone()
    }

    /// Real passwords hold the symbols code uses: an unquoted one is found
    /// whatever they are, and redacted to the next whitespace.
    #[test]
    fn unquoted_passwords_with_symbols_are_found_and_redacted_whole() {
        for text in [
            "DB_PASSWORD=9xK*2mQ!pL",
            "password: S3cr3t$Pa55",
            "DB_PASSWORD=Tr0ub4dor&3xyz",
            "secret: 50%off|pipe<>9",
            "password: p@ss(w0rd)[1]{2}<3>",
            "api_key=AbC,dEf;9xYz",
        ] {
            assert_detects(text, Detector::PasswordAssignment);
        }
        let privacy = with(redact_settings());
        for (text, sent) in [
            (
                "DB_PASSWORD=Tr0ub4dor&3xyz",
                "DB_PASSWORD=[REDACTED:password_assignment]",
            ),
            (
                "DB_PASSWORD=9xK*2mQ!pL ok",
                "DB_PASSWORD=[REDACTED:password_assignment] ok",
            ),
            (
                "password: S3cr3t$Pa55\nuser: bob",
                "password: [REDACTED:password_assignment]\nuser: bob",
            ),
            (
                "api_key=AbC,dEf;9xYz",
                "api_key=[REDACTED:password_assignment]",
            ),
            // What closes the call or the statement, or starts the next
            // field, is not the password's.
            (
                "login(user, password=hunter22)",
                "login(user, password=[REDACTED:password_assignment])",
            ),
            (
                "{password: hunter22, user: bob}",
                "{password: [REDACTED:password_assignment], user: bob}",
            ),
            (
                "Server=db;Password=S3cret!9;Encrypt=true",
                "Server=db;Password=[REDACTED:password_assignment];Encrypt=true",
            ),
            (
                "https://a.example/login?user=bob&password=hunter22&next=/home",
                "https://a.example/login?user=bob&password=[REDACTED:password_assignment]&next=/home",
            ),
        ] {
            assert_eq!(redacted_tool_result(&privacy, text), sent, "{text:?}");
        }
    }

    #[test]
    fn a_quoted_password_ends_at_the_quote_that_opened_it() {
        for text in [
            "password = \"it's-S3cret9\"",
            "secret: 'Pa\"ss-99'",
            "{\"password\": \"O'Brien-77\"}",
        ] {
            assert_detects(text, Detector::PasswordAssignment);
        }
        let privacy = with(redact_settings());
        assert_eq!(
            redacted_tool_result(&privacy, "password = \"it's-S3cret9\""),
            "password = \"[REDACTED:password_assignment]\""
        );
        // Labels stay prose with an apostrophe or quotes in them.
        assert_clean("\"password\": \"Don't share your password\"");
        assert_clean("password: 'the \"magic\" word'");
        // Nor does a value run across literals.
        assert_clean("print(\"password: '\" + pw + \"'\")");
        assert_clean("{\"a\":\"secret: 'x\",\"b\":\"y'\"}");
    }

    /// Code, types, variables and placeholders are still not passwords
    /// now that an unquoted value may hold any symbol.
    #[test]
    fn code_around_a_password_key_is_not_a_password() {
        for text in [
            "password = getenv(\"X\")",
            "password: ${DB_PASS}",
            "password = os.environ[\"X\"]",
            "password: str",
            "password = None",
            "password = '<your password>'",
            "password: Option<String>,",
            "password: Box<str>,",
            "fn f(password: &str, secret: &[u8]) {}",
            "password: *const u8",
            "password: [u8; 32],",
            "password={password}",
            "password: {type: String, required: true},",
            "password = self->password;",
            "password: @password",
            "password: !Ref DbPassword",
            "password: *default_password",
            "password=%DB_PASSWORD%",
            "password: $(cat /run/secrets/db)",
            "let password = env!(\"DB_PASSWORD\");",
            "password: z.string().min(8),",
            "https://a.example/?password=password&next=1",
            "https://a.example/?password=&user=bob",
            "connect(user=user, password=password, host=host)",
            // Found in review (2026-12-08): what follows a value in code.
            "def connect(host, password=None):",
            "setPassword(password: string): void {",
            "fun login(password: String): Boolean",
            "psycopg2.connect(password=pw).cursor()",
            "login({password: pw}).then(r => r.ok)",
            "{password:t,username:e}",
            "{password:this.password,remember:!0}",
            "'password'=>$password,",
            ":password=>params[:password]",
            "password:\\s*(\\S+)",
            "api_key=\\w{32}",
            "password: String!",
            "DB_PASSWORD=\n\nSESSION_DRIVER=database",
        ] {
            assert_clean(text);
        }
    }

    /// Text that holds JSON text (a tool's JSON-encoded output, a JSON
    /// string inside a JSON string) puts an escape's letter right before a
    /// key: `\nghp_…` has no word boundary, but the string it encodes does.
    #[test]
    fn a_secret_after_a_json_escape_is_found() {
        let privacy = privacy();
        let secrets = [
            (github_token(), Detector::GithubToken),
            (aws_key(), Detector::AwsAccessKey),
            (openai_key(), Detector::OpenaiKey),
            (google_key(), Detector::GoogleApiKey),
            (slack_token(), Detector::SlackToken),
            (jwt(), Detector::Jwt),
            ("password=hunter22".to_owned(), Detector::PasswordAssignment),
        ];
        for (secret, detector) in &secrets {
            for escape in [
                r"\n", r"\t", r"\r", r#"\""#, r"\\", r"\/", r"\u000a", r"\\n", r"\\\n",
            ] {
                let text = format!(r#"{{"text":"token:{escape}{secret}"}}"#);
                let chat = ChatRequest::new("m", vec![Message::tool_result("c1", text.clone())]);
                let findings = privacy.inspect(&chat);
                let found: Vec<&str> = findings.iter().map(|finding| &*finding.detector).collect();
                assert!(found.contains(&detector.name()), "{found:?} in {text}");
            }
        }
        // Escapes alone are nothing.
        assert_clean(
            r#"{"text":"line one\nline two\t\u00e9t\u00e9 \"quoted\" C:\\Users\\nobody"}"#,
        );
        assert_clean(r#"printf(\"%s\\n\", password);"#);
    }

    /// What is sent upstream keeps no key after an escape, and stays the
    /// JSON text it was.
    #[test]
    fn a_secret_after_a_json_escape_is_redacted_in_what_is_sent() {
        let privacy = with(redact_settings());
        let sent = redacted_tool_result(
            &privacy,
            &format!(r#"{{"text":"token:\n{}"}}"#, github_token()),
        );
        assert_eq!(sent, r#"{"text":"token:\n[REDACTED:github_token]"}"#);
        let value: serde_json::Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(value["text"], "token:\n[REDACTED:github_token]");
        // Escapes of several bytes before the key, a multibyte character
        // among them, and a password quoted with escaped quotes.
        let sent = redacted_tool_result(
            &privacy,
            &format!(
                r#"{{"t":"caf\u00e9\u000a{}","cfg":"{{\"password\": \"hunter22!\"}}"}}"#,
                aws_key()
            ),
        );
        assert_eq!(
            sent,
            r#"{"t":"caf\u00e9\u000a[REDACTED:aws_access_key]","cfg":"{\"password\": \"[REDACTED:password_assignment]\"}"}"#
        );
        // Two levels deep: a JSON string inside a JSON string.
        let sent = redacted_tool_result(
            &privacy,
            &format!(r#"{{"out":"{{\"text\":\"x\\n{}\"}}"}}"#, slack_token()),
        );
        assert_eq!(
            sent,
            r#"{"out":"{\"text\":\"x\\n[REDACTED:slack_token]\"}"}"#
        );
    }

    #[test]
    fn escapes_are_undone_and_spans_map_back() {
        assert!(Unescaped::of("no escape here").is_none());
        // A backslash that starts no escape is kept, and so is a lone
        // surrogate's escape.
        assert!(Unescaped::of(r"C:\Users\x \ud800 \u12").is_none());
        let original = r"a\nb\\\t\u00e9\ud83d\ude00c\\\ud83d\\\ude00d\x";
        let Some(view) = Unescaped::of(original) else {
            panic!("no escape undone in {original}");
        };
        assert_eq!(view.text, "a\nb\té\u{1F600}c\u{1F600}d\\x");
        // Each character of the view back to where it came from.
        let pieces: Vec<&str> = view
            .text
            .char_indices()
            .map(|(at, c)| &original[view.original(at..at + c.len_utf8())])
            .collect();
        assert_eq!(
            pieces,
            [
                "a",
                r"\n",
                "b",
                r"\\\t",
                r"\u00e9",
                r"\ud83d\ude00",
                "c",
                r"\\\ud83d\\\ude00",
                "d",
                r"\",
                "x"
            ]
        );
        assert_eq!(view.original(0..view.text.len()), 0..original.len());
    }

    /// OpenAI's `arguments` are JSON inside a JSON string: parsed once,
    /// the body still holds them escaped, `\n` before the key included.
    #[test]
    fn a_secret_in_openai_arguments_is_redacted_in_the_log() {
        let privacy = privacy();
        let arguments = serde_json::json!({ "cmd": format!("echo x\n{}", github_token()) });
        let body = serde_json::json!({
            "model": "m",
            "messages": [{
                "role": "assistant",
                "tool_calls": [{
                    "id": "c1",
                    "type": "function",
                    "function": { "name": "shell", "arguments": arguments.to_string() },
                }],
            }],
        })
        .to_string();
        let logged = privacy.redacted_for_log(&body);
        assert!(!logged.contains(&github_token()), "{logged}");
        let logged: serde_json::Value = serde_json::from_str(&logged).unwrap();
        let arguments = logged["messages"][0]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap();
        let arguments: serde_json::Value = serde_json::from_str(arguments).unwrap();
        assert_eq!(arguments["cmd"], "echo x\n[REDACTED:github_token]");
    }

    #[test]
    fn invalid_json_arguments_are_redacted_as_text() {
        let privacy = with(redact_settings());
        let call = redacted_call(&privacy, format!("{{\"cmd\": \"{}", aws_key()));
        assert_eq!(call.arguments, "{\"cmd\": \"[REDACTED:aws_access_key]");
    }

    #[test]
    fn tool_results_and_reasoning_are_redacted() {
        let privacy = with(redact_settings());
        let chat = ChatRequest::new(
            "m",
            vec![
                Message {
                    role: freehold_protocol::Role::Assistant,
                    content: vec![ContentPart::Reasoning(Reasoning {
                        text: format!("the key is {}", slack_token()),
                        signature: Some("sig".into()),
                        origin: Some("anthropic".into()),
                        ..Reasoning::default()
                    })],
                },
                Message::tool_result("c1", format!("cat .env\nAPI_KEY={}\n", openai_key())),
            ],
        );
        let decision = privacy.decide(&chat, None, false);
        let Decision::Redacted { request, reasons } = &decision else {
            panic!("not redacted: {decision}");
        };
        let ContentPart::Reasoning(reasoning) = &request.messages[0].content[0] else {
            panic!("not reasoning");
        };
        assert_eq!(reasoning.text, "the key is [REDACTED:slack_token]");
        assert_eq!(
            reasoning.signature, None,
            "the signature no longer signs the text"
        );
        let ContentPart::ToolResult(result) = &request.messages[1].content[0] else {
            panic!("not a tool result");
        };
        // Two detectors overlap on the key: one redaction.
        assert_eq!(result.content, "cat .env\nAPI_KEY=[REDACTED:openai_key]\n");
        let places: Vec<String> = reasons
            .findings
            .iter()
            .map(|f| format!("{}={}", f.location, f.detector))
            .collect();
        assert_eq!(
            places,
            [
                "m0.p0.reasoning=slack_token",
                "m1.p0.tool_result=openai_key",
                "m1.p0.tool_result=password_assignment"
            ]
        );
    }

    #[test]
    fn default_action_keeps_sensitive_requests_local() {
        let decision =
            privacy().decide(&request(&format!("deploy with {}", aws_key())), None, false);
        assert!(decision.is_local_only());
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=content detectors=aws_access_key:1"
        );
        assert_eq!(
            privacy().decide(&request("hello there"), None, false),
            Decision::Pass
        );
    }

    #[test]
    fn header_and_key_force_local_only() {
        let privacy = privacy();
        assert_eq!(privacy.header_name(), Some(DEFAULT_HEADER));
        let clean = request("What is a monad?");
        for value in ["local-only", " LOCAL-ONLY ", "local_only"] {
            let decision = privacy.decide(&clean, Some(value), false);
            assert_eq!(
                decision.to_string(),
                "privacy=local_only trigger=header",
                "{value}"
            );
        }
        assert_eq!(
            privacy.decide(&clean, Some("anything"), false),
            Decision::Pass
        );
        let decision = privacy.decide(&clean, None, true);
        assert_eq!(decision.to_string(), "privacy=local_only trigger=key");
        let decision = privacy.decide(&request(&jwt()), Some("local-only"), true);
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=key+header+content detectors=jwt:1"
        );
        // With redaction configured, a forced request stays local and whole.
        let redacting = with(redact_settings());
        let decision = redacting.decide(&request(&jwt()), None, true);
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=key detectors=jwt:1"
        );
    }

    /// A request whose user message carries a PDF beside its text.
    fn with_pdf(text: &str) -> ChatRequest {
        let mut request = request(text);
        request.messages[1]
            .content
            .push(ContentPart::Document(freehold_protocol::Document {
                source: freehold_protocol::DocumentSource::Base64 {
                    media_type: "application/pdf".into(),
                    data: "JVBERi0xLjQK".into(),
                },
                title: None,
            }));
        request
    }

    #[test]
    fn documents_the_detectors_cannot_read_follow_their_own_action() {
        // Off by default: a PDF passes, whatever the action for text.
        let default = with(serde_json::json!({}));
        assert_eq!(
            default.decide(&with_pdf("Summarise it."), None, false),
            Decision::Pass
        );
        assert!(!default.active().iter().any(|(name, _)| *name == DOCUMENT));

        let local = with(serde_json::json!({ "documents": "local_only" }));
        assert!(local.active().contains(&(DOCUMENT, Action::LocalOnly)));
        let decision = local.decide(&with_pdf("Summarise it."), None, false);
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=content detectors=document:1"
        );
        let finding = local
            .inspect(&with_pdf("Summarise it."))
            .iter()
            .next()
            .cloned();
        assert_eq!(
            finding.map(|finding| finding.location),
            Some(Location {
                message: 1,
                part: 1,
                field: Field::Document,
            })
        );
        // A request without a document is the detectors' alone.
        assert_eq!(
            local.decide(&request("Summarise it."), None, false),
            Decision::Pass
        );
        // With detectors off as well, documents are still looked for.
        let only_documents = with(serde_json::json!({ "detectors": [], "documents": "block" }));
        let decision = only_documents.decide(&with_pdf("hi"), None, false);
        assert_eq!(
            decision.to_string(),
            "privacy=block trigger=content detectors=document:1"
        );
        // The stricter of a document and a text finding decides.
        let both = with(serde_json::json!({ "documents": "local_only", "action": "redact" }));
        let decision = both.decide(&with_pdf(&jwt()), None, false);
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=content detectors=document:1,jwt:1"
        );

        let error = Privacy::new(
            serde_json::from_value(serde_json::json!({ "documents": "redact" })).unwrap(),
        )
        .unwrap_err();
        assert_eq!(error, PrivacyError::DocumentsRedact);
        assert!(error.to_string().contains("\"local_only\""), "{error}");
        let error = Privacy::new(
            serde_json::from_value(serde_json::json!({
                "patterns": [{"name": "document", "regex": "x+"}]
            }))
            .unwrap(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("reserved"), "{error}");
    }

    /// A document's title and URL are text: a secret there is found, and,
    /// as the URL cannot be rewritten, kept local rather than redacted.
    #[test]
    fn a_documents_title_and_url_are_inspected() {
        let by_url = |url: String, title: Option<&str>| {
            let mut request = request("Summarise it.");
            request.messages[1]
                .content
                .push(ContentPart::Document(freehold_protocol::Document {
                    source: freehold_protocol::DocumentSource::Url { url },
                    title: title.map(str::to_owned),
                }));
            request
        };
        let signed = by_url(
            format!("https://files.corp.test/spec.pdf?key={}", aws_key()),
            None,
        );
        let local = with(serde_json::json!({}));
        let decision = local.decide(&signed, None, false);
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=content detectors=aws_access_key:1"
        );
        assert_eq!(
            local
                .inspect(&signed)
                .iter()
                .next()
                .map(|f| f.location.field),
            Some(Field::DocumentName)
        );
        let redacting = with(redact_settings());
        let decision = redacting.decide(&signed, None, false);
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=content detectors=aws_access_key:1 redaction=incomplete"
        );
        let titled = by_url(
            "https://files.corp.test/spec.pdf".into(),
            Some(&format!("keys {}", aws_key())),
        );
        assert!(local.decide(&titled, None, false).is_local_only());
        let clean = by_url("https://files.corp.test/spec.pdf".into(), Some("Spec"));
        assert_eq!(local.decide(&clean, None, false), Decision::Pass);
        // A file's name with an `@` is no email address.
        let scan = by_url(
            "https://files.corp.test/scan.pdf".into(),
            Some("Scan@2024-01-05.pdf"),
        );
        assert_eq!(local.decide(&scan, None, false), Decision::Pass);
        // A title on a document given by its bytes, blocked.
        let mut titled_bytes = with_pdf("Summarise it.");
        if let ContentPart::Document(document) = &mut titled_bytes.messages[1].content[1] {
            document.title = Some(format!("keys {}", aws_key()));
        }
        let blocking = with(serde_json::json!({ "action": "block" }));
        let decision = blocking.decide(&titled_bytes, None, false);
        let reasons = decision.reasons().unwrap();
        assert_eq!(decision.outcome(), "block");
        assert!(reasons.findings.in_document_name() && reasons.findings.in_text());
        assert!(!reasons.findings.has_document());
        // A match in the text beside a clean document is still redacted:
        // the document does not make redaction look incomplete.
        let mut beside = by_url("https://files.corp.test/spec.pdf".into(), Some("Spec"));
        beside.messages[1].content[0] = ContentPart::Text {
            text: format!("deploy with {}", aws_key()),
        };
        let decision = redacting.decide(&beside, None, false);
        assert_eq!(decision.outcome(), "redacted", "{decision}");
    }

    /// An image's URL is text as well (a presigned link, a key in its
    /// query); its bytes, and a `data:` URL, are not read.
    #[test]
    fn an_images_url_is_inspected() {
        let with_image = |url: String| {
            let mut request = request("What is in it?");
            request.messages[1].content.push(ContentPart::Image {
                source: freehold_protocol::ImageSource::Url { url },
            });
            request
        };
        let presigned = with_image(
            "https://bucket.s3.amazonaws.com/k.png?X-Amz-Expires=3600\
             &X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
                .into(),
        );
        let local = with(serde_json::json!({}));
        let findings = local.inspect(&presigned);
        assert!(findings.in_image_url(), "{findings}");
        assert!(local.decide(&presigned, None, false).is_local_only());
        // Not rewritten: under `redact`, kept local.
        let decision = with(redact_settings()).decide(&presigned, None, false);
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=content detectors=password_assignment:1 \
             redaction=incomplete"
        );
        let blocked = with(serde_json::json!({ "action": "block" }));
        let reasons = blocked.decide(&presigned, None, false);
        assert!(reasons.reasons().unwrap().findings.in_image_url());

        let clean = with_image("https://upload.wikimedia.org/cat.png".into());
        assert_eq!(local.decide(&clean, None, false), Decision::Pass);
        // A data: URL is the image's bytes, which may spell anything.
        let bytes = with_image(format!("data:image/png;base64,{}", aws_key()));
        assert_eq!(local.decide(&bytes, None, false), Decision::Pass);
    }

    #[test]
    fn header_can_be_renamed_or_turned_off() {
        let renamed = with(serde_json::json!({ "header": "X-Private" }));
        assert_eq!(renamed.header_name(), Some("x-private"));
        let off = with(serde_json::json!({ "header": "" }));
        assert_eq!(off.header_name(), None);
        assert_eq!(
            off.decide(&request("hi"), Some("local-only"), false),
            Decision::Pass
        );
        let error = Privacy::new(
            serde_json::from_value(serde_json::json!({ "header": "x privacy" })).unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "[gateway.privacy] header `x privacy` is not a valid HTTP header name"
        );
    }

    #[test]
    fn action_off_passes_everything_but_forced_requests() {
        let privacy = with(serde_json::json!({ "action": "off" }));
        assert!(privacy.active().is_empty());
        let text = format!("{} {} 4111 1111 1111 1111", aws_key(), private_key());
        assert_eq!(privacy.decide(&request(&text), None, false), Decision::Pass);
        assert!(privacy.decide(&request(&text), None, true).is_local_only());
    }

    #[test]
    fn per_detector_actions_and_precedence() {
        let privacy = with(serde_json::json!({
            "action": "redact",
            "actions": { "private_key": "block", "email": "local_only", "jwt": "off" },
        }));
        assert_eq!(
            privacy
                .active()
                .into_iter()
                .filter(|(_, action)| *action != Action::Redact)
                .collect::<Vec<_>>(),
            [("private_key", Action::Block), ("email", Action::LocalOnly)]
        );
        // Block wins over everything, the header included.
        let text = format!("{} from bob@corp.io", private_key());
        let decision = privacy.decide(&request(&text), Some("local-only"), true);
        assert_eq!(
            decision.to_string(),
            "privacy=block trigger=content detectors=email:1,private_key:1"
        );
        // local_only wins over redact.
        let decision = privacy.decide(&request(&format!("{} bob@corp.io", aws_key())), None, false);
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=content detectors=aws_access_key:1,email:1"
        );
        // An off detector does not run.
        assert_eq!(
            privacy.decide(&request(&jwt()), None, false),
            Decision::Pass
        );
    }

    #[test]
    fn detectors_can_be_chosen() {
        let privacy = with(serde_json::json!({ "detectors": ["email"] }));
        assert_eq!(privacy.active(), [("email", Action::LocalOnly)]);
        assert_eq!(
            privacy.decide(&request(&aws_key()), None, false),
            Decision::Pass
        );
        let error = Privacy::new(
            serde_json::from_value(
                serde_json::json!({ "detectors": ["email"], "actions": { "jwt": "block" } }),
            )
            .unwrap(),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("actions.jwt is set but `jwt` is not in `detectors`"),
            "{error}"
        );
    }

    #[test]
    fn custom_patterns() {
        let privacy = with(serde_json::json!({
            "action": "redact",
            "patterns": [
                { "name": "employee_id", "regex": r"\bEMP-[0-9]{6}\b" },
                { "name": "ticket", "regex": r"ticket=(?P<secret>[0-9]+)", "action": "redact" },
                { "name": "codename", "regex": r"(?i)\bproject bluebird\b", "action": "block" },
            ],
        }));
        let Decision::Redacted {
            request: redacted,
            reasons,
        } = privacy.decide(&request("EMP-123456 asked about ticket=9876"), None, false)
        else {
            panic!("not redacted");
        };
        assert_eq!(
            redacted.messages[1].text(),
            "[REDACTED:employee_id] asked about ticket=[REDACTED:ticket]"
        );
        assert_eq!(reasons.findings.to_string(), "employee_id:1,ticket:1");
        let decision = privacy.decide(&request("Status of Project Bluebird?"), None, false);
        assert_eq!(
            decision.to_string(),
            "privacy=block trigger=content detectors=codename:1"
        );
    }

    #[test]
    fn a_match_that_survives_redaction_keeps_the_request_local() {
        // A pattern that matches its own replacement can never be redacted
        // away: the request stays on this machine instead.
        let privacy = with(serde_json::json!({
            "action": "redact",
            "patterns": [{ "name": "shouting", "regex": "[A-Z]{5,}" }],
        }));
        let decision = privacy.decide(&request("PLEASE help"), None, false);
        assert_eq!(
            decision.to_string(),
            "privacy=local_only trigger=content detectors=shouting:1 redaction=incomplete"
        );
    }

    #[test]
    fn multibyte_text_around_matches() {
        let privacy = with(redact_settings());
        let text = format!("clé: «{}» — ünïcode ✓ bob@corp.io…", aws_key());
        let Decision::Redacted { request, .. } = privacy.decide(&request(&text), None, false)
        else {
            panic!("not redacted");
        };
        assert_eq!(
            request.messages[1].text(),
            "clé: «[REDACTED:aws_access_key]» — ünïcode ✓ [REDACTED:email]…"
        );
    }

    #[test]
    fn bad_patterns_are_named() {
        let error = |patterns: serde_json::Value| {
            Privacy::new(
                serde_json::from_value(serde_json::json!({ "patterns": patterns })).unwrap(),
            )
            .unwrap_err()
            .to_string()
        };
        let message = error(serde_json::json!([{ "name": "broken", "regex": "EMP-[0-9" }]));
        assert!(
            message.starts_with(
                "[gateway.privacy] pattern `broken` is not a valid regular expression:"
            ),
            "{message}"
        );
        let message = error(serde_json::json!([{ "name": "everything", "regex": "x*" }]));
        assert!(
            message.contains("pattern `everything` matches the empty string"),
            "{message}"
        );
        let message = error(serde_json::json!([{ "name": "Bad Name", "regex": "x" }]));
        assert!(
            message.contains("pattern name `Bad Name`: may only hold"),
            "{message}"
        );
        let message = error(serde_json::json!([{ "name": "email", "regex": "x" }]));
        assert!(
            message.contains("is a built-in detector's name"),
            "{message}"
        );
        let message = error(
            serde_json::json!([{ "name": "a", "regex": "x" }, { "name": "a", "regex": "y" }]),
        );
        assert!(message.contains("is used by two patterns"), "{message}");
    }

    #[test]
    fn settings_parse_strictly_with_defaults() {
        let settings: PrivacySettings = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(settings, PrivacySettings::default());
        assert_eq!(settings.detectors.len(), Detector::ALL.len());
        assert_eq!(settings.action, Action::LocalOnly);
        assert_eq!(settings.header, "x-freehold-privacy");
        let unknown =
            serde_json::from_value::<PrivacySettings>(serde_json::json!({ "acton": "redact" }));
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `acton`")
        );
        let detector = serde_json::from_value::<PrivacySettings>(
            serde_json::json!({ "detectors": ["phone"] }),
        );
        assert!(
            detector
                .unwrap_err()
                .to_string()
                .contains("unknown variant `phone`")
        );
        let action =
            serde_json::from_value::<PrivacySettings>(serde_json::json!({ "action": "drop" }));
        assert!(
            action
                .unwrap_err()
                .to_string()
                .contains("unknown variant `drop`")
        );
    }

    #[test]
    fn findings_and_decisions_never_hold_the_secret() {
        let secrets = [
            aws_key(),
            private_key(),
            github_token(),
            openai_key(),
            anthropic_key(),
            slack_token(),
            google_key(),
            "hunter22xyz".to_owned(),
            jwt(),
            "alice@corp.io".to_owned(),
            "4111 1111 1111 1111".to_owned(),
            "GB82 WEST 1234 5698 7654 32".to_owned(),
            "123-45-6789".to_owned(),
        ];
        let text = format!(
            "{} {} {} {} {} {} {} password=hunter22xyz {} {} {} {} {}",
            secrets[0],
            secrets[1],
            secrets[2],
            secrets[3],
            secrets[4],
            secrets[5],
            secrets[6],
            secrets[8],
            secrets[9],
            secrets[10],
            secrets[11],
            secrets[12]
        );
        let chat = request(&text);
        for action in ["local_only", "redact", "block"] {
            let privacy = with(serde_json::json!({ "action": action }));
            let findings = privacy.inspect(&chat);
            assert_eq!(
                findings.by_detector().len(),
                Detector::ALL.len(),
                "{findings}"
            );
            let decision = privacy.decide(&chat, None, false);
            assert_eq!(
                decision.outcome(),
                if action == "redact" {
                    "redacted"
                } else {
                    action
                }
            );
            let outputs = [
                format!("{findings}"),
                format!("{findings:?}"),
                format!("{decision}"),
                format!("{decision:?}"),
            ];
            for output in &outputs {
                for secret in &secrets {
                    assert!(
                        !output.contains(secret.as_str()),
                        "{action}: {output} holds {secret}"
                    );
                }
            }
        }
    }

    #[test]
    fn clean_100kb_request_has_no_findings() {
        let chat = large_clean_request();
        assert!(chat.estimated_input_tokens() > 25_000);
        let privacy = privacy();
        let findings = privacy.inspect(&chat);
        assert!(findings.is_empty(), "{findings}");
        assert_eq!(privacy.decide(&chat, None, false), Decision::Pass);
    }

    /// About 100 KB of code, prose, numbers and JSON with nothing to find.
    fn large_clean_request() -> ChatRequest {
        let chunk = "fn login(user: &str, password: &str) -> Result<Session, Error> {\n    \
             let hash = sha256(password); // 2024-05-17, v1.2.3, order 41111111111111\n    \
             db.query(\"SELECT id FROM users WHERE name = $1\", &[&user])?;\n}\n\
             The task-force met at 10:30; see sk-learn and git@github.com:org/repo.git, logo@2x.png.\n\
             {\"id\": 1700000000000, \"price\": 12.50, \"tags\": [\"a\", \"b\"], \"ok\": true}\n";
        let mut text = String::new();
        while text.len() < 100_000 {
            text.push_str(chunk);
        }
        let mut chat = request(&text);
        chat.messages
            .push(Message::tool_result("c1", text[..20_000].to_owned()));
        chat
    }

    /// Rough cost of `inspect`; run with
    /// `cargo test -p freehold-gateway --lib privacy::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints timings, asserts nothing"]
    fn timing() {
        let privacy = privacy();
        let small = ChatRequest::new(
            "m",
            vec![
                Message::system("You are a careful coding assistant. Answer briefly."),
                Message::user(
                    "Why does my Rust build fail with E0502 when I push to a Vec while iterating over it?",
                ),
            ],
        );
        // Near misses everywhere: the prefilter matches, the detectors run.
        let near_misses = large_clean_request();
        // Plain prose: the prefilter alone.
        let mut prose = String::new();
        while prose.len() < 100_000 {
            prose.push_str(
                "The gateway routes each request to the provider that serves its model. ",
            );
        }
        let prose = request(&prose);
        // JSON held as a string (a tool's output, say): escapes all along,
        // which the detectors read undone.
        let mut escaped = String::new();
        while escaped.len() < 100_000 {
            escaped.push_str(
                r#"{\"path\": \"src/main.rs\", \"content\": \"fn main() {\n    println!(\\\"hi\\\");\n}\n\"} "#,
            );
        }
        let escaped = request(&escaped);
        let redacting = with(redact_settings());
        let mut secret = small.clone();
        secret.messages.push(Message::user(format!(
            "my key is {} and mail me at bob@corp.io",
            aws_key()
        )));
        let runs = 20_000;
        let mut times: Vec<std::time::Duration> = (0..runs)
            .map(|_| {
                let start = std::time::Instant::now();
                std::hint::black_box(redacting.decide(std::hint::black_box(&secret), None, false));
                start.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "small, redacted: p50 {:?}, p99 {:?}",
            times[runs / 2],
            times[runs * 99 / 100]
        );
        for (name, chat, runs) in [
            ("small", &small, 20_000u32),
            ("100kb prose", &prose, 200),
            ("100kb near misses", &near_misses, 50),
            ("100kb escaped json", &escaped, 200),
        ] {
            let bytes: usize = chat.estimated_input_tokens() as usize * 4;
            let mut times: Vec<std::time::Duration> = (0..runs)
                .map(|_| {
                    let start = std::time::Instant::now();
                    std::hint::black_box(privacy.decide(std::hint::black_box(chat), None, false));
                    start.elapsed()
                })
                .collect();
            times.sort();
            println!(
                "{name} (~{bytes} bytes): p50 {:?}, p99 {:?}",
                times[times.len() / 2],
                times[times.len() * 99 / 100]
            );
        }
    }
}
