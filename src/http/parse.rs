//! Request and response heads: httparse for the grammar, plus the checks httparse leaves
//! to its caller (limits, the version answer, status code range, the Host authority).
//!
//! Key types: [`RequestHead`] and [`ResponseHead`] borrow the connection's buffer (zero
//! copy: method, target, header names and values are slices of it); [`HeadLimits`] bounds
//! what a peer may make us buffer.
//!
//! The invariant a reader must know: the outcome for a byte stream does not depend on how
//! it was split into reads. A parse of a prefix returns either `Ok(None)` or the same
//! result as the parse of the whole stream, limit errors included. To get that, the limits
//! are applied by cutting the input to the longest head the limits allow (the "view") and
//! letting httparse judge only that view: a limit error is "the view is full and the head
//! is still incomplete". The common case (a complete head within the limits) takes one
//! httparse pass over the buffer and a few pointer comparisons.
//!
//! Line endings (RFC 9112 §2.2): a bare LF ending the start line or a field line is read as
//! CRLF, as httparse does; a bare CR anywhere is an error. Nothing downstream ever sees the
//! difference: the gateway re-serializes every head it forwards with CRLF.

use std::fmt;
use std::mem::MaybeUninit;

use smallvec::SmallVec;

use super::HeadError;

/// Header fields kept inline (no allocation) in a parsed head; more spill to the heap.
pub const INLINE_HEADERS: usize = 32;

/// The header fields of a head, in wire order, duplicates kept.
pub type Headers<'b> = SmallVec<[Header<'b>; INLINE_HEADERS]>;

/// One header field line. `name` is a validated token (ASCII), `value` has its leading and
/// trailing whitespace removed and holds no CR, LF, NUL or other CTL except HT.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header<'b> {
    /// The field name, case as sent.
    pub name: &'b str,
    /// The field value, without surrounding whitespace.
    pub value: &'b [u8],
}

impl fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:?}",
            self.name,
            String::from_utf8_lossy(self.value)
        )
    }
}

/// The HTTP versions this codec speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0: no chunked coding, close by default.
    Http10,
    /// HTTP/1.1.
    Http11,
}

impl Version {
    /// The version as it appears on the wire: `HTTP/1.0` or `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }

    fn from_minor(minor: u8) -> Version {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
}

/// What a peer may make a connection buffer before its head is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request line (status line, for responses) without its CRLF, counting any
    /// empty lines before it: the line and its ending fit in `max_request_line + 2` bytes
    /// (so a line ending in a bare LF may be one byte longer). Over it:
    /// [`HeadError::RequestLineTooLong`] (414).
    pub max_request_line: usize,
    /// Largest header block: every byte after the request line, up to and including the
    /// empty line that ends the head. Over it: [`HeadError::HeaderTooLarge`] (431).
    pub max_header_bytes: usize,
    /// Most header field lines. Over it: [`HeadError::TooManyHeaders`] (431). Up to 128
    /// cost nothing extra; above that each parse allocates its scratch space.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_request_line: 8 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
        }
    }
}

impl HeadLimits {
    /// The longest prefix of the buffer that can still hold the request line and its CRLF.
    fn line_window(&self) -> usize {
        self.max_request_line.saturating_add(2)
    }
}

// Returned by value from every parse (one copy of it shows in the benches): grows with
// INLINE_HEADERS, 32 bytes a field.
const _: () = assert!(std::mem::size_of::<RequestHead<'static>>() <= 1088);
const _: () = assert!(std::mem::size_of::<ResponseHead<'static>>() <= 1088);

/// A parsed request head, borrowing the buffer it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead<'b> {
    /// The method token, case preserved (`GET`, `PATCH`, an extension method...).
    pub method: &'b str,
    /// The request target as sent: origin-form, absolute-form, authority-form or `*`.
    pub target: &'b str,
    /// HTTP/1.0 or HTTP/1.1 (anything else was refused).
    pub version: Version,
    /// The header fields, in wire order.
    pub headers: Headers<'b>,
    /// Bytes of the head, including any leading empty lines and the final CRLF CRLF: the
    /// body (or the next pipelined request) starts at `buf[head_len..]`.
    pub head_len: usize,
}

impl<'b> RequestHead<'b> {
    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        first_header(&self.headers, name)
    }

    /// The authority the request is for (RFC 9112 §3.2), port included: the target's
    /// authority for an absolute-form target (§3.2.2: Host is then ignored), else the Host
    /// field. `Ok(None)` only for HTTP/1.0 without Host.
    ///
    /// Errors, all 400 (§3.2: a server "MUST respond with a 400"): HTTP/1.1 without Host,
    /// more than one Host field, a Host value that is not a valid authority (see
    /// [`is_authority`]: `Host: a b` is refused, not forwarded), an absolute-form target
    /// whose authority is empty, invalid or carries userinfo. An empty Host is valid (§3.2:
    /// a client sends one when the target URI has no authority).
    pub fn host(&self) -> Result<Option<&'b [u8]>, HeadError> {
        let mut hosts = self
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"));
        let host = hosts.next().map(|h| h.value);
        if hosts.next().is_some() {
            return Err(HeadError::Malformed("more than one Host field"));
        }
        if host.is_none() && self.version == Version::Http11 {
            return Err(HeadError::Malformed("missing Host field"));
        }
        // Checked even when an absolute-form target overrides it (§3.2.2): §3.2 asks for a
        // 400 on an invalid Host whatever the target.
        if host.is_some_and(|h| !h.is_empty() && !is_authority(h)) {
            return Err(HeadError::Malformed("invalid Host field"));
        }
        if let Some(authority) = absolute_form_authority(self.target) {
            if authority.is_empty() || !is_authority(authority.as_bytes()) {
                return Err(HeadError::Malformed("invalid authority in request target"));
            }
            return Ok(Some(authority.as_bytes()));
        }
        Ok(host)
    }
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2-3.2.3): a
/// reg-name (unreserved, pct-encoded and sub-delims: IPv4 addresses included), or an
/// IP-literal in brackets (an IPv6 address, or IPvFuture); then optionally ':' and a port of
/// up to 5 digits, at most 65535 (RFC 3986 allows an empty port, so "a:" passes). No userinfo,
/// no whitespace, no path. An empty value is not an authority here; callers decide.
pub fn is_authority(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        if !is_ip_literal(&value[1..close]) {
            return false;
        }
        match &value[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (None, port),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (Some(&value[..colon]), &value[colon + 1..]),
            None => (Some(value), &[][..]),
        }
    };
    if let Some(name) = host {
        if name.is_empty() || !is_reg_name(name) {
            return false;
        }
    }
    port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
}

