//! The blocks of a Server-Sent Events body, whatever its chunking: what the loadgen's
//! presence streams (the `presence` and `outage` modes) read. Blocks end with a blank line;
//! lines may end with CRLF, LF or CR (the SSE grammar).

/// One finished block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseBlock {
    /// A block with an `event:` or `data:` field; `name` is its `event:` name, if any.
    Event { name: Option<String> },
    /// A block of comment lines only (a keep-alive).
    Comment,
}

/// Longest line start kept: enough for any event name; data lines are not needed whole.
const LINE_CAP: usize = 256;

/// Splits a body into blocks, carrying a partial line and block over to the next chunk.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The unfinished line (its first [`LINE_CAP`] bytes).
    line: Vec<u8>,
    /// The current block has an `event:` or `data:` field.
    has_field: bool,
    /// The current block's `event:` name.
    name: Option<String>,
    /// The current block has a comment line.
    has_comment: bool,
    /// The previous byte was a CR (a following LF belongs to the same line end).
    after_cr: bool,
}

impl SseParser {
    /// The blocks `bytes` completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseBlock> {
        let mut blocks = Vec::new();
        for &b in bytes {
            if b == b'\n' && self.after_cr {
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if b != b'\n' && b != b'\r' {
                if self.line.len() < LINE_CAP {
                    self.line.push(b);
                }
                continue;
            }
            self.end_line(&mut blocks);
        }
        blocks
    }

    fn end_line(&mut self, blocks: &mut Vec<SseBlock>) {
        if self.line.is_empty() {
            if self.has_field {
                blocks.push(SseBlock::Event {
                    name: self.name.take(),
                });
            } else if self.has_comment {
                blocks.push(SseBlock::Comment);
            }
            self.has_field = false;
            self.has_comment = false;
            self.name = None;
        } else if self.line.starts_with(b":") {
            self.has_comment = true;
        } else if let Some(name) = self.line.strip_prefix(b"event:") {
            self.has_field = true;
            self.name = Some(String::from_utf8_lossy(name).trim().to_owned());
        } else if self.line.starts_with(b"data") || self.line.starts_with(b"event") {
            self.has_field = true;
        }
        self.line.clear();
    }
}
