//! The HTTP/1.1 codec: pure functions over the connection's byte buffers, no I/O.
//!
//! The connection code reads bytes into a per-connection `Vec<u8>` and calls in here:
//!
//! - [`parse`]: request and response heads on top of httparse. Zero-copy: a
//!   [`RequestHead`] / [`ResponseHead`] borrows the caller's buffer; `Ok(None)` means
//!   "read more bytes".
//! - [`framing`]: RFC 9112 §6 message body length rules ([`BodyKind`]), the `Connection`
//!   token helpers and the hop-by-hop header set.
//! - [`chunked`]: the incremental, zero-copy chunked decoder ([`ChunkedDecoder`]) and the
//!   encoder constants.
//! - [`write`](mod@write): serializing status lines, headers and the gateway's own JSON
//!   error responses into a `Vec<u8>`.
//!
//! The one thing to know: parsing is strict wherever two HTTP implementations could
//! disagree about where a message ends (request smuggling, response splitting). Bare CR,
//! obs-fold, whitespace before a colon, Content-Length together with Transfer-Encoding and
//! repeated Content-Length values are all rejected, and every error here ends the
//! connection it came from. A bare LF ending a head line is read as CRLF (RFC 9112 §2.2):
//! every head is re-serialized with CRLF, so no peer behind us sees it; chunked framing
//! lines still need CRLF. The limits in [`HeadLimits`] are enforced
//! on incomplete input too, so no peer can make a connection buffer without bound.
//!
//! Error statuses: a client's error answers with the status its variant documents
//! (400, 414, 431, 501, 505); the same error from an upstream is answered 502 ([`Error`]).

pub mod chunked;
pub mod encoding;
pub mod framing;
pub mod parse;
pub mod write;

#[cfg(test)]
mod prop_tests;

use std::fmt;

pub use chunked::{
    write_chunk, write_chunk_header, ChunkedDecoder, Decoded, CHUNK_TAIL, LAST_CHUNK,
};
/// This gateway's `Via` member (RFC 9110 §7.6.3), on every message it relays both ways.
pub const VIA: &[u8] = b"1.1 dispatch";

pub use framing::{has_token, is_hop_by_hop, request_body, response_body, wants_close, BodyKind};
pub use parse::{
    parse_request, parse_response, HeadLimits, Header, Headers, RequestHead, ResponseHead, Version,
};

/// Which peer sent the bytes that failed: it decides the status and whether the error
/// counts against an upstream (breakers only ever see [`Peer::Upstream`] errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The downstream client: the error is answered with the variant's own status.
    Client,
    /// An upstream server: every codec error is answered 502 Bad Gateway.
    Upstream,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Client => "client",
            Peer::Upstream => "upstream",
        })
    }
}

/// A request or response head that cannot be accepted. Every variant closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// 414 URI Too Long: the request line (counting any empty lines before it) has no CRLF
    /// within `limit` bytes. Raised as soon as `limit + 2` bytes arrived without one.
    #[error("request line longer than {limit} bytes")]
    RequestLineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// 431 Request Header Fields Too Large: the bytes after the request line, up to and
    /// including the final empty line, exceed `limit`. Raised on incomplete input too.
    #[error("header block larger than {limit} bytes")]
    HeaderTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// 431 Request Header Fields Too Large: more than `limit` header field lines.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// 505 HTTP Version Not Supported: a well-formed `HTTP/x.y` other than 1.0 and 1.1
    /// (`HTTP/2.0`, the HTTP/2 prior-knowledge preface, `HTTP/1.2`). Requests only; an
    /// upstream's bad version is [`HeadError::Malformed`].
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// 400 Bad Request: anything else that is not a valid HTTP/1.x head (bad method token,
    /// bad version syntax, HTTP/0.9, obs-fold, whitespace before a colon, an empty or
    /// invalid header name, CTL bytes in a value, a bare CR, a status code outside
    /// 100..=599, an invalid `Host` authority). The reason is for logs, not for the client.
    #[error("malformed head: {0}")]
    Malformed(&'static str),
}

impl HeadError {
    /// The status a client gets for this error (an upstream's head error is always 502).
    pub fn status(&self) -> u16 {
        match self {
            HeadError::RequestLineTooLong { .. } => 414,
            HeadError::HeaderTooLarge { .. } | HeadError::TooManyHeaders { .. } => 431,
            HeadError::UnsupportedVersion => 505,
            HeadError::Malformed(_) => 400,
        }
    }
}

/// Conflicting or unsupported message framing (RFC 9112 §6). Every variant closes the
/// connection; the statuses below are for requests, a response's framing error is 502.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// 400: both Transfer-Encoding and Content-Length (RFC 9112 §6.3 item 3), the classic
    /// smuggling vector.
    #[error("both Transfer-Encoding and Content-Length")]
    ContentLengthWithTransferEncoding,
    /// 400: more than one Content-Length value, as repeated fields or as a list, even when
    /// the values are identical (RFC 9110 §8.6 allows rejecting; we do).
    #[error("more than one Content-Length value")]
    MultipleContentLength,
    /// 400: a Content-Length that is not 1*DIGIT or does not fit in a u64.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// 400: a request whose final transfer coding is not `chunked` (RFC 9112 §6.3 item 4),
    /// including an empty Transfer-Encoding.
    #[error("final transfer coding is not chunked")]
    TransferEncodingNotChunked,
    /// 400: `chunked` applied more than once (RFC 9112 §7: a sender MUST NOT).
    #[error("chunked applied more than once")]
    RepeatedChunked,
    /// 501 Not Implemented: a transfer coding other than `chunked` before the final
    /// `chunked` (`gzip, chunked`); the gateway does not decode transfer codings.
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// 400: Transfer-Encoding in an HTTP/1.0 message (RFC 9112 §6.1: the framing is faulty).
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
}

