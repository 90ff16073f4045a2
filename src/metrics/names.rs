//! Metric names, help texts and label keys: the contract of BEHAVIOR.md "Metrics".
//!
//! Owns every string that appears in the exposition: family names (`dispatch_*` and the
//! conventional `process_*`), their HELP text and TYPE, the label keys and the fixed label
//! values that do not come from config (`<none>`, outcome, side, cache result).
//!
//! The one thing to know: these names are a public contract that dashboards and alerts are
//! written against. Renaming one is a breaking change; add a family, never rename one.

/// The Prometheus TYPE of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic; only ever goes up (across reloads too).
    Counter,
    /// A value that can go up and down.
    Gauge,
    /// `_bucket{le}` / `_sum` / `_count` series.
    Histogram,
}

impl Kind {
    /// The word used on the `# TYPE` line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, help text and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

const fn family(name: &'static str, help: &'static str, kind: Kind) -> Family {
    Family { name, help, kind }
}

// --- request path (BEHAVIOR.md "Metrics") -------------------------------------------------

/// `dispatch_requests_total{route,method,status}`
pub const REQUESTS_TOTAL: Family = family(
    "dispatch_requests_total",
    "Requests answered, by route, method and response status.",
    Kind::Counter,
);
/// `dispatch_request_duration_seconds{route}`: from the request head parsed to the response
/// head written.
pub const REQUEST_DURATION: Family = family(
    "dispatch_request_duration_seconds",
    "Time from request head parsed to response complete, by route.",
    Kind::Histogram,
);
/// `dispatch_upstream_requests_total{upstream,outcome}`: one per attempt (a retry counts again).
pub const UPSTREAM_REQUESTS_TOTAL: Family = family(
    "dispatch_upstream_requests_total",
    "Upstream request attempts, by upstream and outcome.",
    Kind::Counter,
);
/// `dispatch_upstream_duration_seconds{upstream}`: one attempt, connect included.
pub const UPSTREAM_DURATION: Family = family(
    "dispatch_upstream_duration_seconds",
    "Duration of one upstream attempt, connect included, by upstream.",
    Kind::Histogram,
);
/// `dispatch_breaker_state{upstream}`: 0 closed, 1 half-open, 2 open. Read from the shared
/// breakers at scrape time (see `Writer::breaker_states`), not kept per worker.
pub const BREAKER_STATE: Family = family(
    "dispatch_breaker_state",
    "Circuit breaker state by upstream: 0 closed, 1 half-open, 2 open.",
    Kind::Gauge,
);
/// `dispatch_ratelimit_rejected_total{policy}`
pub const RATELIMIT_REJECTED_TOTAL: Family = family(
    "dispatch_ratelimit_rejected_total",
    "Requests rejected with 429 by a rate limit policy.",
    Kind::Counter,
);
/// `dispatch_cache_requests_total{rule,result}`
pub const CACHE_REQUESTS_TOTAL: Family = family(
    "dispatch_cache_requests_total",
    "Cache lookups by rule and result (hit, miss, stale, bypass).",
    Kind::Counter,
);
/// `dispatch_cache_entries{worker}`: entries (and variant markers) in each worker's shard.
pub const CACHE_ENTRIES: Family = family(
    "dispatch_cache_entries",
    "Entries held in each worker's cache shard.",
    Kind::Gauge,
);
/// `dispatch_cache_bytes{worker}`: bytes held by each worker's shard (at most
/// `max_bytes_per_worker`).
pub const CACHE_BYTES: Family = family(
    "dispatch_cache_bytes",
    "Bytes held in each worker's cache shard (heads, bodies and bookkeeping).",
    Kind::Gauge,
);
/// `dispatch_connections_active{side}`
pub const CONNECTIONS_ACTIVE: Family = family(
    "dispatch_connections_active",
    "Open connections, client side and upstream side.",
    Kind::Gauge,
);
/// `dispatch_upstream_pool_reused_total{upstream}`
pub const UPSTREAM_POOL_REUSED_TOTAL: Family = family(
    "dispatch_upstream_pool_reused_total",
    "Upstream attempts sent on a pooled keep-alive connection.",
    Kind::Counter,
);
/// `dispatch_upstream_pool_new_total{upstream}`
pub const UPSTREAM_POOL_NEW_TOTAL: Family = family(
    "dispatch_upstream_pool_new_total",
    "Upstream attempts that opened a new connection.",
    Kind::Counter,
);

/// `dispatch_tracing_spans_dropped_total`: spans the OTLP exporter could not deliver (queue
/// full, collector slow or down); not in BEHAVIOR.md's list, which says nothing of export.
pub const TRACING_SPANS_DROPPED_TOTAL: Family = family(
    "dispatch_tracing_spans_dropped_total",
    "Spans dropped by the OTLP exporter instead of blocking (collector slow or down).",
    Kind::Counter,
);

/// `dispatch_access_log_dropped_total`: access-log lines dropped because the writer fell
/// behind (BEHAVIOR.md "Metrics").
pub const ACCESS_LOG_DROPPED_TOTAL: Family = family(
    "dispatch_access_log_dropped_total",
    "Access log lines dropped instead of blocking a worker (the writer fell behind).",
    Kind::Counter,
);

/// `dispatch_connections_rejected_total`: client connections closed at accept because
/// `server.max_connections` were open (BEHAVIOR.md "Metrics").
pub const CONNECTIONS_REJECTED_TOTAL: Family = family(
    "dispatch_connections_rejected_total",
    "Client connections closed at accept because server.max_connections were open.",
    Kind::Counter,
);

/// `dispatch_tls_handshakes_total{result}`: TLS handshakes on client connections, `ok` or
/// `failed` (BEHAVIOR.md "Metrics" and "TLS").
pub const TLS_HANDSHAKES_TOTAL: Family = family(
    "dispatch_tls_handshakes_total",
    "TLS handshakes on client connections, by result (ok, failed).",
    Kind::Counter,
);

// --- process ------------------------------------------------------------------------------

/// `process_resident_memory_bytes`: VmRSS of /proc/self/status.
pub const PROCESS_RESIDENT_MEMORY: Family = family(
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
    Kind::Gauge,
);
/// `process_open_fds`: entries of /proc/self/fd.
pub const PROCESS_OPEN_FDS: Family = family(
    "process_open_fds",
    "Number of open file descriptors.",
    Kind::Gauge,
);
/// `process_start_time_seconds`: Unix time the metrics registry was created (at start-up).
pub const PROCESS_START_TIME: Family = family(
    "process_start_time_seconds",
    "Start time of the process since the Unix epoch in seconds.",
    Kind::Gauge,
);
/// `dispatch_uptime_seconds`
pub const UPTIME: Family = family(
    "dispatch_uptime_seconds",
    "Seconds since the gateway started.",
    Kind::Gauge,
);
/// `dispatch_build_info{version}`: always 1.
pub const BUILD_INFO: Family = family(
    "dispatch_build_info",
    "Build information; the value is always 1.",
    Kind::Gauge,
);

/// Every family, in exposition order.
pub const ALL: [Family; 21] = [
    REQUESTS_TOTAL,
    REQUEST_DURATION,
    UPSTREAM_REQUESTS_TOTAL,
    UPSTREAM_DURATION,
    UPSTREAM_POOL_REUSED_TOTAL,
    UPSTREAM_POOL_NEW_TOTAL,
    RATELIMIT_REJECTED_TOTAL,
    CACHE_REQUESTS_TOTAL,
    CACHE_ENTRIES,
    CACHE_BYTES,
    CONNECTIONS_ACTIVE,
    BREAKER_STATE,
    TRACING_SPANS_DROPPED_TOTAL,
    ACCESS_LOG_DROPPED_TOTAL,
    CONNECTIONS_REJECTED_TOTAL,
    TLS_HANDSHAKES_TOTAL,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_OPEN_FDS,
    PROCESS_START_TIME,
    UPTIME,
    BUILD_INFO,
];

// --- label keys and fixed label values ----------------------------------------------------

pub const LABEL_ROUTE: &str = "route";
pub const LABEL_METHOD: &str = "method";
pub const LABEL_STATUS: &str = "status";
pub const LABEL_UPSTREAM: &str = "upstream";
pub const LABEL_OUTCOME: &str = "outcome";
pub const LABEL_POLICY: &str = "policy";
pub const LABEL_RULE: &str = "rule";
pub const LABEL_RESULT: &str = "result";
pub const LABEL_SIDE: &str = "side";
pub const LABEL_WORKER: &str = "worker";
pub const LABEL_VERSION: &str = "version";
pub const LABEL_LE: &str = "le";

/// The `route` label of a request that matched no route (404s, framing errors). One fixed
/// value, so unmatched paths never create series.
pub const NO_ROUTE: &str = "<none>";

#[cfg(test)]
mod tests {
    use super::*;

    /// The families BEHAVIOR.md names, spelled exactly.
    #[test]
    fn contract_names_are_exact() {
        let names: Vec<&str> = ALL.iter().map(|f| f.name).collect();
        for want in [
            "dispatch_requests_total",
            "dispatch_request_duration_seconds",
            "dispatch_upstream_requests_total",
            "dispatch_upstream_duration_seconds",
            "dispatch_breaker_state",
            "dispatch_ratelimit_rejected_total",
            "dispatch_cache_requests_total",
            "dispatch_connections_active",
            "dispatch_upstream_pool_reused_total",
            "dispatch_upstream_pool_new_total",
        ] {
            assert!(names.contains(&want), "{want} missing");
        }
    }

    #[test]
    fn names_are_unique_valid_and_typed() {
        for (i, f) in ALL.iter().enumerate() {
            assert!(f.name.starts_with("dispatch_") || f.name.starts_with("process_"));
            assert!(f
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            assert!(!f.help.is_empty() && !f.help.contains('\n'));
            assert!(ALL[i + 1..].iter().all(|g| g.name != f.name), "{}", f.name);
        }
    }
}
