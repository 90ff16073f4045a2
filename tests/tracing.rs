//! W3C trace context over loopback (BEHAVIOR.md "Proxying", `[tracing] propagate`): an
//! incoming `traceparent` is continued with a new span id, one is started when absent or
//! invalid, `tracestate` passes through, and `propagate = false` leaves the client's header alone.

mod support;

use support::*;

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn config(up: &Upstream, tracing: &str) -> String {
    format!(
        "{tracing}\n[upstreams.app]\nendpoints = [\"{}\"]\n\n[routes.app]\npaths = [\"/\"]\nupstream = \"app\"\n",
        up.url()
    )
}

/// (version, trace id, span id, flags) of a traceparent value.
fn fields(v: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {v:?}");
    assert_eq!(
        (
            parts[0].len(),
            parts[1].len(),
            parts[2].len(),
            parts[3].len()
        ),
        (2, 32, 16, 2),
        "traceparent {v:?}"
    );
    assert!(
        v.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "lower-case hex: {v:?}"
    );
    (
        parts[0].into(),
        parts[1].into(),
        parts[2].into(),
        parts[3].into(),
    )
}

#[test]
fn incoming_traceparent_is_continued_with_a_new_span_id() {
    let up = Upstream::echo();
    let gw = Gateway::start(&config(&up, "[tracing]\npropagate = true\n"));
    let r = send_request(
        gw.addr(),
        &Req::get("/x")
            .header("traceparent", INCOMING)
            .header("tracestate", "congo=t61rcWkgMzE"),
    );
    assert_eq!(r.status, 200);
    let seen = up.last_request();
    assert_eq!(
        seen.header_all("traceparent").len(),
        1,
        "{:?}",
        seen.headers
    );
    let (version, trace, span, flags) = fields(seen.header("traceparent").unwrap());
    assert_eq!(version, "00");
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(span, "00f067aa0ba902b7", "the gateway's own span id");
    assert_ne!(span, "0000000000000000");
    assert_eq!(flags, "01");
    assert_eq!(seen.header("tracestate"), Some("congo=t61rcWkgMzE"));
}

#[test]
fn a_trace_is_started_when_none_or_an_invalid_one_arrives() {
    let up = Upstream::echo();
    // No [tracing] section: propagation is on by default.
    let gw = Gateway::start(&config(&up, ""));
    let mut traces = Vec::new();
    for incoming in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("garbage"),
    ] {
        let mut req = Req::get("/x");
        if let Some(v) = incoming {
            req = req.header("traceparent", v);
        }
        assert_eq!(send_request(gw.addr(), &req).status, 200);
        let seen = up.last_request();
        let (version, trace, span, _) = fields(
            seen.header("traceparent")
                .expect("traceparent sent upstream"),
        );
        assert_eq!(version, "00");
        assert_ne!(trace, "00000000000000000000000000000000");
        assert_ne!(span, "0000000000000000");
        traces.push(trace);
    }
    traces.sort();
    traces.dedup();
    assert_eq!(
        traces.len(),
        3,
        "every new trace has its own id: {traces:?}"
    );
}

#[test]
fn propagate_false_passes_the_client_header_through_untouched() {
    let up = Upstream::echo();
    let gw = Gateway::start(&config(&up, "[tracing]\npropagate = false\n"));
    assert_eq!(
        send_request(gw.addr(), &Req::get("/x").header("traceparent", INCOMING)).status,
        200
    );
    assert_eq!(up.last_request().header("traceparent"), Some(INCOMING));
    assert_eq!(send_request(gw.addr(), &Req::get("/y")).status, 200);
    assert_eq!(up.last_request().header("traceparent"), None);
}
