//! W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/> §3.2): continue the
//! caller's trace with a new span id, or start a trace when there is none or it is invalid.
//!
//! Owns parsing and formatting of `traceparent`; `tracestate` is an ordinary end-to-end header
//! and passes through untouched. The gateway is one hop: the span id it sends upstream is its
//! own, so the upstream's spans become children of the gateway's.

/// A trace context as sent upstream, in its lower-case hex form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceContext {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    flags: [u8; 2],
    /// The caller's span id, when continued (for the exported span's parent).
    parent: Option<[u8; 16]>,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex_into(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

impl TraceContext {
    /// Continues `incoming` (the value of the request's only `traceparent`) with a new span id,
    /// or starts a new sampled trace when it is absent or invalid. `rand` supplies ids.
    pub fn continue_or_start(
        incoming: Option<&[u8]>,
        mut rand: impl FnMut() -> u64,
    ) -> TraceContext {
        let mut span_id = [0u8; 16];
        // A span id of all zeros is invalid (§3.2.2.4); a zero draw is vanishingly rare.
        hex_into(&mut span_id, rand().max(1));
        if let Some((trace_id, parent, flags)) = incoming.and_then(parse) {
            return TraceContext {
                trace_id,
                span_id,
                flags,
                parent: Some(parent),
            };
        }
        let mut trace_id = [0u8; 32];
        hex_into(&mut trace_id[..16], rand());
        hex_into(&mut trace_id[16..], rand().max(1));
        TraceContext {
            trace_id,
            span_id,
            flags: *b"01",
            parent: None,
        }
    }

    /// A child span of this one (an aggregate's call): the same trace and flags, a new span
    /// id drawn from `rand`, and this span as its parent.
    pub fn child(&self, rand: u64) -> TraceContext {
        let mut span_id = [0u8; 16];
        hex_into(&mut span_id, rand.max(1));
        TraceContext {
            trace_id: self.trace_id,
            span_id,
            flags: self.flags,
            parent: Some(self.span_id),
        }
    }

    pub fn trace_id_bytes(&self) -> [u8; 16] {
        unhex(&self.trace_id)
    }

    pub fn span_id_bytes(&self) -> [u8; 8] {
        unhex(&self.span_id)
    }

    /// The caller's span id when this context continued an incoming one.
    pub fn parent_span_id_bytes(&self) -> Option<[u8; 8]> {
        self.parent.as_ref().map(|p| unhex(p))
    }

    pub fn trace_id(&self) -> &str {
        // Only lower-case hex is ever stored.
        std::str::from_utf8(&self.trace_id).unwrap_or("")
    }

    /// Writes the `traceparent` header line.
    pub fn write_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"traceparent: 00-");
        out.extend_from_slice(&self.trace_id);
        out.push(b'-');
        out.extend_from_slice(&self.span_id);
        out.push(b'-');
        out.extend_from_slice(&self.flags);
        out.extend_from_slice(b"\r\n");
    }
}

/// Bytes of lower-case hex (only such hex is ever stored).
fn unhex<const N: usize>(hex: &[u8]) -> [u8; N] {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        _ => c.wrapping_sub(b'a') + 10,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(hex[2 * i]) << 4) | nibble(hex[2 * i + 1]);
    }
    out
}

/// (trace id, parent span id, flags) of a valid `traceparent`. Versions above 00 are read as 00 when their
/// first four fields parse (§3.2.4: forward compatibility); version ff is invalid.
fn parse(v: &[u8]) -> Option<([u8; 32], [u8; 16], [u8; 2])> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    if !is_lower_hex(version) || version == b"ff" || (version == b"00" && v.len() != 55) {
        return None;
    }
    if !is_lower_hex(trace) || !is_lower_hex(parent) || !is_lower_hex(flags) {
        return None;
    }
    if trace.iter().all(|&c| c == b'0') || parent.iter().all(|&c| c == b'0') {
        return None;
    }
    Some((
        trace.try_into().ok()?,
        parent.try_into().ok()?,
        flags.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0x1234_5678_9abc_def0u64;
        move || {
            n = n.wrapping_add(1);
            n
        }
    }

    fn header(ctx: &TraceContext) -> String {
        let mut out = Vec::new();
        ctx.write_header(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn valid_traceparent_is_continued_with_a_new_span() {
        let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::continue_or_start(Some(incoming), counter());
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let h = header(&ctx);
        assert!(
            h.starts_with("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{h}"
        );
        assert!(!h.contains("00f067aa0ba902b7"), "span id must be new: {h}");
        assert!(h.ends_with("-01\r\n"), "{h}");
        assert_eq!(h.len(), "traceparent: ".len() + 55 + 2);
    }

    #[test]
    fn flags_are_kept() {
        let ctx = TraceContext::continue_or_start(
            Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            counter(),
        );
        assert!(header(&ctx).ends_with("-00\r\n"));
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        let bad: &[&[u8]] = &[
            b"",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ];
        for v in bad {
            let ctx = TraceContext::continue_or_start(Some(v), counter());
            assert_ne!(
                ctx.trace_id(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{}",
                String::from_utf8_lossy(v)
            );
            assert!(header(&ctx).ends_with("-01\r\n"));
        }
    }

    #[test]
    fn future_versions_are_read_as_version_00() {
        let ctx = TraceContext::continue_or_start(
            Some(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"),
            counter(),
        );
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(header(&ctx).starts_with("traceparent: 00-"));
    }

    #[test]
    fn new_traces_have_valid_ids() {
        let ctx = TraceContext::continue_or_start(None, || 0);
        let h = header(&ctx);
        let v = h.trim_start_matches("traceparent: ").trim_end();
        assert!(parse(v.as_bytes()).is_some(), "{v}");
    }
}