/// RFC 3986 §3.2.2 reg-name: `*( unreserved / pct-encoded / sub-delims )`.
fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                let hex = name.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// The inside of RFC 3986's `IP-literal`: an IPv6 address or `IPvFuture`.
fn is_ip_literal(inner: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = inner {
        // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        return dot > 0
            && rest[..dot].iter().all(u8::is_ascii_hexdigit)
            && rest.len() > dot + 1
            && rest[dot + 1..]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b));
    }
    std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

/// The authority of an `http://` or `https://` absolute-form target.
fn absolute_form_authority(target: &str) -> Option<&str> {
    // Compared as bytes: the target may hold UTF-8, and slicing the &str at 7 or 8 could
    // cut a character in two.
    let has_prefix = |prefix: &[u8]| {
        target
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    };
    let scheme_len = if has_prefix(b"http://") {
        7
    } else if has_prefix(b"https://") {
        8
    } else {
        return None;
    };
    let rest = &target[scheme_len..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// A parsed response head, borrowing the buffer it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead<'b> {
    /// HTTP/1.0 or HTTP/1.1 (anything else was refused).
    pub version: Version,
    /// Three digits, 100..=599.
    pub status: u16,
    /// The reason phrase as sent (may be empty, may hold obs-text bytes).
    pub reason: &'b [u8],
    /// The header fields, in wire order.
    pub headers: Headers<'b>,
    /// Bytes of the head including the final CRLF CRLF; the body starts at `buf[head_len..]`.
    pub head_len: usize,
}

impl<'b> ResponseHead<'b> {
    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        first_header(&self.headers, name)
    }
}

fn first_header<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// httparse's scratch slots; up to this many live on the stack, uninitialised (free).
const STACK_SLOTS: usize = 128;

type Slot<'b> = MaybeUninit<httparse::Header<'b>>;

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more and call again with the grown buffer. `Ok(Some)`: the
/// head, whose `head_len` says where the body starts. `Err`: answer with
/// [`HeadError::status`] and close. Limits are enforced on incomplete input: a request
/// line still without CRLF after `max_request_line + 2` bytes is already an error.
pub fn parse_request<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
) -> Result<Option<RequestHead<'b>>, HeadError> {
    // Checked first, then assembled here from the slots httparse filled: a RequestHead is
    // about a kilobyte (INLINE_HEADERS fields inline), so it is built once, not passed up.
    if limits.max_headers <= STACK_SLOTS {
        let mut slots = [Slot::uninit(); STACK_SLOTS];
        let parts = request_parts(buf, limits, &mut slots[..limits.max_headers])?;
        Ok(parts.map(RequestParts::into_head))
    } else {
        let mut slots = vec![Slot::uninit(); limits.max_headers];
        let parts = request_parts(buf, limits, &mut slots)?;
        Ok(parts.map(RequestParts::into_head))
    }
}

/// Parses a response head at the start of `buf`; same contract as [`parse_request`], with
/// `max_request_line` bounding the status line. The caller answers any error with 502.
pub fn parse_response<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
) -> Result<Option<ResponseHead<'b>>, HeadError> {
    if limits.max_headers <= STACK_SLOTS {
        let mut slots = [Slot::uninit(); STACK_SLOTS];
        let parts = response_parts(buf, limits, &mut slots[..limits.max_headers])?;
        Ok(parts.map(ResponseParts::into_head))
    } else {
        let mut slots = vec![Slot::uninit(); limits.max_headers];
        let parts = response_parts(buf, limits, &mut slots)?;
        Ok(parts.map(ResponseParts::into_head))
    }
}

/// A complete, checked request head whose fields are still in httparse's slots.
struct RequestParts<'b, 's> {
    method: &'b str,
    target: &'b str,
    version: Version,
    headers: &'s [httparse::Header<'b>],
    head_len: usize,
}

impl<'b> RequestParts<'b, '_> {
    #[inline(always)]
    fn into_head(self) -> RequestHead<'b> {
        let mut head = RequestHead {
            method: self.method,
            target: self.target,
            version: self.version,
            headers: Headers::new(),
            head_len: self.head_len,
        };
        copy_headers(self.headers, &mut head.headers);
        head
    }
}

/// A complete, checked response head whose fields are still in httparse's slots.
struct ResponseParts<'b, 's> {
    version: Version,
    status: u16,
    reason: &'b [u8],
    headers: &'s [httparse::Header<'b>],
    head_len: usize,
}

impl<'b> ResponseParts<'b, '_> {
    #[inline(always)]
    fn into_head(self) -> ResponseHead<'b> {
        let mut head = ResponseHead {
            version: self.version,
            status: self.status,
            reason: self.reason,
            headers: Headers::new(),
            head_len: self.head_len,
        };
        copy_headers(self.headers, &mut head.headers);
        head
    }
}

#[inline(always)]
fn copy_headers<'b>(parsed: &[httparse::Header<'b>], into: &mut Headers<'b>) {
    into.extend(parsed.iter().map(|h| Header {
        name: h.name,
        value: h.value,
    }));
}

fn request_parts<'b, 's>(
    buf: &'b [u8],
    limits: &HeadLimits,
    slots: &'s mut [Slot<'b>],
) -> Result<Option<RequestParts<'b, 's>>, HeadError> {
    // Fast path: the widest view any head can need. A head that completes in it is then
    // checked against the exact limits; anything else is settled on the exact view.
    let widest = limits.line_window().saturating_add(limits.max_header_bytes);
    let view_len = buf.len().min(widest);
    // httparse's default configuration is the strict one we want (no obs-fold, no space
    // before a colon, one SP between the parts of the request line, invalid header lines
    // are errors, not skipped); the tables below pin each of these. Passing a built
    // ParserConfig instead costs a third more time, as its flags are then read at run time.
    let mut req = httparse::Request::new(&mut []);
    let err = match req.parse_with_uninit_headers(&buf[..view_len], slots) {
        Ok(httparse::Status::Complete(head_len)) => {
            return complete_request(buf, req, head_len, limits).map(Some)
        }
        Ok(httparse::Status::Partial) => return partial(buf, limits),
        Err(err) => err,
    };
    refused_request(buf, limits, view_len, err).map(|()| None)
}

