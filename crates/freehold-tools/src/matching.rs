//! Finding a run of lines in a file, exactly or with whitespace forgiven,
//! for `apply_patch` hunks and `edit`'s hints.

/// How strictly lines must agree, strictest first.
const MODES: [fn(&str, &str) -> bool; 3] = [
    |a, b| a == b,
    |a, b| a.trim_end() == b.trim_end(),
    |a, b| a.trim() == b.trim(),
];

/// Where `pattern` occurs in `lines` at or after `start`: an exact match
/// anywhere wins over one ignoring trailing whitespace, which wins over one
/// ignoring all surrounding whitespace. With `at_end`, a match ending at the
/// last line is preferred.
pub(crate) fn seek<L: AsRef<str>, P: AsRef<str>>(
    lines: &[L],
    pattern: &[P],
    start: usize,
    at_end: bool,
) -> Option<usize> {
    if pattern.is_empty() {
        return Some(start.min(lines.len()));
    }
    if pattern.len() > lines.len() {
        return None;
    }
    let last = lines.len() - pattern.len();
    let agrees = |at: usize, same: fn(&str, &str) -> bool| {
        lines[at..at + pattern.len()]
            .iter()
            .zip(pattern)
            .all(|(line, want)| same(line.as_ref(), want.as_ref()))
    };
    for same in MODES {
        if at_end && last >= start && agrees(last, same) {
            return Some(last);
        }
        if let Some(at) = (start..=last).find(|&at| agrees(at, same)) {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_exact_then_forgives_whitespace() {
        let lines = ["fn a() {", "    x  ", "}", "    x"];
        assert_eq!(seek(&lines, &["    x"], 0, false), Some(3));
        assert_eq!(seek(&lines, &["    x  "], 0, false), Some(1));
        assert_eq!(seek(&lines, &["x"], 0, false), Some(1));
        assert_eq!(seek(&lines, &["x"], 2, false), Some(3));
        assert_eq!(seek(&lines, &["y"], 0, false), None);
        assert_eq!(seek(&lines, &["}", "x"], 0, true), Some(2));
        assert_eq!(seek::<&str, &str>(&lines, &[], 2, false), Some(2));
    }
}
