//! W3C trace context over loopback (BEHAVIOR.md "Proxying", `[tracing] propagate`): an
//! incoming `traceparent` is continued with a new span id, one is started when absent or
//! invalid, `tracestate` passes through, and `propagate = false` leaves the client's header alone.
//! With `otlp_endpoint`, each request's server span goes to an OTLP/HTTP JSON collector (a fake
//! one here): its ids match the trace context sent upstream, a dead collector costs counted drops
//! and no latency, and SIGTERM exports what is pending.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

// ---- OTLP span export (`[tracing] otlp_endpoint`) ----

/// A fake OTLP/HTTP collector: answers every POST with `200 {}` on kept-alive connections and
/// keeps each request's path, Content-Type and JSON body (recorded before answering, so an
/// export the gateway saw acknowledged is already here).
struct Collector {
    addr: std::net::SocketAddr,
    exports: Arc<Mutex<Vec<Export>>>,
    stop: Arc<AtomicBool>,
}

/// One POST the collector received.
#[derive(Clone, Debug)]
struct Export {
    target: String,
    content_type: Option<String>,
    body: Value,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("collector bind");
        let addr = listener.local_addr().expect("collector addr");
        let exports = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (into, stopped) = (exports.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let into = into.clone();
                std::thread::spawn(move || Collector::serve(conn, &into));
            }
        });
        Collector {
            addr,
            exports,
            stop,
        }
    }

    /// Serves one connection: POSTs framed by Content-Length, until the peer closes.
    fn serve(conn: TcpStream, into: &Mutex<Vec<Export>>) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
        let mut w = conn.try_clone().expect("clone collector conn");
        let mut r = BufReader::new(conn);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let target = line.split(' ').nth(1).unwrap_or_default().to_string();
            let (mut length, mut content_type) = (0usize, None);
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" || line == "\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "content-type" => content_type = Some(value.trim().to_string()),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let body = serde_json::from_slice(&body).unwrap_or_else(|e| {
                Value::String(format!(
                    "not JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                ))
            });
            into.lock().unwrap().push(Export {
                target,
                content_type,
                body,
            });
            if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .is_err()
            {
                return;
            }
        }
    }

    /// `http://127.0.0.1:PORT/v1/traces`.
    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn exports(&self) -> Vec<Export> {
        self.exports.lock().unwrap().clone()
    }

    /// Every span received so far, in arrival order.
    fn spans(&self) -> Vec<Value> {
        self.exports()
            .iter()
            .flat_map(|e| {
                let resource_spans = e.body["resourceSpans"].as_array().cloned();
                resource_spans.unwrap_or_default()
            })
            .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The span with this trace id, waiting up to `within` for it to arrive.
    fn span_of_trace(&self, trace_id: &str, within: Duration) -> Value {
        let mut found = None;
        wait_until(within, || {
            found = self.spans().into_iter().find(|s| s["traceId"] == trace_id);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no span with traceId {trace_id} within {within:?}; received: {:?}",
                self.exports()
            )
        })
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// How long a span may take to reach the collector: the exporter lingers up to 1 s to fill a
/// batch, after the worker's housekeeping tick hands it over.
const EXPORT_WITHIN: Duration = Duration::from_secs(4);

/// A span attribute's value object (`{"stringValue": ..}` or `{"intValue": ..}`).
fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map(|kv| &kv["value"])
        .unwrap_or_else(|| panic!("span has no attribute {key}: {span}"))
}

/// Two routes: `/x` to an echoing upstream (`app`), `/dead` to a dead one (`gone`, no retries).
fn export_config(up: &Upstream, collector: &str) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{collector}\"\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n\n\
         [upstreams.gone]\nendpoints = [\"{}\"]\nretries = 0\n\n\
         [routes.app]\npaths = [\"/x\"]\nupstream = \"app\"\n\n\
         [routes.dead]\npaths = [\"/dead\"]\nupstream = \"gone\"\n",
        up.url(),
        dead_url()
    )
}

