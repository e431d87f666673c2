//! Text from services (their output, the condition names their probes print) made safe to show
//! on a terminal: no escape sequence a service wrote can clear the operator's screen, set the
//! window title, hide text or move the cursor.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: the C0 controls but tab (ESC, BEL, CR,
/// backspace…), DEL, the C1 controls (U+0080–U+009F: CSI, OSC… as single characters), and the
/// Unicode bidirectional overrides and isolates, which reorder what is shown.
fn unsafe_char(c: char) -> bool {
    matches!(c, '\0'..='\x08' | '\x0a'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character but tab replaced by a visible escape: `\x1b` for a C0
/// control or DEL, `\u{9b}` for a C1 control or a bidirectional override. A backslash is left
/// as it is: the result is for reading, not for parsing back (`--json` keeps the raw text).
/// Borrows when there is nothing to replace.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_made_visible() {
        assert!(matches!(sanitize("plain\ttext é ✓"), Cow::Borrowed(_)));
        assert_eq!(
            sanitize("\x1b[2J\x1b]0;owned\x07"),
            "\\x1b[2J\\x1b]0;owned\\x07"
        );
        assert_eq!(sanitize("a\rb\x08c\x7f\0"), "a\\x0db\\x08c\\x7f\\x00");
        assert_eq!(sanitize("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(sanitize("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(sanitize("new\nline"), "new\\x0aline");
    }
}
