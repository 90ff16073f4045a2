//! A cache hit's cost on the request path (issue 12), through the gateway's own functions.
//!
//! What is measured, per request, on one worker's shard holding the stored response:
//! - `hit/lookup_and_write/*`: the whole hit as the gateway serves it: the cache phase's
//!   lookup (`invalidate_on` check, bypass checks, key, purge-generation load, shard probe,
//!   age and freshness, the conditional-request check), then the response phases' fields
//!   (`X-Request-Id`, `X-Cache`, `Age`) and `write_stored`, which writes the stored head and
//!   body into the connection's output buffer (cleared, its capacity kept, as between two
//!   requests on one connection).
//! - `hit/lookup/*`: the lookup alone.
//! - `hit/write/*`: the writing alone, from the `Response` a lookup gave.
//!
//! Each with the response `perf/compare.sh`'s cache scenario serves (a 2,048-byte JSON body,
//! 4 stored fields) and, `*/vary`, the same under a rule with `vary = ["accept-language"]`
//! (a URL whose entries are variants: two keys and two probes a hit).
//!
//! The entry is stored the way a miss stores it: the lookup's `Store` admits the upstream's
//! parsed head and keeps the body. Nothing here does I/O: the socket write is the kernel's,
//! which perf/compare.sh measures (`sys us`).

use std::cell::RefCell;
use std::hint::black_box;
use std::path::Path;
use std::rc::Rc;

use criterion::{criterion_group, criterion_main, Criterion};
use dispatch::cache::{Rules, Shard};
use dispatch::config::model::{Config, Route};
use dispatch::http::{parse_response, BodyKind, HeadLimits, Header};
use dispatch::pipeline::ctx::RequestId;
use dispatch::pipeline::phase::auth::Subject;
use dispatch::pipeline::phase::cache::{self, Cache, Lookup, Request};
use dispatch::pipeline::respond::{self, Answering};
use dispatch::pipeline::{Body, Response};

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:18081"]
workers = 2

[upstreams.backend]
endpoints = ["http://127.0.0.1:18000"]

[cache]
max_bytes_per_worker = "64MiB"
max_object = "1MiB"

[cache.rules.perf]
ttl = "5m"

[cache.rules.vary]
ttl = "5m"
vary = ["accept-language"]

[routes.cached]
paths = ["/cache"]
upstream = "backend"
cache = "perf"

[routes.varied]
paths = ["/varied"]
upstream = "backend"
cache = "vary"
"#;

