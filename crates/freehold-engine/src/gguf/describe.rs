//! The human description of a GGUF header, for `freehold models info`.

use std::fmt::Write as _;

use super::Array;
use super::GgufFile;
use super::Value;
use super::file_type_name;

/// Lines of a chat template shown before the rest is summarised.
const TEMPLATE_LINES: usize = 6;

/// Characters of one line or string shown before it is cut with `…`.
const LINE_CHARS: usize = 100;

/// Characters of a string shown inside an inline array.
const ELEMENT_CHARS: usize = 40;

/// Arrays longer than this are summarised (`[50272 strings]`).
const INLINE_ELEMENTS: usize = 8;

/// Arrays nested deeper than this are summarised.
const INLINE_DEPTH: usize = 2;

/// A multi-line human description of `gguf`: the main facts, then every
/// metadata key sorted with its value. Long arrays are summarised
/// (`[50272 strings]`), long strings cut, and chat templates shown as their
/// first few lines.
pub fn describe(gguf: &GgufFile) -> String {
    let mut out = String::new();
    let summary = gguf.summary();
    // Names come from the file: escape control characters so that a
    // hostile one cannot drive the terminal.
    let or_unknown = |s: Option<String>| s.map_or_else(|| "unknown".to_owned(), |s| printable(&s));

    let mut facts: Vec<(&str, String)> = vec![
        ("name", or_unknown(summary.name)),
        ("architecture", or_unknown(summary.architecture)),
        (
            "kind",
            if gguf.is_embedding_model() {
                "embedding".to_owned()
            } else {
                "generative".to_owned()
            },
        ),
        (
            "parameters",
            format!(
                "{} ({})",
                human_count(summary.parameters),
                summary.parameters
            ),
        ),
        ("quantization", or_unknown(summary.quantization)),
        (
            "context length",
            or_unknown(summary.context_length.map(|n| n.to_string())),
        ),
    ];
    if let Some(n) = gguf.embedding_length() {
        facts.push(("embedding length", n.to_string()));
    }
    if let Some(n) = gguf.block_count() {
        facts.push(("layers", n.to_string()));
    }
    facts.push(("GGUF version", gguf.version.to_string()));
    facts.push(("tensors", gguf.tensors.len().to_string()));
    facts.push((
        "tensor data",
        format!(
            "from byte {} (alignment {})",
            gguf.data_offset, gguf.alignment
        ),
    ));
    let width = facts
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    for (label, value) in &facts {
        let _ = writeln!(out, "{label:<width$}  {value}");
    }

    let _ = writeln!(out, "\nmetadata ({} keys):", gguf.metadata.len());
    let mut entries: Vec<&(String, Value)> = gguf.metadata.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in entries {
        let _ = write!(out, "  {key} = ");
        match value {
            Value::String(template) if is_template_key(key) => write_template(&mut out, template),
            _ => {
                write_value(&mut out, value, LINE_CHARS, 0);
                let file_type = (key == "general.file_type")
                    .then(|| value.as_u64().and_then(file_type_name))
                    .flatten();
                if let Some(name) = file_type {
                    let _ = write!(out, " ({name})");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// A count in human units: `950`, `12K`, `135M`, `1.5B`, `70B`.
pub fn human_count(n: u64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")];
    let value = n as f64;
    for (scale, suffix) in UNITS {
        // 999.6M reads better as 1B than as 1000M.
        if value >= scale * 0.9995 {
            let scaled = value / scale;
            let digits = if scaled < 9.95 {
                format!("{scaled:.1}")
            } else {
                format!("{scaled:.0}")
            };
            let digits = digits.strip_suffix(".0").unwrap_or(&digits);
            return format!("{digits}{suffix}");
        }
    }
    n.to_string()
}

fn is_template_key(key: &str) -> bool {
    key == "tokenizer.chat_template" || key.starts_with("tokenizer.chat_template.")
}

/// A template as its first lines, indented under the key.
fn write_template(out: &mut String, template: &str) {
    let lines: Vec<&str> = template.lines().collect();
    let _ = write!(out, "({} lines, {} bytes)", lines.len(), template.len());
    for line in lines.iter().take(TEMPLATE_LINES) {
        let (shown, was_cut) = cut(line, LINE_CHARS);
        let ellipsis = if was_cut { "…" } else { "" };
        let _ = write!(out, "\n    | {}{ellipsis}", printable(shown));
    }
    if lines.len() > TEMPLATE_LINES {
        let _ = write!(out, "\n    | … {} more lines", lines.len() - TEMPLATE_LINES);
    }
}

fn write_value(out: &mut String, value: &Value, max_chars: usize, depth: usize) {
    let _ = match value {
        Value::U8(v) => write!(out, "{v}"),
        Value::I8(v) => write!(out, "{v}"),
        Value::U16(v) => write!(out, "{v}"),
        Value::I16(v) => write!(out, "{v}"),
        Value::U32(v) => write!(out, "{v}"),
        Value::I32(v) => write!(out, "{v}"),
        Value::F32(v) => write!(out, "{v}"),
        Value::Bool(v) => write!(out, "{v}"),
        Value::U64(v) => write!(out, "{v}"),
        Value::I64(v) => write!(out, "{v}"),
        Value::F64(v) => write!(out, "{v}"),
        Value::String(s) => write_string(out, s, max_chars),
        Value::Array(array) => {
            write_array(out, array, depth);
            Ok(())
        }
    };
}

fn write_string(out: &mut String, s: &str, max_chars: usize) -> std::fmt::Result {
    let (shown, was_cut) = cut(s, max_chars);
    write!(out, "{shown:?}")?;
    if was_cut {
        out.push('…');
    }
    Ok(())
}

fn write_array(out: &mut String, array: &Array, depth: usize) {
    if array.is_empty() {
        out.push_str("[]");
        return;
    }
    if array.len() > INLINE_ELEMENTS || depth >= INLINE_DEPTH {
        let _ = write!(out, "[{} {}]", array.len(), array.element_type().plural());
        return;
    }
    let number = |out: &mut String, n: &dyn std::fmt::Display| write!(out, "{n}");
    match array {
        Array::U8(v) => join(out, v, |out, n| number(out, n)),
        Array::I8(v) => join(out, v, |out, n| number(out, n)),
        Array::U16(v) => join(out, v, |out, n| number(out, n)),
        Array::I16(v) => join(out, v, |out, n| number(out, n)),
        Array::U32(v) => join(out, v, |out, n| number(out, n)),
        Array::I32(v) => join(out, v, |out, n| number(out, n)),
        Array::F32(v) => join(out, v, |out, n| number(out, n)),
        Array::Bool(v) => join(out, v, |out, b| number(out, b)),
        Array::U64(v) => join(out, v, |out, n| number(out, n)),
        Array::I64(v) => join(out, v, |out, n| number(out, n)),
        Array::F64(v) => join(out, v, |out, n| number(out, n)),
        Array::String(v) => join(out, v, |out, s| write_string(out, s, ELEMENT_CHARS)),
        Array::Array(v) => join(out, v, |out, inner| {
            write_array(out, inner, depth + 1);
            Ok(())
        }),
    }
}

/// `items` written by `write` between brackets, separated by commas.
fn join<T>(
    out: &mut String,
    items: &[T],
    mut write: impl FnMut(&mut String, &T) -> std::fmt::Result,
) {
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        let _ = write(out, item);
    }
    out.push(']');
}

/// `s` with control characters other than tab escaped (`\u{1b}`).
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The first `max_chars` characters of `s`, and whether that cut anything.
fn cut(s: &str, max_chars: usize) -> (&str, bool) {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => (&s[..end], true),
        None => (s, false),
    }
}
