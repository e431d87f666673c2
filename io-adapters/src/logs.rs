//! The captured output of services: a bounded ring of lines per service, and a line splitter
//! that bounds the length of one line.

use std::collections::VecDeque;

use medic_kernel::Instant;

/// Which stream of the process a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Not output: the mark of a new run of the process, with its pid (the line's text is
    /// empty). `medic logs` shows it as a separator.
    Start(u32),
}

impl Stream {
    /// `"stdout"`, `"stderr"` or `"start"`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Start(_) => "start",
        }
    }

    /// `"out"`, `"err"` or `"start"`: the `stream` of a [`crate::control::LogRow`].
    pub fn short_name(self) -> &'static str {
        match self {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
            Stream::Start(_) => "start",
        }
    }
}

/// One captured line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When the daemon read it.
    pub at: Instant,
    /// Which stream.
    pub stream: Stream,
    /// The text, without its newline (invalid UTF-8 replaced).
    pub text: String,
}

/// Lines kept per service by default.
pub const RING_LINES: usize = 1000;
/// Bytes of text kept per service by default.
pub const RING_BYTES: usize = 256 * 1024;
/// A longer line is cut into pieces of this many bytes.
pub const MAX_LINE_BYTES: usize = 4096;

/// The last lines of one service's output, bounded both in lines and in bytes; the oldest
/// lines are dropped first.
#[derive(Debug)]
pub struct LogRing {
    lines: VecDeque<LogLine>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl Default for LogRing {
    fn default() -> Self {
        LogRing::new(RING_LINES, RING_BYTES)
    }
}

impl LogRing {
    /// A ring holding at most `max_lines` lines and `max_bytes` bytes of text.
    pub fn new(max_lines: usize, max_bytes: usize) -> LogRing {
        LogRing {
            lines: VecDeque::new(),
            bytes: 0,
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Appends a line, dropping the oldest ones beyond the bounds.
    pub fn push(&mut self, line: LogLine) {
        self.bytes += line.text.len();
        self.lines.push_back(line);
        while self.lines.len() > self.max_lines
            || (self.bytes > self.max_bytes && self.lines.len() > 1)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.text.len();
            }
        }
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> impl Iterator<Item = &LogLine> {
        self.lines.iter().skip(self.lines.len().saturating_sub(n))
    }

    /// How many lines are held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`] bytes.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit` with every complete line.
    pub fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(String)) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..nl]);
            emit(take_line(&mut self.partial));
            bytes = &bytes[nl + 1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= MAX_LINE_BYTES {
            let rest = self.partial.split_off(MAX_LINE_BYTES);
            emit(take_line(&mut self.partial));
            self.partial = rest;
        }
    }

    /// The unterminated last line at end of stream, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| take_line(&mut self.partial))
    }
}

fn take_line(buf: &mut Vec<u8>) -> String {
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            at: Instant::ZERO,
            stream: Stream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn ring_drops_oldest_by_lines_and_bytes() {
        let mut ring = LogRing::new(3, 10);
        for t in ["a", "b", "c", "d"] {
            ring.push(line(t));
        }
        let texts: Vec<_> = ring.tail(10).map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["b", "c", "d"]);
        ring.push(line("0123456789"));
        let texts: Vec<_> = ring.tail(10).map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["0123456789"]);
        assert_eq!(ring.tail(0).count(), 0);
    }

    #[test]
    fn splitter_joins_pieces_and_cuts_long_lines() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(b"hel", |l| out.push(l));
        s.feed(b"lo\r\nwor", |l| out.push(l));
        s.feed(b"ld\n", |l| out.push(l));
        assert_eq!(out, ["hello", "world"]);
        out.clear();
        s.feed(&vec![b'x'; MAX_LINE_BYTES + 5], |l| out.push(l));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_LINE_BYTES);
        assert_eq!(s.finish().as_deref(), Some("xxxxx"));
        assert_eq!(s.finish(), None);
    }
}