/// The upstream's answer in perf/compare.sh's cache scenario, as nginx sends it: 2,048 bytes
/// of JSON with `Cache-Control: max-age=3600`.
fn upstream_response() -> Vec<u8> {
    let mut body =
        String::from(r#"{"id":"catalog_42","owner":{"id":"u_1","name":"Ada Lovelace"},"items":["#);
    let mut i = 0;
    while body.len() < 1900 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"sku":"SKU-{:05}","price":{}.25,"stock":{}}}"#,
            1000 + i,
            19 + i * 7,
            (i * 37) % 101
        ));
        i += 1;
    }
    body.push_str(r#"],"note":""#);
    while body.len() < 2048 - 2 {
        body.push('.');
    }
    body.push_str(r#""}"#);
    assert_eq!(body.len(), 2048);
    let head = format!(
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 06 Dec 2026 12:00:00 GMT\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\
         Cache-Control: max-age=3600\r\n\r\n",
        body.len()
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.as_bytes());
    raw
}

/// 2026-12-06 12:00:00 UTC, the upstream's `Date`: the entry is stored then and read a
/// minute later (fresh, `Age: 60`).
const STORED_AT: u64 = 1_796_558_400;

/// One worker's view of the cache, its shard holding the upstream's answer for `path`.
struct Fixture {
    config: Config,
    rules: Rules,
    shard: Rc<RefCell<Shard>>,
    subject: Subject<'static>,
    id: RequestId,
}

impl Fixture {
    fn new() -> Fixture {
        let config = dispatch::config::load_str(CONFIG, Path::new("bench.toml"))
            .expect("the bench's config loads");
        let cache_config = config.cache.as_ref().expect("the config has [cache]");
        let rules = Rules::compile(Some(cache_config), None);
        let shard = Rc::new(RefCell::new(Shard::new(cache_config.max_bytes_per_worker)));
        Fixture {
            config,
            rules,
            shard,
            subject: Subject::Anonymous,
            id: RequestId::generate([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]),
        }
    }

    fn route(&self, name: &str) -> &Route {
        self.config
            .routes
            .iter()
            .find(|r| r.name == name)
            .expect("the bench's route exists")
    }

    fn cache(&self) -> Cache<'_> {
        Cache {
            config: self.config.cache.as_ref().expect("the config has [cache]"),
            rules: &self.rules,
            shard: &self.shard,
        }
    }

    fn lookup(&self, route: &str, path: &str, headers: &[Header<'_>], now: u64) -> Lookup {
        // The key's scope as the request stack builds it (on its stack): the route's and the
        // upstream's names.
        let scope: &[u8] = match route {
            "cached" => b"cached\0backend",
            _ => b"varied\0backend",
        };
        let req = Request {
            method: "GET",
            headers,
            identity: &[],
            scope,
            body: BodyKind::None,
            host: b"127.0.0.1:18081",
            path,
            query: None,
            subject: &self.subject,
            now,
        };
        cache::lookup(self.cache(), self.route(route), &req, self.id)
    }

    /// Stores the upstream's answer as a miss does: its `Store` admits the head and keeps
    /// the whole body; then checks that the next lookup is a hit.
    fn fill(&self, route: &str, path: &str, headers: &[Header<'_>]) {
        let Lookup::Go(pending) = self.lookup(route, path, headers, STORED_AT) else {
            panic!("the first lookup of {path} is not a miss");
        };
        let store = pending
            .store
            .as_ref()
            .expect("a GET miss on a cached route stores");
        let raw = upstream_response();
        let head = parse_response(&raw, &HeadLimits::default())
            .expect("the upstream's head parses")
            .expect("the upstream's head is complete");
        let body = raw[head.head_len..].to_vec();
        let entry = store
            .admit(&head, BodyKind::Length(body.len() as u64), STORED_AT)
            .expect("the upstream's answer is storable");
        store.keep(&mut self.shard.borrow_mut(), &self.rules, entry, body);
        drop(pending);
        assert!(
            matches!(
                self.lookup(route, path, headers, STORED_AT + 60),
                Lookup::Answer(_)
            ),
            "the second lookup of {path} is not a hit"
        );
    }
}

/// Writes `r` (a stored answer) into `out` as the client connection does.
fn write_hit(out: &mut Vec<u8>, r: &Response) {
    let Body::Stored(stored) = &r.body else {
        panic!("a hit answers with the stored response");
    };
    let cache = r.cache.map(|c| c.text());
    let added = respond::phases(&Answering {
        id: &r.id,
        rate: None,
        cache: cache.as_ref(),
    });
    cache::write_stored(out, stored, r.head_only, &added, r.close, r.http10);
}

fn hit(r: Lookup) -> Response {
    match r {
        Lookup::Answer(r) => r,
        _ => panic!("the lookup is not a hit"),
    }
}

fn bench_hit(c: &mut Criterion) {
    let fixture = Fixture::new();
    // What wrk sends, plus the fields a typical API client adds.
    let plain: [Header<'_>; 4] = [
        Header {
            name: "Host",
            value: b"127.0.0.1:18081",
        },
        Header {
            name: "User-Agent",
            value: b"perf-client/1.0",
        },
        Header {
            name: "Accept",
            value: b"application/json",
        },
        Header {
            name: "Accept-Encoding",
            value: b"identity",
        },
    ];
    let varied: [Header<'_>; 5] = [
        Header {
            name: "Host",
            value: b"127.0.0.1:18081",
        },
        Header {
            name: "User-Agent",
            value: b"perf-client/1.0",
        },
        Header {
            name: "Accept",
            value: b"application/json",
        },
        Header {
            name: "Accept-Encoding",
            value: b"identity",
        },
        Header {
            name: "Accept-Language",
            value: b"en-GB, en;q=0.8",
        },
    ];
    fixture.fill("cached", "/cache/catalog/42", &plain);
    fixture.fill("varied", "/varied/catalog/42", &varied);
    let now = STORED_AT + 60;

    let mut out = Vec::with_capacity(16 * 1024);
    write_hit(
        &mut out,
        &hit(fixture.lookup("cached", "/cache/catalog/42", &plain, now)),
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("\r\nX-Cache: HIT\r\n") && text.contains("\r\nAge: 60\r\n"),
        "{text}"
    );
    assert!(text.ends_with(r#""}"#) && out.len() > 2048, "{text}");
    println!(
        "a hit writes {} bytes (head {} + body 2048)",
        out.len(),
        out.len() - 2048
    );

    let mut g = c.benchmark_group("hit");
    for (name, route, path, headers) in [
        ("plain", "cached", "/cache/catalog/42", &plain[..]),
        ("vary", "varied", "/varied/catalog/42", &varied[..]),
    ] {
        g.bench_function(format!("lookup_and_write/{name}"), |b| {
            b.iter(|| {
                out.clear();
                let r = hit(fixture.lookup(route, black_box(path), black_box(headers), now));
                write_hit(&mut out, &r);
                black_box(out.len())
            })
        });
        g.bench_function(format!("lookup/{name}"), |b| {
            b.iter(|| hit(fixture.lookup(route, black_box(path), black_box(headers), now)))
        });
        let r = hit(fixture.lookup(route, path, headers, now));
        g.bench_function(format!("write/{name}"), |b| {
            b.iter(|| {
                out.clear();
                write_hit(&mut out, black_box(&r));
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_hit);
criterion_main!(benches);
