//! Message framing on stream transports (RFC 3261 §18.3): a message is its header section up
//! to the blank line plus exactly Content-Length bytes of body. Keep-alive CRLFs between
//! messages are skipped (RFC 5626 §3.5.1).

/// Largest header section we accept before giving up on the stream.
pub const MAX_HEADER: usize = 16 * 1024;
/// Largest body we accept.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("header section longer than {MAX_HEADER} bytes")]
    HeaderTooLong,
    #[error("Content-Length missing or not a number")]
    BadContentLength,
    #[error("body longer than {MAX_BODY} bytes")]
    BodyTooLong,
}

/// Leading keep-alive bytes (CRLFs) of `buf`: the caller drops them whether or not a message
/// follows, so a peer sending only keep-alives can't grow the buffer.
pub fn keepalive_len(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Finds one complete message at the start of `buf` (after any CRLF keep-alives).
/// Returns (bytes to skip before it, message length), `Ok(None)` if more bytes are needed.
pub fn next_message(buf: &[u8]) -> Result<Option<(usize, usize)>, FramingError> {
    let skip = keepalive_len(buf);
    let rest = &buf[skip..];
    let Some(end) = find(rest, b"\r\n\r\n") else {
        return if rest.len() > MAX_HEADER {
            Err(FramingError::HeaderTooLong)
        } else {
            Ok(None)
        };
    };
    let head = &rest[..end];
    let len = content_length(head).ok_or(FramingError::BadContentLength)?;
    if len > MAX_BODY {
        return Err(FramingError::BodyTooLong);
    }
    let total = end + 4 + len;
    if rest.len() < total {
        return Ok(None);
    }
    Ok(Some((skip, total)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length (or its compact form `l`) from a header section. On a stream it is
/// mandatory: without it the next message's start can't be found.
fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            return value.trim().parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_two_messages_and_partial_input() {
        let a = b"OPTIONS sip:x SIP/2.0\r\nl: 3\r\n\r\nabc";
        let b = b"BYE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let mut buf = b"\r\n\r\n".to_vec();
        buf.extend_from_slice(a);
        buf.extend_from_slice(b);
        let (skip, len) = next_message(&buf).unwrap().unwrap();
        assert_eq!((skip, len), (4, a.len()));
        let rest = &buf[skip + len..];
        assert_eq!(next_message(rest).unwrap(), Some((0, b.len())));
        assert_eq!(next_message(&a[..a.len() - 1]).unwrap(), None);
        assert_eq!(
            next_message(b"INVITE x SIP/2.0\r\n\r\n"),
            Err(FramingError::BadContentLength)
        );
    }
}
