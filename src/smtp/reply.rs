//! SMTP replies: our own and the downstream's, written with enhanced status codes.
//!
//! RFC 2034 §4: every reply carries an enhanced status code (`250 2.1.0 ...`) except the
//! greeting, the EHLO/HELO answer, and 354, whose classes RFC 3463 does not define.

use std::fmt;

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code `class.subject.detail`, if the reply carries one.
    pub status: Option<(u8, u16, u16)>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code, e.g. `Reply::new(250, (2, 0, 0), "Ok")`.
    pub fn new(code: u16, status: (u8, u16, u16), text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO, 354).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            status: None,
            lines,
        }
    }

    /// A downstream reply as we pass it back: a missing status code is filled with `x.0.0`.
    pub fn relayed(response: smtp_proto::Response<String>) -> Reply {
        let [class, subject, detail] = response.esc;
        let status = if class == 0 {
            ((response.code / 100) as u8, 0, 0)
        } else {
            (class, subject as u16, detail as u16)
        };
        let lines = response
            .message
            .split('\n')
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        Reply {
            code: response.code,
            status: Some(status),
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The wire form, `-` on every line but the last, each ending in CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Never let a text (ours or the downstream's) inject a line break.
            let line: String = line.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            let text = match self.status {
                Some((c, s, d)) => format!("{}{sep}{c}.{s}.{d} {line}\r\n", self.code),
                None => format!("{}{sep}{line}\r\n", self.code),
            };
            out.extend_from_slice(text.as_bytes());
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{} \r\n", self.code).as_bytes());
        }
    }
}

impl fmt::Display for Reply {
    /// One line for logs: `550 5.1.1 user unknown`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some((c, s, d)) = self.status {
            write!(f, " {c}.{s}.{d}")?;
        }
        write!(f, " {}", self.lines.join(" / "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_wire_form() {
        let r = Reply {
            code: 250,
            status: Some((2, 0, 0)),
            lines: vec!["a".into(), "b\r\nMAIL FROM:<x>".into()],
        };
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"250-2.0.0 a\r\n250 2.0.0 bMAIL FROM:<x>\r\n");
    }

    #[test]
    fn relayed_reply_gets_a_status_code() {
        let r = Reply::relayed(smtp_proto::Response {
            code: 452,
            esc: [0, 0, 0],
            message: "full".into(),
        });
        assert_eq!(r.to_string(), "452 4.0.0 full");
    }
}