fn response_parts<'b, 's>(
    buf: &'b [u8],
    limits: &HeadLimits,
    slots: &'s mut [Slot<'b>],
) -> Result<Option<ResponseParts<'b, 's>>, HeadError> {
    let widest = limits.line_window().saturating_add(limits.max_header_bytes);
    let view_len = buf.len().min(widest);
    // The default configuration, as for requests: strict, and constant-folded.
    let mut res = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let err = match config.parse_response_with_uninit_headers(&mut res, &buf[..view_len], slots) {
        Ok(httparse::Status::Complete(head_len)) => {
            return complete_response(buf, res, head_len, limits).map(Some)
        }
        Ok(httparse::Status::Partial) => return partial(buf, limits),
        Err(err) => err,
    };
    refused_response(buf, limits, view_len, err).map(|()| None)
}

/// httparse refused the widest view: settle the outcome on the exact view. `Ok(())` means
/// incomplete. Errors are rare, so this pass gets scratch slots of its own.
#[cold]
fn refused_request(
    buf: &[u8],
    limits: &HeadLimits,
    view_len: usize,
    err: httparse::Error,
) -> Result<(), HeadError> {
    let exact = exact_view(buf, limits);
    let err = if exact.end < view_len {
        // The error may lie beyond what the limits allow: judge only the allowed bytes.
        let mut scratch = vec![Slot::uninit(); limits.max_headers];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(&buf[..exact.end], &mut scratch) {
            // (A prefix of refused bytes cannot complete: httparse stops at a head's end.)
            Ok(_) => return Err(exact.limit_error(limits)),
            Err(err) => err,
        }
    } else {
        err
    };
    match err {
        httparse::Error::Version => match version_shape(&buf[..buf.len().min(exact.end)]) {
            VersionShape::Unsupported => Err(HeadError::UnsupportedVersion),
            VersionShape::Invalid => Err(HeadError::Malformed("invalid HTTP version")),
            VersionShape::Incomplete if buf.len() >= exact.end => Err(exact.limit_error(limits)),
            VersionShape::Incomplete => Ok(()),
        },
        other => Err(map_error(other, limits)),
    }
}

/// As [`refused_request`], for a response (no 505: any bad version is malformed).
#[cold]
fn refused_response(
    buf: &[u8],
    limits: &HeadLimits,
    view_len: usize,
    err: httparse::Error,
) -> Result<(), HeadError> {
    let exact = exact_view(buf, limits);
    if exact.end < view_len {
        let mut scratch = vec![Slot::uninit(); limits.max_headers];
        let mut res = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        match config.parse_response_with_uninit_headers(&mut res, &buf[..exact.end], &mut scratch) {
            Ok(_) => Err(exact.limit_error(limits)),
            Err(err) => Err(map_error(err, limits)),
        }
    } else {
        Err(map_error(err, limits))
    }
}

fn map_error(err: httparse::Error, limits: &HeadLimits) -> HeadError {
    use httparse::Error as E;
    match err {
        E::TooManyHeaders => HeadError::TooManyHeaders {
            limit: limits.max_headers,
        },
        // Covers obs-fold (a line starting with SP/HT), space before the colon, an empty
        // name: httparse is never configured to allow any of them.
        E::HeaderName => HeadError::Malformed("invalid header name"),
        E::HeaderValue => HeadError::Malformed("invalid header value"),
        E::NewLine => HeadError::Malformed("invalid line ending"),
        E::Status => HeadError::Malformed("invalid status line"),
        E::Token => HeadError::Malformed("invalid method or request target"),
        E::Version => HeadError::Malformed("invalid HTTP version"),
    }
}

/// Incomplete in the widest view: an error once the exact view is full, else wait.
fn partial<T>(buf: &[u8], limits: &HeadLimits) -> Result<Option<T>, HeadError> {
    let exact = exact_view(buf, limits);
    // The exact view is a prefix of the incomplete widest view, so it is incomplete too.
    if buf.len() >= exact.end {
        Err(exact.limit_error(limits))
    } else {
        Ok(None)
    }
}

/// The longest head the limits allow for this buffer.
struct ExactView {
    /// Bytes httparse may look at.
    end: usize,
    /// Whether the request (status) line's LF lies within the line window.
    line_done: bool,
}

impl ExactView {
    fn limit_error(&self, limits: &HeadLimits) -> HeadError {
        if self.line_done {
            HeadError::HeaderTooLarge {
                limit: limits.max_header_bytes,
            }
        } else {
            HeadError::RequestLineTooLong {
                limit: limits.max_request_line,
            }
        }
    }
}

fn exact_view(buf: &[u8], limits: &HeadLimits) -> ExactView {
    let window = &buf[..buf.len().min(limits.line_window())];
    let start = skip_empty_lines(window);
    match window[start..].iter().position(|&b| b == b'\n') {
        Some(lf) => ExactView {
            end: (start + lf + 1).saturating_add(limits.max_header_bytes),
            line_done: true,
        },
        None => ExactView {
            end: limits.line_window(),
            line_done: false,
        },
    }
}

/// Skips empty lines the way httparse does (CRLF or a bare LF). RFC 9112 §2.2: a server
/// SHOULD ignore at least one empty line before the request line. They count against
/// `max_request_line`, so they cannot go on forever.
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') if buf.get(i + 1) == Some(&b'\n') => i += 2,
            _ => return i,
        }
    }
}

fn complete_request<'b, 's>(
    buf: &'b [u8],
    req: httparse::Request<'s, 'b>,
    head_len: usize,
    limits: &HeadLimits,
) -> Result<RequestParts<'b, 's>, HeadError> {
    // httparse sets all three on a complete parse; no fallback that could mislead the
    // offset arithmetic below.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    // request-line = method SP target SP HTTP-version(8 bytes) CRLF, or a bare LF (RFC 9112
    // §2.2), which httparse takes as CRLF.
    let version_end = offset(buf, target.as_bytes()) + target.len() + 1 + 8;
    let line_end = if buf.get(version_end) == Some(&b'\r') {
        version_end + 2
    } else {
        version_end + 1
    };
    check_limits(line_end, head_len, limits)?;
    Ok(RequestParts {
        method,
        target,
        version: Version::from_minor(minor),
        headers: req.headers,
        head_len,
    })
}

