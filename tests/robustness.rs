//! Property tests on the two places hostile bytes arrive: the DATA decoder and the MIME parser.

use kala::message::Message;
use kala::smtp::data::{DataReader, Feed};
use proptest::prelude::*;

/// Feeds `wire` split at the given points; returns (content, bytes consumed at the end).
fn feed_split(wire: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<usize>, bool) {
    let mut reader = DataReader::new(usize::MAX);
    let mut out = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    points.dedup();
    for pair in points.windows(2) {
        if let Feed::Done { consumed } = reader.feed(&wire[pair[0]..pair[1]], &mut out) {
            return (out, Some(pair[0] + consumed), reader.bare_line_end);
        }
    }
    (out, None, reader.bare_line_end)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Clean content (CRLF lines), dot-stuffed as a client sends it, comes back exactly, and
    /// the end is found exactly after the terminator, however the bytes are split.
    #[test]
    fn clean_content_round_trips(lines in prop::collection::vec("[.a-z ]{0,12}", 0..12), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let mut content = Vec::new();
        for line in &lines {
            content.extend_from_slice(line.as_bytes());
            content.extend_from_slice(b"\r\n");
        }
        let mut wire = Vec::new();
        for line in &lines {
            if line.starts_with('.') { wire.push(b'.'); }
            wire.extend_from_slice(line.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\nQUIT\r\n");
        let (out, end, bare) = feed_split(&wire, &cuts);
        prop_assert_eq!(out, content);
        prop_assert_eq!(end, Some(wire.len() - 6));
        prop_assert!(!bare);
    }

    /// For any bytes, DATA ends exactly after the first `<CRLF>.<CRLF>` (the start of DATA
    /// counting as a line start), never earlier and never at another shape.
    #[test]
    fn data_ends_only_at_crlf_dot_crlf(body in prop::collection::vec(prop::sample::select(b"\r\n.ab".to_vec()), 0..64), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let mut wire = body.clone();
        wire.extend_from_slice(b"\r\n.\r\n");
        let mut framed = b"\r\n".to_vec();
        framed.extend_from_slice(&wire);
        let first = framed.windows(5).position(|w| w == b"\r\n.\r\n").unwrap();
        let expected_end = first + 5 - 2;
        let (_, end, _) = feed_split(&wire, &cuts);
        prop_assert_eq!(end, Some(expected_end));
    }

    /// Any bytes (and any mangling of a real message) give a view or a parse error, never a panic.
    #[test]
    fn the_parser_never_panics(noise in prop::collection::vec(any::<u8>(), 0..2048), cut in any::<usize>()) {
        let _ = Message::parse(&noise, noise.len());
        let mut mangled = b"From: a@b\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<a href=3D\"http://x\">=\r\n--x--\r\n".to_vec();
        let at = cut % (mangled.len() + 1);
        mangled.splice(at..at, noise.iter().copied().take(64));
        let _ = Message::parse(&mangled, mangled.len());
    }
}
