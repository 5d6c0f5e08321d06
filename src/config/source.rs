//! One config file's text, and the conversion of the parser's byte offsets into the 1-based
//! `LINE:COL` that operators see (columns count characters, not bytes, so a key after a `é` or a
//! `→` in a comment is still pointed at correctly).

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Location;

/// A config file as read from disk.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    /// Byte offset of the first character of every line.
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: &Path, text: String) -> Self {
        let line_starts = line_starts(&text);
        SourceFile {
            path: path.to_path_buf(),
            text,
            line_starts,
        }
    }

    /// The location of byte `offset` (clamped to the end of the text).
    pub fn location(&self, offset: usize) -> Location {
        let (line, col) = line_col(&self.text, &self.line_starts, offset);
        Location {
            file: self.path.clone(),
            line,
            col,
        }
    }

    /// The location where `span` starts.
    pub fn span_location(&self, span: &Range<usize>) -> Location {
        self.location(span.start)
    }

    /// `FILE:1:1`, for problems that belong to the file as a whole.
    pub fn start(&self) -> Location {
        file_start(&self.path)
    }
}

/// `FILE:1:1`, for a file that could not even be read.
pub(crate) fn file_start(path: &Path) -> Location {
    Location {
        file: path.to_path_buf(),
        line: 1,
        col: 1,
    }
}

/// Byte offsets at which lines start (the first is always 0).
pub(crate) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// 1-based line and character column of byte `offset` in `text`.
///
/// An offset past the end points just after the last character; an offset inside a multi-byte
/// character (which the parser never produces) points just after that character.
pub(crate) fn line_col(text: &str, line_starts: &[usize], offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // The last line starting at or before `offset`.
    let line_idx = match line_starts.binary_search(&offset) {
        Ok(i) => i,
        Err(i) => i.saturating_sub(1),
    };
    let start = line_starts.get(line_idx).copied().unwrap_or(0).min(offset);
    let col = text
        .get(start..)
        .map(|rest| {
            rest.char_indices()
                .take_while(|(i, _)| start + i < offset)
                .count()
        })
        .unwrap_or(0);
    (line_idx + 1, col + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(text: &str, offset: usize) -> (usize, usize) {
        line_col(text, &line_starts(text), offset)
    }

    #[test]
    fn first_character_is_one_one() {
        assert_eq!(lc("abc", 0), (1, 1));
        assert_eq!(lc("", 0), (1, 1));
    }

    #[test]
    fn columns_and_lines_are_one_based() {
        let text = "a = 1\nbb = 2\n\nccc = 3";
        assert_eq!(lc(text, 4), (1, 5));
        assert_eq!(lc(text, 5), (1, 6)); // the newline itself
        assert_eq!(lc(text, 6), (2, 1));
        assert_eq!(lc(text, 11), (2, 6));
        assert_eq!(lc(text, 13), (3, 1));
        assert_eq!(lc(text, 14), (4, 1));
        assert_eq!(lc(text, 20), (4, 7));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "é" is two bytes, "→" three.
        let text = "# é→\nname = \"é\" # x\nk = 1";
        let k = text.rfind('k').unwrap_or(0);
        assert_eq!(lc(text, k), (3, 1));
        let hash = text.rfind('#').unwrap_or(0);
        // `name = "é" ` is 11 characters, so `#` is the 12th.
        assert_eq!(lc(text, hash), (2, 12));
        let arrow_end = "# é→".len();
        assert_eq!(lc(text, arrow_end), (1, 5));
    }

    #[test]
    fn offsets_past_the_end_and_inside_characters_are_clamped() {
        let text = "ab\ncd";
        assert_eq!(lc(text, 99), (2, 3));
        let text = "xé";
        // Offset 2 is inside "é" (bytes 1..3): it points just after it.
        assert_eq!(lc(text, 2), (1, 3));
    }

    #[test]
    fn crlf_line_endings_work() {
        let text = "a = 1\r\nb = 2\r\n";
        assert_eq!(lc(text, 7), (2, 1));
        assert_eq!(lc(text, 11), (2, 5));
    }
}