fn complete_response<'b, 's>(
    buf: &'b [u8],
    res: httparse::Response<'s, 'b>,
    head_len: usize,
    limits: &HeadLimits,
) -> Result<ResponseParts<'b, 's>, HeadError> {
    let start = skip_empty_lines(buf);
    // The status line is short and complete: find its LF directly.
    let lf = start
        + buf[start..head_len]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(HeadError::Malformed("invalid status line"))?;
    let line_end = lf + 1;
    check_limits(line_end, head_len, limits)?;
    let status = res.code.unwrap_or_default();
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("status code out of range"));
    }
    // status-line = HTTP-version(8) SP 3DIGIT SP [reason] CRLF; httparse also accepts no
    // SP after the code when the reason is absent. Taken from the buffer because httparse
    // replaces a reason holding obs-text with "".
    let reason_start = start + 13;
    // The line ends in CRLF or in a bare LF (RFC 9112 §2.2).
    let reason_end = if buf[lf - 1] == b'\r' { lf - 1 } else { lf };
    let reason = if buf[start + 12] == b' ' && reason_start < reason_end {
        &buf[reason_start..reason_end]
    } else {
        &[][..]
    };
    Ok(ResponseParts {
        version: Version::from_minor(res.version.unwrap_or_default()),
        status,
        reason,
        headers: res.headers,
        head_len,
    })
}

/// Byte offset of `part` (a slice of `buf`) inside `buf`.
fn offset(buf: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - buf.as_ptr() as usize
}

/// The limits, checked against a head httparse completed in the widest view. Equivalent
/// to parsing the exact view: a head longer than it would have been incomplete there.
fn check_limits(line_end: usize, head_len: usize, limits: &HeadLimits) -> Result<(), HeadError> {
    if line_end > limits.line_window() {
        return Err(HeadError::RequestLineTooLong {
            limit: limits.max_request_line,
        });
    }
    if head_len - line_end > limits.max_header_bytes {
        return Err(HeadError::HeaderTooLarge {
            limit: limits.max_header_bytes,
        });
    }
    Ok(())
}

enum VersionShape {
    /// `HTTP/d.d` CRLF (or LF), but not 1.0 or 1.1: 505.
    Unsupported,
    /// Anything else: 400.
    Invalid,
    /// A prefix of `HTTP/d.d` CRLF: wait for the rest before judging.
    Incomplete,
}