/// A continued trace is exported as the gateway's server span: same trace id, the client's span
/// as parent, the span id sent upstream, kind SERVER, `GET <route>`, the HTTP attributes.
#[test]
fn otlp_span_continues_the_incoming_trace_with_the_span_id_sent_upstream() {
    let up = Upstream::echo();
    let collector = Collector::start();
    let gw = Gateway::start(&export_config(&up, &collector.endpoint()));
    let r = send_request(
        gw.addr(),
        &Req::get("/x?q=1").header("traceparent", INCOMING),
    );
    assert_eq!(r.status, 200);
    let (_, trace, sent_span, _) = fields(up.last_request().header("traceparent").unwrap());
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");

    let span = collector.span_of_trace(&trace, EXPORT_WITHIN);
    assert_eq!(span["spanId"], sent_span.as_str(), "{span}");
    assert_eq!(span["parentSpanId"], "00f067aa0ba902b7", "{span}");
    assert_eq!(span["kind"], 2, "{span}");
    assert_eq!(span["name"], "GET app", "{span}");
    assert_eq!(attr(&span, "http.request.method")["stringValue"], "GET");
    assert_eq!(attr(&span, "url.path")["stringValue"], "/x");
    assert_eq!(attr(&span, "http.route")["stringValue"], "app");
    assert_eq!(attr(&span, "http.response.status_code")["intValue"], "200");
    assert!(
        span.get("status").is_none_or(|s| s["code"] != 2),
        "a 200 is not an error: {span}"
    );
    let nanos = |k: &str| -> u64 {
        span[k]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} is not a decimal string: {span}"))
    };
    let (start, end) = (nanos("startTimeUnixNano"), nanos("endTimeUnixNano"));
    assert!(start <= end, "{span}");
    let now_nanos = now_millis() as u64 * 1_000_000;
    assert!(
        now_nanos.abs_diff(start) < 60_000_000_000,
        "start time is not now: {span}"
    );

    let export = &collector.exports()[0];
    assert_eq!(export.target, "/v1/traces");
    assert!(
        export
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{export:?}"
    );
}

/// A request that ends in an error the gateway produces (502, dead upstream) is exported with
/// the error status code and `status.code = 2` (ERROR).
#[test]
fn otlp_span_of_a_502_has_error_status() {
    let up = Upstream::echo();
    let collector = Collector::start();
    let gw = Gateway::start(&export_config(&up, &collector.endpoint()));
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = send_request(
        gw.addr(),
        &Req::get("/dead").header("traceparent", incoming),
    );
    assert_error(&r, 502);

    let span = collector.span_of_trace("0af7651916cd43dd8448eb211c80319c", EXPORT_WITHIN);
    assert_eq!(span["parentSpanId"], "b7ad6b7169203331", "{span}");
    assert_eq!(span["name"], "GET dead", "{span}");
    assert_eq!(attr(&span, "http.route")["stringValue"], "dead");
    assert_eq!(attr(&span, "url.path")["stringValue"], "/dead");
    assert_eq!(attr(&span, "http.response.status_code")["intValue"], "502");
    assert_eq!(span["status"]["code"], 2, "{span}");
}

/// A request without `traceparent` is exported as the root span of the new trace the gateway
/// started (the one it sent upstream): no parent.
#[test]
fn otlp_span_of_a_new_trace_has_no_parent() {
    let up = Upstream::echo();
    let collector = Collector::start();
    let gw = Gateway::start(&export_config(&up, &collector.endpoint()));
    assert_eq!(send_request(gw.addr(), &Req::get("/x")).status, 200);
    let (_, trace, sent_span, _) = fields(up.last_request().header("traceparent").unwrap());

    let span = collector.span_of_trace(&trace, EXPORT_WITHIN);
    assert_eq!(span["spanId"], sent_span.as_str(), "{span}");
    assert!(
        span.get("parentSpanId")
            .is_none_or(|p| p.as_str() == Some("")),
        "a root span has no parent: {span}"
    );
    assert_eq!(span["name"], "GET app", "{span}");
}

