//! The DATA phase byte stream: find the end, undo dot-stuffing, refuse ambiguous line ends.
//!
//! RFC 5321 §4.1.1.4: the data ends only at `<CRLF>.<CRLF>`; §4.5.2: a leading dot on any line,
//! the first included, is removed. SMTP smuggling hides a second message behind line ends that
//! one server takes for CRLF and another does not (`<LF>.<LF>`, `<CR>.<CR><LF>`, ...). Kala
//! ends DATA only at `<CRLF>.<CRLF>`, and flags any bare CR or LF so the session rejects the
//! message whole: the downstream never sees an ambiguous line end, so it can never see two
//! messages where Kala saw one.

/// Incremental DATA decoder; feed it what the socket gives.
#[derive(Debug)]
pub struct DataReader {
    state: State,
    size: usize,
    max_size: usize,
    /// More than `max_size` bytes arrived; output stopped, reading goes on to the end.
    pub oversized: bool,
    /// A CR not followed by LF, or an LF not preceded by CR, was seen.
    pub bare_line_end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (the very first line included).
    LineStart,
    /// Inside a line.
    Text,
    /// Just saw CR inside a line.
    Cr,
    /// A line started with a dot (already dropped).
    Dot,
    /// A line is `.` then CR: one LF more ends the data.
    DotCr,
}

/// What a call to [`DataReader::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// All input was consumed; the end has not been seen.
    NeedMore,
    /// The end was seen after `consumed` bytes of the input; the rest is the next command.
    Done { consumed: usize },
}

impl DataReader {
    pub fn new(max_size: usize) -> DataReader {
        DataReader {
            state: State::LineStart,
            size: 0,
            max_size,
            oversized: false,
            bare_line_end: false,
        }
    }

    /// Bytes of message content seen so far (after unstuffing), including any over the limit.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Decodes `input`, appending message content to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Feed {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Text => {
                    // Fast path: copy up to the next CR or LF.
                    let rest = &input[i..];
                    match memchr::memchr2(b'\r', b'\n', rest) {
                        None => {
                            self.emit(rest, out);
                            return Feed::NeedMore;
                        }
                        Some(pos) => {
                            self.emit(&rest[..pos], out);
                            i += pos;
                            if input[i] == b'\r' {
                                self.state = State::Cr;
                            } else {
                                self.bare_line_end = true;
                                self.emit(b"\n", out);
                            }
                            i += 1;
                        }
                    }
                }
                State::LineStart => {
                    if input[i] == b'.' {
                        self.state = State::Dot;
                        i += 1;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        self.emit(b"\r\n", out);
                        self.state = State::LineStart;
                        i += 1;
                    } else {
                        self.bare_line_end = true;
                        self.emit(b"\r", out);
                        self.state = State::Text;
                    }
                }
                State::Dot => {
                    if input[i] == b'\r' {
                        self.state = State::DotCr;
                        i += 1;
                    } else {
                        // A stuffed dot: dropped, the line goes on.
                        self.state = State::Text;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::LineStart;
                        return Feed::Done { consumed: i + 1 };
                    }
                    // `.` CR then something else: the line was `.\r...` (a bare CR).
                    self.bare_line_end = true;
                    self.emit(b"\r", out);
                    self.state = State::Text;
                }
            }
        }
        Feed::NeedMore
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.size += bytes.len();
        if self.size > self.max_size {
            self.oversized = true;
        } else {
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` one byte at a time and all at once; both must agree.
    fn decode(input: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
        let mut whole = DataReader::new(1 << 20);
        let mut out = Vec::new();
        let end = match whole.feed(input, &mut out) {
            Feed::Done { consumed } => Some(consumed),
            Feed::NeedMore => None,
        };
        let mut bytewise = DataReader::new(1 << 20);
        let mut out2 = Vec::new();
        let mut end2 = None;
        for (i, b) in input.iter().enumerate() {
            if let Feed::Done { .. } = bytewise.feed(std::slice::from_ref(b), &mut out2) {
                end2 = Some(i + 1);
                break;
            }
        }
        assert_eq!(
            (&out, end, whole.bare_line_end),
            (&out2, end2, bytewise.bare_line_end)
        );
        (out, end, whole.bare_line_end)
    }

    #[test]
    fn plain_message_ends_at_crlf_dot_crlf() {
        let (out, end, bare) = decode(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\nhi\r\n");
        assert_eq!(end, Some(21));
        assert!(!bare);
    }

    #[test]
    fn empty_message_right_after_354() {
        let (out, end, _) = decode(b".\r\nQUIT\r\n");
        assert_eq!((out.as_slice(), end), (&b""[..], Some(3)));
    }

    #[test]
    fn dots_are_unstuffed_on_every_line_the_first_included() {
        let (out, _, _) = decode(b"..first\r\n..\r\nmid\r\n...x\r\n.\r\n");
        assert_eq!(out, b".first\r\n.\r\nmid\r\n..x\r\n");
    }

    #[test]
    fn smuggling_shapes_never_end_the_data_and_are_flagged() {
        for shape in [
            &b"\n.\n"[..],
            b"\r\n.\n",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r",
        ] {
            let mut input = b"Subject: a\r\n\r\nbody".to_vec();
            input.extend_from_slice(shape);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n");
            let (_, end, bare) = decode(&input);
            assert_eq!(end, None, "shape {shape:?} must not end DATA");
            assert!(bare, "shape {shape:?} must be flagged");
        }
    }

    #[test]
    fn oversized_data_stops_output_but_finds_the_end() {
        let mut r = DataReader::new(10);
        let mut out = Vec::new();
        let feed = r.feed(b"0123456789ABCDEF\r\n.\r\n", &mut out);
        assert_eq!(feed, Feed::Done { consumed: 21 });
        assert!(r.oversized);
        assert!(out.len() <= 10);
    }
}
