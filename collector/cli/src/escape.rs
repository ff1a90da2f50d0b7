//! Text that comes from agents (function names, hosts, labels, errors) made safe to put
//! on a terminal: control characters — and the Unicode controls that reorder what is
//! shown — are written as escapes (`\u{1b}`, `\n`), so no terminal escape sequence an
//! agent sends is ever acted on.

use std::borrow::Cow;

/// Unicode's bidirectional formatting characters, which reorder the text around them
/// on screen (the "Trojan source" characters).
fn reorders_text(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character (C0, DEL, C1) and bidirectional formatting
/// character written as its Rust escape; unchanged (and not copied) when it has none.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || reorders_text(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_written_as_escapes() {
        assert!(matches!(printable("shop::handle ▁▃█ é"), Cow::Borrowed(_)));
        assert_eq!(printable("red\x1b[31mtext"), "red\\u{1b}[31mtext");
        assert_eq!(
            printable("title\x1b]0;pwned\x07"),
            "title\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(printable("a\r\nb\tc\x7f"), "a\\r\\nb\\tc\\u{7f}");
        assert_eq!(printable("csi\u{9b}2J"), "csi\\u{9b}2J");
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
        for escaped in ["\x1b[2J", "\u{9b}", "\x07", "\u{2066}"] {
            assert!(!printable(escaped)
                .chars()
                .any(|c| c.is_control() || reorders_text(c)));
        }
    }
}
