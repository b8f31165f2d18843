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

/// The most lines of a file [`closest`] points at.
const MAX_CLOSEST_LINES: usize = 30;

/// The run of `lines` most like `pattern` when it is not in them, as a
/// range of line indices, for an error that shows the model the text it
/// should have copied. Small models drop lines (a docstring, a blank line)
/// or change one; so first a run that starts and ends like the pattern and
/// is about as long, else the window sharing the most lines with it (at
/// least half of its non-blank ones). `None` when nothing is close.
pub(crate) fn closest<L: AsRef<str>, P: AsRef<str>>(
    lines: &[L],
    pattern: &[P],
) -> Option<std::ops::Range<usize>> {
    let wanted: Vec<&str> = pattern.iter().map(|l| l.as_ref().trim()).collect();
    let first = wanted.iter().position(|l| !l.is_empty())?;
    let last = wanted.iter().rposition(|l| !l.is_empty())?;
    let length = last - first + 1;
    let trimmed: Vec<&str> = lines.iter().map(|l| l.as_ref().trim()).collect();

    // Anchored at both ends: the pattern's first and last non-blank lines.
    let starts = (0..trimmed.len()).filter(|&i| trimmed[i] == wanted[first]);
    let mut best: Option<(usize, std::ops::Range<usize>)> = None;
    for start in starts {
        let furthest = (start + length + 8).min(trimmed.len());
        for (end, line) in trimmed.iter().enumerate().take(furthest).skip(start) {
            if *line == wanted[last] && (first != last || end == start) {
                let span = end - start + 1;
                let miss = span.abs_diff(length);
                if best.as_ref().is_none_or(|(m, _)| miss < *m) {
                    best = Some((miss, start..end + 1));
                }
            }
        }
    }
    if let Some((_, range)) = best.filter(|(_, r)| r.len() <= MAX_CLOSEST_LINES) {
        return Some(range);
    }

    // Else the window of the pattern's length sharing the most lines.
    let significant: Vec<&str> = wanted.iter().copied().filter(|l| !l.is_empty()).collect();
    let window = length.min(trimmed.len()).min(MAX_CLOSEST_LINES);
    if window == 0 {
        return None;
    }
    let shared = |at: usize| {
        trimmed[at..at + window]
            .iter()
            .filter(|l| !l.is_empty() && significant.contains(l))
            .count()
    };
    let (at, score) = (0..=trimmed.len() - window)
        .map(|at| (at, shared(at)))
        .max_by_key(|&(at, score)| (score, std::cmp::Reverse(at)))?;
    (score > 0 && score * 2 >= significant.len()).then_some(at..at + window)
}

/// Where `pattern` occurs in `lines` with up to `max_extra` lines of the
/// file left out of it (a dropped docstring, comment or blank line): the
/// pattern's lines, compared without trailing whitespace, appear in order
/// in a run that starts with its first line (which may also lack the file
/// line's indentation) and ends with its last. Returns the line index of
/// each pattern line, or `None` unless exactly one such run exists: a
/// forgiving match must not guess between places.
pub(crate) fn with_lines_left_out<L: AsRef<str>, P: AsRef<str>>(
    lines: &[L],
    pattern: &[P],
    max_extra: usize,
) -> Option<Vec<usize>> {
    let pattern: Vec<&str> = pattern.iter().map(|l| l.as_ref().trim_end()).collect();
    if pattern.len() < 2 || pattern.iter().all(|l| l.is_empty()) {
        return None;
    }
    let line = |i: usize| lines[i].as_ref().trim_end();
    let first_agrees = |i: usize| {
        let file = line(i);
        file == pattern[0]
            || (!pattern[0].is_empty()
                && file.ends_with(pattern[0])
                && file[..file.len() - pattern[0].len()].trim().is_empty())
    };
    let mut found: Option<Vec<usize>> = None;
    for start in (0..lines.len()).filter(|&i| first_agrees(i)) {
        let limit = (start + pattern.len() + max_extra).min(lines.len());
        // Greedy: each pattern line takes the next file line equal to it.
        let mut mapped = vec![start];
        let mut at = start + 1;
        for want in &pattern[1..] {
            match (at..limit).find(|&i| line(i) == *want) {
                Some(i) => {
                    mapped.push(i);
                    at = i + 1;
                }
                None => break,
            }
        }
        if mapped.len() == pattern.len() {
            if found.is_some() {
                return None;
            }
            found = Some(mapped);
        }
    }
    // Exactly the pattern's lines, nothing left out: not this function's
    // case (a plain search finds it or whitespace differs inside lines).
    found.filter(|mapped| mapped[mapped.len() - 1] - mapped[0] + 1 > pattern.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgives_lines_left_out_only_when_unambiguous() {
        let file = [
            "def average(numbers):",
            "    \"\"\"The mean.\"\"\"",
            "",
            "    return sum(numbers) / (len(numbers) - 1)",
            "x = 1",
        ];
        let dropped = [
            "def average(numbers):",
            "    return sum(numbers) / (len(numbers) - 1)",
        ];
        assert_eq!(with_lines_left_out(&file, &dropped, 5), Some(vec![0, 3]));
        assert_eq!(with_lines_left_out(&file, &dropped, 1), None);
        // Indentation missing on the first line only is forgiven.
        let indented = [
            "\"\"\"The mean.\"\"\"",
            "    return sum(numbers) / (len(numbers) - 1)",
        ];
        assert_eq!(with_lines_left_out(&file, &indented, 5), Some(vec![1, 3]));
        // Two places fit: no guess.
        let twice = ["a", "x", "b", "a", "y", "b"];
        assert_eq!(with_lines_left_out(&twice, &["a", "b"], 2), None);
        // Nothing left out is not this case.
        assert_eq!(with_lines_left_out(&twice, &["a", "x"], 2), None);
    }

    #[test]
    fn closest_finds_the_run_a_model_meant() {
        let file = [
            "def add(a, b):",
            "    return a + b",
            "",
            "def average(numbers):",
            "    \"\"\"The mean.\"\"\"",
            "    return sum(numbers) / (len(numbers) - 1)",
        ];
        // A dropped docstring: anchored at the first and last lines.
        let dropped = [
            "def average(numbers):",
            "    return sum(numbers) / (len(numbers) - 1)",
        ];
        assert_eq!(closest(&file, &dropped), Some(3..6));
        // A changed last line: the window sharing the most lines.
        let changed = ["def add(a, b):", "    return a - b"];
        assert_eq!(closest(&file, &changed), Some(0..2));
        // Nothing alike.
        assert_eq!(closest(&file, &["class Stack:", "    pass"]), None);
        assert_eq!(closest::<&str, &str>(&file, &["", "  "]), None);
    }

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
