//! Phase 1: who the request is, before anything can fail, so that every later answer carries
//! it: the request id (`X-Request-Id`, the client's when it is sane, else a new random one)
//! and, when `tracing.propagate` is on, the W3C trace context (continued from `traceparent`,
//! or started). Every answered request gets a span, those the gateway answers itself
//! included.
//!
//! Never answers. Its random draws come from the caller (the worker's generator), in a fixed
//! order: the id's two words first, then the trace context's.

use crate::http::Header;
use crate::pipeline::ctx::RequestId;
use crate::pipeline::trace::TraceContext;

/// This phase's part of the per-request state.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub id: RequestId,
    /// The trace context sent upstream (tracing.propagate).
    pub trace: Option<TraceContext>,
}

#[inline]
pub fn run(headers: &[Header<'_>], propagate: bool, mut rand: impl FnMut() -> u64) -> Identity {
    let id = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
        .and_then(|h| RequestId::from_client(h.value))
        .unwrap_or_else(|| RequestId::generate([rand(), rand()]));
    // An ambiguous incoming context (two traceparent fields) starts a new trace (W3C trace
    // context §3.2).
    let trace = propagate.then(|| {
        let incoming = super::single(headers, "traceparent").ok().flatten();
        TraceContext::continue_or_start(incoming, &mut rand)
    });
    Identity { id, trace }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::phase::testing::head;

    /// A draw sequence 1, 2, 3, ...
    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_sane_client_id_is_kept_and_draws_nothing() {
        let h = head(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n");
        let who = run(&h.headers, false, || panic!("no draw for a kept id"));
        assert_eq!(who.id.as_str(), "abc-123");
        assert!(who.trace.is_none());
    }

    #[test]
    fn an_insane_client_id_is_replaced_by_a_generated_one() {
        let h = head(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: quo\"te\r\n\r\n");
        let who = run(&h.headers, false, counter());
        assert_eq!(who.id.as_str(), "00000000000000010000000000000002");
        let long = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: {}\r\n\r\n",
            "a".repeat(65)
        );
        let h = head(long.as_bytes());
        assert_eq!(run(&h.headers, false, counter()).id.as_str().len(), 32);
    }

    #[test]
    fn without_a_client_id_one_is_generated_from_the_draws() {
        let h = head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let who = run(&h.headers, false, || 0xfedc_ba98_7654_3210);
        assert_eq!(who.id.as_str(), "fedcba9876543210fedcba9876543210");
    }

    #[test]
    fn propagation_continues_an_incoming_traceparent() {
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\ntraceparent: {PARENT}\r\n\r\n");
        let h = head(raw.as_bytes());
        let trace = run(&h.headers, true, counter())
            .trace
            .expect("a trace context");
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            trace.parent_span_id_bytes(),
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        // The id took draws 1 and 2; the new span id is draw 3.
        assert_eq!(trace.span_id_bytes(), 3u64.to_be_bytes());
    }

    #[test]
    fn two_traceparent_fields_start_a_new_trace() {
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: a\r\ntraceparent: {PARENT}\r\ntraceparent: {PARENT}\r\n\r\n"
        );
        let h = head(raw.as_bytes());
        let trace = run(&h.headers, true, counter())
            .trace
            .expect("a trace context");
        assert_ne!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent_span_id_bytes(), None);
    }
}