/// A collector that is down costs no request latency; the spans it could not take are counted
/// in `dispatch_tracing_spans_dropped_total`, each once.
#[test]
fn otlp_collector_down_costs_counted_drops_not_latency() {
    let up = Upstream::echo();
    let down = format!("http://{}/v1/traces", free_addr());
    let gw = Gateway::start(&export_config(&up, &down));
    let mut c = Client::connect(gw.addr());
    let t = Instant::now();
    for _ in 0..200 {
        assert_eq!(c.request(&Req::get("/x")).status, 200);
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "200 requests took {took:?}"
    );

    let dropped = || {
        let text = get(gw.admin_addr(), "/metrics").text();
        metric(&text, "dispatch_tracing_spans_dropped_total").unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(5), || dropped() >= 200.0),
        "dispatch_tracing_spans_dropped_total is {} 5 s after 200 spans to a dead collector",
        dropped()
    );
    assert_eq!(dropped(), 200.0, "each dropped span is counted once");
    // Still prompt after the failed exports.
    let t = Instant::now();
    assert_eq!(c.request(&Req::get("/x")).status, 200);
    assert!(
        // Under the exporter's 2 s attempt limit, with room for a loaded CI runner.
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

/// SIGTERM exports the spans still batched or lingering before the process exits.
#[test]
fn otlp_spans_pending_at_sigterm_are_exported_before_exit() {
    let up = Upstream::echo();
    let collector = Collector::start();
    let mut gw = Gateway::start(&export_config(&up, &collector.endpoint()));
    let mut traces = Vec::new();
    for _ in 0..3 {
        assert_eq!(send_request(gw.addr(), &Req::get("/x")).status, 200);
        let (_, trace, _, _) = fields(up.last_request().header("traceparent").unwrap());
        traces.push(trace);
    }
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("still running 5 s after SIGTERM");
    assert!(status.success(), "exit status {status}");
    // The collector records an export before answering it, and the exporter waits for the
    // answer: what was exported is here now.
    let got: Vec<String> = collector
        .spans()
        .iter()
        .filter_map(|s| s["traceId"].as_str().map(String::from))
        .collect();
    for trace in &traces {
        assert!(
            got.contains(trace),
            "span of trace {trace} not exported before exit; got {got:?}"
        );
    }
}

/// `otlp_endpoint` must be plain http (there is no TLS client): https is a config error at the
/// key's value.
#[test]
fn otlp_endpoint_over_https_is_a_config_error() {
    let toml = format!(
        "[server]\nlisten = [\"{}\"]\nworkers = 1\n\n[admin]\nlisten = \"{}\"\n\n\
         [tracing]\notlp_endpoint = \"https://127.0.0.1:4318/v1/traces\"\n\n\
         [upstreams.app]\nendpoints = [\"http://127.0.0.1:9001\"]\n\n\
         [routes.app]\npaths = [\"/\"]\nupstream = \"app\"\n",
        free_addr(),
        free_addr()
    );
    let out = check(&toml);
    assert_eq!(out.code, Some(1), "output:\n{}", out.all());
    let line = toml
        .lines()
        .position(|l| l.starts_with("otlp_endpoint"))
        .unwrap()
        + 1;
    let want = format!(
        "{}:{line}:17: tracing.otlp_endpoint:",
        out.config_path.display()
    );
    let all = out.all();
    let err = all
        .lines()
        .find(|l| l.contains(&want))
        .unwrap_or_else(|| panic!("no `{want}` error; output:\n{all}"));
    assert!(err.contains("https"), "{err}");
}

/// A collector whose connects hang does not hold up shutdown: SIGTERM still exits 0 promptly,
/// giving up the spans it cannot send.
#[test]
fn otlp_hanging_collector_does_not_hold_up_shutdown() {
    let up = Upstream::echo();
    let hole = Blackhole::new();
    let mut gw = Gateway::start(&export_config(&up, &format!("{}/v1/traces", hole.url())));
    let mut c = Client::connect(gw.addr());
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.request(&Req::get("/x")).status, 200);
    }
    assert!(
        // Under the exporter's 2 s attempt limit, with room for a loaded CI runner.
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    drop(c);
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(3))
        .expect("still running 3 s after SIGTERM with a hanging collector");
    assert!(status.success(), "exit status {status}");
}

/// Requests the gateway refused before routing (a malformed head, a head that never completed)
/// or answered itself (404, 413) went unrecorded: no span, and framing errors and 408s not even
/// in the access log or the request metrics. Every answered request now passes the logging
/// phase once: one access-log line and one span each.
#[test]
fn every_answered_request_is_logged_once_with_a_span() {
    let up = Upstream::echo();
    let collector = Collector::start();
    let gw = Gateway::start(&format!(
        "[server.limits]\nheader_timeout = \"300ms\"\nmax_body = \"10B\"\n\n\
         [log]\naccess = \"json\"\n\n{}",
        export_config(&up, &collector.endpoint())
    ));
    // 404: no route.
    let r = send_request(
        gw.addr(),
        &Req::get("/nowhere").header("X-Request-Id", "lp-404"),
    );
    assert_eq!(r.status, 404);
    // 413: routed, refused before the upstream.
    let r = send_request(
        gw.addr(),
        &Req::post("/x", b"far more than ten bytes").header("X-Request-Id", "lp-413"),
    );
    assert_eq!(r.status, 413);
    // 400: a malformed head (obs-fold).
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n");
    assert_eq!(c.read_response().status, 400);
    // 408: a head that never completes.
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n");
    assert_eq!(c.read_response().status, 408);

    let lines = || -> Vec<Value> {
        gw.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.is_object())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(3), || lines().len() >= 4),
        "expected 4 access-log lines, stdout:\n{}",
        gw.stdout()
    );
    let lines = lines();
    let mut statuses: Vec<u64> = lines.iter().filter_map(|l| l["status"].as_u64()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [400, 404, 408, 413], "{lines:?}");
    let line_413 = lines.iter().find(|l| l["status"] == 413).unwrap();
    assert_eq!(line_413["request_id"], "lp-413");
    assert_eq!(line_413["route"], "app", "{line_413}");

    let mut codes = Vec::new();
    wait_until(EXPORT_WITHIN, || {
        codes = collector
            .spans()
            .iter()
            .map(|s| attr(s, "http.response.status_code")["intValue"].clone())
            .map(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(0)
            })
            .collect();
        codes.len() >= 4
    });
    codes.sort_unstable();
    assert_eq!(codes, [400, 404, 408, 413], "one span per answered request");
}