impl FramingError {
    /// The status a client gets for this error in a request (in a response: 502).
    pub fn status(&self) -> u16 {
        match self {
            FramingError::UnsupportedTransferCoding => 501,
            _ => 400,
        }
    }
}

/// A chunked body that breaks RFC 9112 §7.1. Every variant closes the connection: 400 for
/// a request body, 502 for a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// 400: the chunk size is not 1*HEXDIG (sign, `0x`, whitespace before it, empty).
    #[error("invalid chunk size")]
    InvalidSize,
    /// 400: the chunk size does not fit in a u64.
    #[error("chunk size overflows")]
    SizeOverflow,
    /// 400: a chunk-size line (size and extensions) longer than `limit` bytes.
    #[error("chunk size line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// 400: a chunk extension with a byte outside field-value bytes, or whitespace after
    /// the size that is not followed by `;`.
    #[error("invalid chunk extension")]
    InvalidExtension,
    /// 400: CR LF missing where the grammar requires it (after the size line, after the
    /// data, at the end of the message); a bare LF lands here.
    #[error("missing CRLF")]
    MissingCrlf,
    /// 400: a trailer field line that is not a valid field line (obs-fold, empty name,
    /// space before colon, CTL bytes).
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// 400: the trailer section is larger than `limit` bytes.
    #[error("trailer section larger than {limit} bytes")]
    TrailersTooLarge {
        /// The limit in force.
        limit: usize,
    },
}

impl ChunkError {
    /// The status a client gets for this error in a request body (in a response: 502).
    pub fn status(&self) -> u16 {
        400
    }
}

/// A codec error together with the peer that caused it: what the connection code logs,
/// answers and closes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A head error: [`HeadError::status`] for a client, 502 for an upstream.
    #[error("bad {peer} head: {source}")]
    Head {
        /// Who sent the bytes.
        peer: Peer,
        /// What was wrong with them.
        source: HeadError,
    },
    /// A framing error: [`FramingError::status`] for a client, 502 for an upstream.
    #[error("bad {peer} message framing: {source}")]
    Framing {
        /// Who sent the bytes.
        peer: Peer,
        /// What was wrong with them.
        source: FramingError,
    },
    /// A chunked body error: 400 for a client, 502 for an upstream.
    #[error("bad {peer} chunked body: {source}")]
    Chunked {
        /// Who sent the bytes.
        peer: Peer,
        /// What was wrong with them.
        source: ChunkError,
    },
}

impl Error {
    /// Who sent the offending bytes.
    pub fn peer(&self) -> Peer {
        match *self {
            Error::Head { peer, .. }
            | Error::Framing { peer, .. }
            | Error::Chunked { peer, .. } => peer,
        }
    }

    /// The status to answer with: the variant's own for a client, 502 for an upstream.
    pub fn status(&self) -> u16 {
        if self.peer() == Peer::Upstream {
            return 502;
        }
        match self {
            Error::Head { source, .. } => source.status(),
            Error::Framing { source, .. } => source.status(),
            Error::Chunked { source, .. } => source.status(),
        }
    }
}

impl HeadError {
    /// Attributes this error to `peer`.
    pub fn from_peer(self, peer: Peer) -> Error {
        Error::Head { peer, source: self }
    }
}

impl FramingError {
    /// Attributes this error to `peer`.
    pub fn from_peer(self, peer: Peer) -> Error {
        Error::Framing { peer, source: self }
    }
}

impl ChunkError {
    /// Attributes this error to `peer`.
    pub fn from_peer(self, peer: Peer) -> Error {
        Error::Chunked { peer, source: self }
    }
}

/// RFC 3986 §3.3 `pchar` without `pct-encoded` (which callers handle themselves): unreserved,
/// sub-delims, `:` and `@`. A `const fn`, so byte-class tables can be built from it.
pub const fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_peer() {
        let cases: &[(Error, u16)] = &[
            (
                HeadError::RequestLineTooLong { limit: 1 }.from_peer(Peer::Client),
                414,
            ),
            (
                HeadError::HeaderTooLarge { limit: 1 }.from_peer(Peer::Client),
                431,
            ),
            (
                HeadError::TooManyHeaders { limit: 1 }.from_peer(Peer::Client),
                431,
            ),
            (HeadError::UnsupportedVersion.from_peer(Peer::Client), 505),
            (HeadError::Malformed("x").from_peer(Peer::Client), 400),
            (HeadError::Malformed("x").from_peer(Peer::Upstream), 502),
            (
                FramingError::UnsupportedTransferCoding.from_peer(Peer::Client),
                501,
            ),
            (
                FramingError::MultipleContentLength.from_peer(Peer::Client),
                400,
            ),
            (
                FramingError::ContentLengthWithTransferEncoding.from_peer(Peer::Upstream),
                502,
            ),
            (ChunkError::InvalidSize.from_peer(Peer::Client), 400),
            (ChunkError::InvalidSize.from_peer(Peer::Upstream), 502),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), *status, "{err}");
        }
    }

    #[test]
    fn error_messages_name_the_peer() {
        let err = ChunkError::MissingCrlf.from_peer(Peer::Upstream);
        assert_eq!(err.to_string(), "bad upstream chunked body: missing CRLF");
        assert_eq!(err.peer(), Peer::Upstream);
    }
}