/// Judges the version of a request line that httparse refused (its method and target
/// were valid, so the version starts after the second SP).
fn version_shape(view: &[u8]) -> VersionShape {
    let start = skip_empty_lines(view);
    let mut spaces = view[start..]
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b' ')
        .map(|(i, _)| start + i);
    let Some(version_start) = spaces.nth(1).map(|sp| sp + 1) else {
        return VersionShape::Invalid;
    };
    const SHAPE: &[u8] = b"HTTP/0.0";
    for (i, expected) in SHAPE.iter().enumerate() {
        let Some(&b) = view.get(version_start + i) else {
            return VersionShape::Incomplete;
        };
        let ok = if *expected == b'0' {
            b.is_ascii_digit()
        } else {
            b == *expected
        };
        if !ok {
            return VersionShape::Invalid;
        }
    }
    // CRLF, or a bare LF (RFC 9112 §2.2).
    match view.get(version_start + SHAPE.len()..) {
        Some([b'\n', ..] | [b'\r', b'\n', ..]) => VersionShape::Unsupported,
        Some([] | [b'\r']) | None => VersionShape::Incomplete,
        Some(_) => VersionShape::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_request_line: 8192,
        max_header_bytes: 16384,
        max_headers: 64,
    };

    fn req(buf: &[u8]) -> Result<Option<RequestHead<'_>>, HeadError> {
        parse_request(buf, &LIMITS)
    }

    fn res(buf: &[u8]) -> Result<Option<ResponseHead<'_>>, HeadError> {
        parse_response(buf, &LIMITS)
    }

    struct Valid {
        name: &'static str,
        input: &'static [u8],
        method: &'static str,
        target: &'static str,
        version: Version,
        headers: &'static [(&'static str, &'static [u8])],
        head_len: usize,
    }

    const VALID_REQUESTS: &[Valid] = &[
        Valid {
            name: "minimal",
            input: b"GET / HTTP/1.1\r\n\r\n",
            method: "GET",
            target: "/",
            version: Version::Http11,
            headers: &[],
            head_len: 18,
        },
        Valid {
            name: "query",
            input: b"GET /users?id=7&sort=desc HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
            method: "GET",
            target: "/users?id=7&sort=desc",
            version: Version::Http11,
            headers: &[("Host", b"api.example.com")],
            head_len: 61,
        },
        Valid {
            name: "absolute-form",
            input: b"GET http://api.example.com:8080/v1/x?y=1 HTTP/1.1\r\nHost: api.example.com:8080\r\n\r\n",
            method: "GET",
            target: "http://api.example.com:8080/v1/x?y=1",
            version: Version::Http11,
            headers: &[("Host", b"api.example.com:8080")],
            head_len: 81,
        },
        Valid {
            name: "authority-form",
            input: b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
            method: "CONNECT",
            target: "db.internal:5432",
            version: Version::Http11,
            headers: &[("Host", b"db.internal:5432")],
            head_len: 61,
        },
        Valid {
            name: "asterisk-form",
            input: b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            method: "OPTIONS",
            target: "*",
            version: Version::Http11,
            headers: &[("Host", b"a")],
            head_len: 31,
        },
        Valid {
            name: "http/1.0 without host",
            input: b"GET /old HTTP/1.0\r\n\r\n",
            method: "GET",
            target: "/old",
            version: Version::Http10,
            headers: &[],
            head_len: 21,
        },
        Valid {
            name: "extension method, lower-case names, odd values",
            input: b"PURGE /c HTTP/1.1\r\nx-a:  padded \t \r\nX-Empty:\r\nX-Tab:\tv\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
            method: "PURGE",
            target: "/c",
            version: Version::Http11,
            headers: &[
                ("x-a", b"padded"),
                ("X-Empty", b""),
                ("X-Tab", b"v"),
                ("X-Obs", b"caf\xc3\xa9"),
            ],
            head_len: 72,
        },
        Valid {
            name: "value with inner whitespace and quotes",
            input: b"POST /f HTTP/1.1\r\nContent-Type: text/plain; charset=\"utf 8\"\r\nContent-Length: 5\r\n\r\nhello",
            method: "POST",
            target: "/f",
            version: Version::Http11,
            headers: &[
                ("Content-Type", b"text/plain; charset=\"utf 8\""),
                ("Content-Length", b"5"),
            ],
            head_len: 82,
        },
        Valid {
            name: "leading empty lines are skipped",
            input: b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            method: "GET",
            target: "/",
            version: Version::Http11,
            headers: &[],
            head_len: 22,
        },
        Valid {
            name: "pipelined bytes after the head are not consumed",
            input: b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
            method: "GET",
            target: "/a",
            version: Version::Http11,
            headers: &[("Host", b"h")],
            head_len: 28,
        },
        Valid {
            name: "duplicate fields kept in order",
            input: b"GET / HTTP/1.1\r\nAccept: a\r\nX: 1\r\naccept: b\r\n\r\n",
            method: "GET",
            target: "/",
            version: Version::Http11,
            headers: &[("Accept", b"a"), ("X", b"1"), ("accept", b"b")],
            head_len: 46,
        },
    ];

    fn check_valid(case: &Valid, head: &RequestHead<'_>) {
        assert_eq!(head.method, case.method, "{}", case.name);
        assert_eq!(head.target, case.target, "{}", case.name);
        assert_eq!(head.version, case.version, "{}", case.name);
        assert_eq!(head.head_len, case.head_len, "{}", case.name);
        let got: Vec<(&str, &[u8])> = head.headers.iter().map(|h| (h.name, h.value)).collect();
        assert_eq!(got, case.headers, "{}", case.name);
    }

    #[test]
    fn valid_requests() {
        for case in VALID_REQUESTS {
            let head = req(case.input)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name))
                .unwrap_or_else(|| panic!("{}: incomplete", case.name));
            check_valid(case, &head);
        }
    }

    #[test]
    fn every_prefix_of_a_valid_request_is_incomplete() {
        for case in VALID_REQUESTS {
            for cut in 0..case.head_len {
                assert_eq!(
                    req(&case.input[..cut]),
                    Ok(None),
                    "{} cut at {cut}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn many_headers_spill_to_the_heap() {
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..60 {
            buf.extend_from_slice(format!("X-Header-{i}: value-{i}\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        let head = req(&buf).unwrap().unwrap();
        assert_eq!(head.headers.len(), 60);
        assert!(head.headers.spilled());
        assert_eq!(head.headers[59].value, b"value-59");
        assert_eq!(head.header("x-header-7"), Some(&b"value-7"[..]));
        assert_eq!(head.header("missing"), None);
        assert_eq!(head.head_len, buf.len());
    }

    #[test]
    fn host() {
        type Case = (&'static [u8], Result<Option<&'static [u8]>, HeadError>);
        let cases: &[Case] = &[
            (
                b"GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
                Ok(Some(b"a.example:8080")),
            ),
            (b"GET / HTTP/1.1\r\nhost: \r\n\r\n", Ok(Some(b""))),
            (b"GET / HTTP/1.0\r\n\r\n", Ok(None)),
            (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", Ok(Some(b"a"))),
            (
                b"GET / HTTP/1.1\r\n\r\n",
                Err(HeadError::Malformed("missing Host field")),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHOST: a\r\n\r\n",
                Err(HeadError::Malformed("more than one Host field")),
            ),
            (
                b"GET http://b.example/x HTTP/1.1\r\nHost: a\r\n\r\n",
                Ok(Some(b"b.example")),
            ),
            (
                b"GET HTTPS://b.example:443?q HTTP/1.1\r\nHost: a\r\n\r\n",
                Ok(Some(b"b.example:443")),
            ),
            (
                b"GET http://u@b.example/ HTTP/1.1\r\nHost: a\r\n\r\n",
                Err(HeadError::Malformed("invalid authority in request target")),
            ),
            (
                b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
                Err(HeadError::Malformed("invalid authority in request target")),
            ),
            (
                b"GET http://b.example/ HTTP/1.1\r\n\r\n",
                Err(HeadError::Malformed("missing Host field")),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
                Ok(Some(b"[::1]:8080")),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: [v1.fe:x]\r\n\r\n",
                Ok(Some(b"[v1.fe:x]")),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n",
                Ok(Some(b"10.0.0.1:80")),
            ),
            (b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n", Ok(Some(b"a:"))),
            (
                b"GET / HTTP/1.1\r\nHost: x%41-_~!$&'()*+,;=\r\n\r\n",
                Ok(Some(b"x%41-_~!$&'()*+,;=")),
            ),
            (
                b"GET http://b.example/ HTTP/1.1\r\nHost: a b\r\n\r\n",
                Err(HeadError::Malformed("invalid Host field")),
            ),
            (
                b"GET http://b:99999/ HTTP/1.1\r\nHost: a\r\n\r\n",
                Err(HeadError::Malformed("invalid authority in request target")),
            ),
        ];
        let invalid: &[&[u8]] = &[
            b"a b",
            b"a\tb",
            b"u@a",
            b"a/b",
            b"a?b",
            b"a#b",
            b"%zz",
            b"a:b",
            b"a:-1",
            b"a:65536",
            b"a:123456",
            b"[::1",
            b"[::1]x",
            b"[::g]",
            b"[1.2.3.4]",
            b"[v.x]",
            b"a\"b",
            b"a<b",
            b":80",
            b"a:1:2",
            b"caf\xc3\xa9",
        ];
        for value in invalid {
            let mut input = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            input.extend_from_slice(value);
            input.extend_from_slice(b"\r\n\r\n");
            let head = req(&input).unwrap().unwrap();
            assert_eq!(
                head.host(),
                Err(HeadError::Malformed("invalid Host field")),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        for (input, expected) in cases {
            let head = req(input).unwrap().unwrap();
            assert_eq!(head.host(), *expected, "{}", String::from_utf8_lossy(input));
        }
    }

    /// Found by fuzzing: `host()` sliced the target `&str` at byte 7 to look for "http://",
    /// which panics when byte 7 falls inside a multi-byte character.
    #[test]
    fn host_of_target_with_multibyte_char_at_scheme_boundary() {
        let input = b"~GET http:/\xda\x87\xd0\x86 HTTP/1.0\r\nConn_ction: keep-aliUE\r\n\r\n";
        let head = req(input).unwrap().unwrap();
        assert_eq!(head.target, "http:/\u{687}\u{406}");
        assert_eq!(head.host(), Ok(None));
        let https = b"GET https:/\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(req(https).unwrap().unwrap().host(), Ok(Some(&b"a"[..])));
    }

    #[test]
    fn more_than_128_headers_allowed_by_limits() {
        let limits = HeadLimits {
            max_headers: 300,
            ..LIMITS
        };
        let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..300 {
            buf.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request(&buf, &limits).unwrap().unwrap().headers.len(),
            300
        );
        buf.truncate(buf.len() - 2);
        buf.extend_from_slice(b"One: more\r\n\r\n");
        assert_eq!(
            parse_request(&buf, &limits),
            Err(HeadError::TooManyHeaders { limit: 300 })
        );
    }

    /// (name, input, expected) for inputs that must be refused or kept waiting.
    type BadRequest = (&'static str, &'static [u8], Result<(), HeadError>);

    #[rustfmt::skip]
    const BAD_REQUESTS: &[BadRequest] = &[
        ("bad method token", b"G@T / HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid method or request target"))),
        ("empty method", b" / HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid method or request target"))),
        ("two spaces", b"GET  / HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid method or request target"))),
        ("tab delimiter", b"GET\t/ HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid method or request target"))),
        ("space in target", b"GET /a b HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid HTTP version"))),
        ("CTL in target", b"GET /a\x01b HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid method or request target"))),
        ("DEL in target", b"GET /a\x7fb HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid method or request target"))),
        ("http/0.9", b"GET /\r\n\r\n", Err(HeadError::Malformed("invalid method or request target"))),
        ("lower-case version", b"GET / http/1.1\r\n\r\n", Err(HeadError::Malformed("invalid HTTP version"))),
        ("version garbage", b"GET / HTTP/1.x\r\n\r\n", Err(HeadError::Malformed("invalid HTTP version"))),
        ("version too long", b"GET / HTTP/1.10\r\n\r\n", Err(HeadError::Malformed("invalid line ending"))),
        ("version 2 digits", b"GET / HTTP/10.1\r\n\r\n", Err(HeadError::Malformed("invalid HTTP version"))),
        ("http/2.0", b"GET / HTTP/2.0\r\n\r\n", Err(HeadError::UnsupportedVersion)),
        ("http/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Err(HeadError::UnsupportedVersion)),
        ("http/0.9 version", b"GET / HTTP/0.9\r\n\r\n", Err(HeadError::UnsupportedVersion)),
        ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Err(HeadError::UnsupportedVersion)),
        ("h2 preface, partial", b"PRI * HTTP/2.0\r", Ok(())),
        ("h2 version, bare LF", b"GET / HTTP/2.0\n\n", Err(HeadError::UnsupportedVersion)),
        ("bare CR after version", b"GET / HTTP/2.0\rX\r\n\r\n", Err(HeadError::Malformed("invalid HTTP version"))),
        ("bare CR ending header line", b"GET / HTTP/1.1\r\nX: a\r\rY: b\r\n\r\n", Err(HeadError::Malformed("invalid header value"))),
        ("bare CR empty line before request", b"\rGET / HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid line ending"))),
        ("obs-fold", b"GET / HTTP/1.1\r\nX: a\r\n  b\r\n\r\n", Err(HeadError::Malformed("invalid header name"))),
        ("obs-fold with tab", b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", Err(HeadError::Malformed("invalid header name"))),
        ("leading whitespace before first header", b"GET / HTTP/1.1\r\n X: a\r\n\r\n", Err(HeadError::Malformed("invalid header name"))),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Err(HeadError::Malformed("invalid header name"))),
        ("tab before colon", b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", Err(HeadError::Malformed("invalid header name"))),
        ("empty header name", b"GET / HTTP/1.1\r\n: a\r\n\r\n", Err(HeadError::Malformed("invalid header name"))),
        ("no colon", b"GET / HTTP/1.1\r\nHost a\r\n\r\n", Err(HeadError::Malformed("invalid header name"))),
        ("invalid name byte", b"GET / HTTP/1.1\r\nX(y): a\r\n\r\n", Err(HeadError::Malformed("invalid header name"))),
        ("non-ascii name", b"GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n", Err(HeadError::Malformed("invalid header name"))),
        ("NUL in value", b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", Err(HeadError::Malformed("invalid header value"))),
        ("CTL in value", b"GET / HTTP/1.1\r\nX: a\x0bb\r\n\r\n", Err(HeadError::Malformed("invalid header value"))),
        ("DEL in value", b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", Err(HeadError::Malformed("invalid header value"))),
        ("bare CR in value", b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", Err(HeadError::Malformed("invalid header value"))),
        ("bare CR ending value", b"GET / HTTP/1.1\r\nX: a\rY: b\r\n\r\n", Err(HeadError::Malformed("invalid header value"))),
        ("bare CR after request line", b"GET / HTTP/1.1\rX: a\r\n\r\n", Err(HeadError::Malformed("invalid line ending"))),
        ("bare CR ending head", b"GET / HTTP/1.1\r\nX: a\r\n\rZ", Err(HeadError::Malformed("invalid line ending"))),
        ("CR CR LF before request", b"\r\r\nGET / HTTP/1.1\r\n\r\n", Err(HeadError::Malformed("invalid line ending"))),
        ("incomplete headers", b"GET / HTTP/1.1\r\nHost: a\r\n", Ok(())),
        ("incomplete final CR", b"GET / HTTP/1.1\r\nHost: a\r\n\r", Ok(())),
        ("incomplete leading lines", b"\r\n\r\n\r", Ok(())),
    ];

    /// RFC 9112 §2.2: a bare LF ending the request line or a field line was refused with 400;
    /// it reads as CRLF, wherever it stands and however the input was split.
    #[test]
    fn bare_lf_line_endings_are_read_as_crlf() {
        type Case = (
            &'static [u8],
            &'static str,
            &'static [(&'static str, &'static [u8])],
        );
        let cases: &[Case] = &[
            (b"GET /a HTTP/1.1\nHost: a\r\n\r\n", "/a", &[("Host", b"a")]),
            (
                b"GET /a HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
                "/a",
                &[("Host", b"a"), ("X", b"b")],
            ),
            (
                b"GET /a HTTP/1.1\r\nX:\nY: b\r\n\r\n",
                "/a",
                &[("X", b""), ("Y", b"b")],
            ),
            (
                b"GET /a HTTP/1.1\r\nX: a \t\nY: b\r\n\r\n",
                "/a",
                &[("X", b"a"), ("Y", b"b")],
            ),
            (b"GET /a HTTP/1.1\r\nHost: a\r\n\n", "/a", &[("Host", b"a")]),
            (b"GET /a HTTP/1.1\nHost: a\n\n", "/a", &[("Host", b"a")]),
            (b"\nGET /a HTTP/1.1\r\n\r\n", "/a", &[]),
            (b"\r\n\nGET /a HTTP/1.0\n\n", "/a", &[]),
        ];
        for (input, target, headers) in cases {
            let name = String::from_utf8_lossy(input);
            let head = req(input)
                .unwrap_or_else(|e| panic!("{name:?}: {e}"))
                .unwrap_or_else(|| panic!("{name:?}: incomplete"));
            assert_eq!(head.target, *target, "{name:?}");
            assert_eq!(head.head_len, input.len(), "{name:?}");
            let got: Vec<(&str, &[u8])> = head.headers.iter().map(|h| (h.name, h.value)).collect();
            assert_eq!(got, *headers, "{name:?}");
            for cut in 0..input.len() {
                assert_eq!(req(&input[..cut]), Ok(None), "{name:?} cut {cut}");
            }
        }
        // Responses too: the status line and field lines.
        type ResCase = (
            &'static [u8],
            u16,
            &'static [u8],
            &'static [(&'static str, &'static [u8])],
        );
        let responses: &[ResCase] = &[
            (b"HTTP/1.1 200 OK\nX: a\r\n\r\n", 200, b"OK", &[("X", b"a")]),
            (b"HTTP/1.1 204\nX: a\r\n\r\n", 204, b"", &[("X", b"a")]),
            (b"HTTP/1.1 404 \n\n", 404, b"", &[]),
            (
                b"HTTP/1.1 200 Fine Thanks\r\nX: a\n\r\n",
                200,
                b"Fine Thanks",
                &[("X", b"a")],
            ),
            (b"HTTP/1.1 200 OK\r\nX: a\r\n\n", 200, b"OK", &[("X", b"a")]),
        ];
        for (input, status, reason, headers) in responses {
            let name = String::from_utf8_lossy(input);
            let head = res(input)
                .unwrap_or_else(|e| panic!("{name:?}: {e}"))
                .unwrap_or_else(|| panic!("{name:?}: incomplete"));
            assert_eq!(head.status, *status, "{name:?}");
            assert_eq!(head.reason, *reason, "{name:?}");
            assert_eq!(head.head_len, input.len(), "{name:?}");
            let got: Vec<(&str, &[u8])> = head.headers.iter().map(|h| (h.name, h.value)).collect();
            assert_eq!(got, *headers, "{name:?}");
        }
    }

    #[test]
    fn bad_requests() {
        for (name, input, expected) in BAD_REQUESTS {
            let got = req(input).map(|head| assert!(head.is_none(), "{name}: parsed"));
            assert_eq!(&got, expected, "{name}");
            if let Err(err) = expected {
                assert!(matches!(err.status(), 400 | 505), "{name}");
            }
        }
    }

    #[test]
    fn request_line_limit_fires_before_the_line_completes() {
        let mut buf = b"GET /".to_vec();
        buf.resize(9000, b'a');
        // 9000 bytes and no CRLF yet with a limit of 8192: 414 now, not later.
        assert_eq!(
            req(&buf),
            Err(HeadError::RequestLineTooLong { limit: 8192 })
        );
        assert_eq!(req(&buf).unwrap_err().status(), 414);
        // Exactly at the window: still waiting for the CRLF.
        assert_eq!(req(&buf[..8193]), Ok(None));
        assert_eq!(
            req(&buf[..8194]),
            Err(HeadError::RequestLineTooLong { limit: 8192 })
        );
    }

    #[test]
    fn request_line_limit_boundary() {
        let limits = HeadLimits {
            max_request_line: 20,
            ..LIMITS
        };
        // "GET /aaaaaaaaaa HTTP/1.1" is 24 bytes.
        let long = b"GET /aaaaaaaaaaa HTTP/1.1\r\n\r\n";
        assert_eq!(
            parse_request(long, &limits),
            Err(HeadError::RequestLineTooLong { limit: 20 })
        );
        let fits = b"GET /aaaa HTTP/1.1\r\n\r\n"; // 18 bytes
        assert!(parse_request(fits, &limits).unwrap().is_some());
        let exact = b"GET /aaaaaa HTTP/1.1\r\n\r\n"; // 20 bytes
        assert!(parse_request(exact, &limits).unwrap().is_some());
        let one_over = b"GET /aaaaaaa HTTP/1.1\r\n\r\n"; // 21 bytes
        assert_eq!(
            parse_request(one_over, &limits),
            Err(HeadError::RequestLineTooLong { limit: 20 })
        );
        // Empty lines before the request line count against the limit.
        let padded = b"\r\n\r\nGET /aaaa HTTP/1.1\r\n\r\n"; // 4 + 18
        assert_eq!(
            parse_request(padded, &limits),
            Err(HeadError::RequestLineTooLong { limit: 20 })
        );
        let endless_crlf = b"\r\n".repeat(50);
        assert_eq!(
            parse_request(&endless_crlf, &limits),
            Err(HeadError::RequestLineTooLong { limit: 20 })
        );
    }

    #[test]
    fn malformed_line_beyond_the_limit_is_still_a_limit_error() {
        let limits = HeadLimits {
            max_request_line: 20,
            ..LIMITS
        };
        // The bad byte is past the window: the outcome must not depend on whether it
        // had arrived yet.
        let mut buf = b"GET /".to_vec();
        buf.resize(40, b'a');
        buf.extend_from_slice(b"\x01 HTTP/1.1\r\n\r\n");
        for cut in 22..=buf.len() {
            assert_eq!(
                parse_request(&buf[..cut], &limits),
                Err(HeadError::RequestLineTooLong { limit: 20 }),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn header_block_limit_on_partial_input() {
        let limits = HeadLimits {
            max_header_bytes: 64,
            ..LIMITS
        };
        let mut buf = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        buf.resize(16 + 63, b'v');
        assert_eq!(parse_request(&buf, &limits), Ok(None));
        buf.push(b'v'); // 64 bytes of header block, head not complete
        assert_eq!(
            parse_request(&buf, &limits),
            Err(HeadError::HeaderTooLarge { limit: 64 })
        );
        assert_eq!(parse_request(&buf, &limits).unwrap_err().status(), 431);
    }

    #[test]
    fn header_block_limit_boundary_counts_the_final_crlf() {
        let limits = HeadLimits {
            max_header_bytes: 12,
            ..LIMITS
        };
        // Header block "X: 1234567\r\n\r\n" would be 14; "X: 12345\r\n\r\n" is 12.
        assert!(
            parse_request(b"GET / HTTP/1.1\r\nX: 12345\r\n\r\n", &limits)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nX: 123456\r\n\r\n", &limits),
            Err(HeadError::HeaderTooLarge { limit: 12 })
        );
        // Pipelined bytes after the head do not count.
        let mut pipelined = b"GET / HTTP/1.1\r\nX: 12345\r\n\r\n".to_vec();
        pipelined.extend_from_slice(&[b'z'; 100]);
        assert_eq!(
            parse_request(&pipelined, &limits)
                .unwrap()
                .unwrap()
                .head_len,
            28
        );
    }

    #[test]
    fn header_count_limit() {
        let limits = HeadLimits {
            max_headers: 3,
            ..LIMITS
        };
        let three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_request(three, &limits)
                .unwrap()
                .unwrap()
                .headers
                .len(),
            3
        );
        let four = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(
            parse_request(four, &limits),
            Err(HeadError::TooManyHeaders { limit: 3 })
        );
        // Refused as soon as the fourth line is complete, before the head ends.
        assert_eq!(
            parse_request(&four[..four.len() - 2], &limits),
            Err(HeadError::TooManyHeaders { limit: 3 })
        );
        assert_eq!(parse_request(&four[..four.len() - 4], &limits), Ok(None));
        let zero = HeadLimits {
            max_headers: 0,
            ..LIMITS
        };
        assert!(parse_request(b"GET / HTTP/1.1\r\n\r\n", &zero)
            .unwrap()
            .is_some());
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nA: 1\r\n\r\n", &zero),
            Err(HeadError::TooManyHeaders { limit: 0 })
        );
    }

    struct ValidResponse {
        name: &'static str,
        input: &'static [u8],
        version: Version,
        status: u16,
        reason: &'static [u8],
        headers: &'static [(&'static str, &'static [u8])],
        head_len: usize,
    }

    const VALID_RESPONSES: &[ValidResponse] = &[
        ValidResponse {
            name: "ok with body",
            input: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            version: Version::Http11,
            status: 200,
            reason: b"OK",
            headers: &[("Content-Length", b"2")],
            head_len: 38,
        },
        ValidResponse {
            name: "no reason, no SP",
            input: b"HTTP/1.1 204\r\n\r\n",
            version: Version::Http11,
            status: 204,
            reason: b"",
            headers: &[],
            head_len: 16,
        },
        ValidResponse {
            name: "empty reason",
            input: b"HTTP/1.0 404 \r\nServer: x\r\n\r\n",
            version: Version::Http10,
            status: 404,
            reason: b"",
            headers: &[("Server", b"x")],
            head_len: 28,
        },
        ValidResponse {
            name: "reason with spaces and obs-text kept as bytes",
            input: b"HTTP/1.1 503 Service Unavailable \xe2\x80\x94 later\r\n\r\n",
            version: Version::Http11,
            status: 503,
            reason: b"Service Unavailable \xe2\x80\x94 later",
            headers: &[],
            head_len: 46,
        },
        ValidResponse {
            name: "interim response",
            input: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            version: Version::Http11,
            status: 100,
            reason: b"Continue",
            headers: &[],
            head_len: 25,
        },
    ];

    #[test]
    fn valid_responses() {
        for case in VALID_RESPONSES {
            let head = res(case.input)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name))
                .unwrap_or_else(|| panic!("{}: incomplete", case.name));
            assert_eq!(head.version, case.version, "{}", case.name);
            assert_eq!(head.status, case.status, "{}", case.name);
            assert_eq!(head.reason, case.reason, "{}", case.name);
            assert_eq!(head.head_len, case.head_len, "{}", case.name);
            let got: Vec<(&str, &[u8])> = head.headers.iter().map(|h| (h.name, h.value)).collect();
            assert_eq!(got, case.headers, "{}", case.name);
            for cut in 0..case.head_len {
                assert_eq!(res(&case.input[..cut]), Ok(None), "{} cut {cut}", case.name);
            }
        }
    }

    #[rustfmt::skip]
    const BAD_RESPONSES: &[(&str, &[u8], HeadError)] = &[
        ("status 2 digits", b"HTTP/1.1 20 OK\r\n\r\n", HeadError::Malformed("invalid status line")),
        ("status 4 digits", b"HTTP/1.1 2000 OK\r\n\r\n", HeadError::Malformed("invalid status line")),
        ("status below 100", b"HTTP/1.1 099 Odd\r\n\r\n", HeadError::Malformed("status code out of range")),
        ("status above 599", b"HTTP/1.1 600 Odd\r\n\r\n", HeadError::Malformed("status code out of range")),
        ("http/2 version", b"HTTP/2.0 200 OK\r\n\r\n", HeadError::Malformed("invalid HTTP version")),
        ("icy", b"ICY 200 OK\r\n\r\n", HeadError::Malformed("invalid HTTP version")),
        ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", HeadError::Malformed("invalid header name")),
        ("space before colon", b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", HeadError::Malformed("invalid header name")),
        ("NUL in value", b"HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n", HeadError::Malformed("invalid header value")),
        ("CTL in reason", b"HTTP/1.1 200 O\x01K\r\n\r\n", HeadError::Malformed("invalid status line")),
        ("bare CR status line", b"HTTP/1.1 200 OK\rX: a\r\n\r\n", HeadError::Malformed("invalid status line")),
        ("bare CR ending head", b"HTTP/1.1 200 OK\r\nX: a\r\n\rZ", HeadError::Malformed("invalid line ending")),
    ];

    #[test]
    fn bad_responses() {
        for (name, input, expected) in BAD_RESPONSES {
            assert_eq!(res(input).map(|_| ()), Err(*expected), "{name}");
        }
    }

    #[test]
    fn response_limits() {
        let limits = HeadLimits {
            max_request_line: 16,
            max_header_bytes: 20,
            max_headers: 2,
        };
        assert_eq!(
            parse_response(b"HTTP/1.1 200 Very Long Reason Phrase", &limits),
            Err(HeadError::RequestLineTooLong { limit: 16 })
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nX: aaaaaaaaaaaaaaaaaaaaaaaa", &limits),
            Err(HeadError::HeaderTooLarge { limit: 20 })
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n", &limits),
            Err(HeadError::TooManyHeaders { limit: 2 })
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n", &limits)
            .unwrap()
            .is_some());
    }
}
