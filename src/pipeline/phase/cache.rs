//! Phase 9: the cache lookup (BEHAVIOR.md "Cache"), and what the rest of the request needs of
//! the cache: the [`Store`] a miss fills, the [`Tee`] that copies its body on the way to the
//! client, the stale entry an upstream failure may be answered with, the purges a successful
//! `invalidate_on` request makes, and [`write_stored`], the writer of every stored answer.
//!
//! A lookup is one borrow of this worker's shard and one atomic load (the rule's purge
//! generation). It answers:
//! - fresh: the stored response (`X-Cache: HIT`), or `304` when the client's conditional
//!   request is met (RFC 9111 §4.3.2);
//! - stale within `stale_while_revalidate`: the stored response (`STALE`) at once, and, when
//!   no fetch of the key is running, one background refresh ([`Lookup::Revalidate`]);
//! - otherwise the request goes upstream (`MISS`, or `BYPASS` for a request the cache may not
//!   answer), as the fetcher of its key ([`Leader`]) or waiting for the fetch already running
//!   ([`Pending::wait`]: coalescing), with any stale entry kept for `stale_if_error`.
//!
//! Cost on a cached route's miss: the key, and a copy of the request's fields (a response's
//! `Vary` names the fields its key is made of only once it arrives). Routes without a rule pay
//! one branch (and one pattern walk when some rule has `invalidate_on`).

use std::cell::RefCell;
use std::rc::Rc;

use smallvec::SmallVec;

use crate::cache::entry::OwnedFields;
use crate::cache::rules::{self, AgeClock, Key, KeyParts, RuleTimes, State, Vary};
use crate::cache::shard::Flight;
use crate::cache::{purge, Entry, EntryHead, Leader, Rules, Shard};
use crate::config::model::{Cache as CacheConfig, CacheRuleId, Route};
use crate::http::{BodyKind, Header, ResponseHead};
use crate::metrics::CacheResult;
use crate::pipeline::ctx::RequestId;
use crate::pipeline::headers::{write_response_head, ConnDirective, OutFraming, ResponseHeadOut};
use crate::pipeline::respond::{Added, CacheMark};
use crate::pipeline::response::Stored;
use crate::pipeline::Response;

use super::auth::Subject;

/// The cache as one worker sees it: the config, the rules' shared generations, its shard.
#[derive(Clone, Copy)]
pub struct Cache<'a> {
    pub config: &'a CacheConfig,
    pub rules: &'a Rules,
    pub shard: &'a Rc<RefCell<Shard>>,
}

/// What the cache phase reads of the request.
pub struct Request<'a, 'h> {
    pub method: &'a str,
    /// The fields after phase 0.
    pub headers: &'a [Header<'h>],
    /// The identity headers the auth phase sets upstream: a `Vary` may name them.
    pub identity: &'a [(&'a str, &'a str)],
    /// The route's and the chosen upstream's names: the key's scope.
    pub scope: &'a [u8],
    /// The request's body framing: a GET with a body is not cached (its answer may depend
    /// on the body, which is not part of the key).
    pub body: BodyKind,
    /// The authority asked for (no port removal needed: the key drops it).
    pub host: &'a [u8],
    /// The normalised path (the one routed).
    pub path: &'a str,
    /// The query as sent.
    pub query: Option<&'a str>,
    pub subject: &'a Subject<'a>,
    /// Unix seconds.
    pub now: u64,
}

/// The phase's decision.
pub enum Lookup {
    /// The route is not cached and the request purges nothing.
    Skip,
    /// The request goes upstream with this.
    Go(Box<Pending>),
    /// A stored response answers.
    Answer(Response),
    /// A stale response answers, and the caller starts one background refresh with this
    /// store and the leadership of its key.
    Revalidate(Response, Leader, Box<Store>),
}

/// The cache's part of a request that goes upstream.
pub struct Pending {
    /// The route's rule (None: the route is not cached; the request may still purge).
    pub rule: Option<CacheRuleId>,
    /// `MISS` or `BYPASS`.
    pub result: CacheResult,
    /// How the response may be stored (GET on a cached route, not bypassing).
    pub store: Option<Box<Store>>,
    /// A stored response past its freshness, served if the upstream fails within its
    /// `stale_if_error` window.
    pub stale: Option<Rc<Entry>>,
    /// Another request is fetching this key: wait for it, then look again.
    pub wait: Option<Rc<Flight>>,
    /// This request fetches the key: waiters are released when it is dropped.
    pub leader: Option<Leader>,
    /// Rules a 2xx answer purges (`invalidate_on`).
    pub purge: SmallVec<[CacheRuleId; 2]>,
}

impl Pending {
    /// The mark a gateway-made or relayed answer carries (None on a route without a rule).
    pub fn mark(&self) -> Option<CacheMark> {
        self.rule.map(|_| CacheMark {
            result: self.result,
            age: None,
        })
    }
}

/// How a miss's response is stored: its key, the request fields a `Vary` may name, the
/// rule's times and purge generation as of the request's start.
pub struct Store {
    pub primary: Key,
    request: KeyRequest,
    rule: CacheRuleId,
    generation: u64,
    times: RuleTimes,
    max_object: u64,
    /// When the request began (Unix seconds): the `request_time` of its age (RFC 9111 §4.2.3).
    request_time: u64,
}

/// The request's parts a variant key is made of, owned (the head is gone by the time a
/// response names its `Vary`).
struct KeyRequest {
    scope: Vec<u8>,
    host: Vec<u8>,
    path: Vec<u8>,
    query: Option<Vec<u8>>,
    rule_vary: Vec<String>,
    fields: OwnedFields,
    subject: Option<Vec<u8>>,
}

impl KeyRequest {
    fn key(&self, response_vary: &[String]) -> Key {
        let headers = self.fields.headers();
        rules::key(&KeyParts {
            scope: &self.scope,
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            rule_vary: &self.rule_vary,
            response_vary,
            request_headers: &headers,
            subject: self.subject.as_deref(),
        })
    }
}

impl Store {
    /// This response's head, if the response may be stored (RFC 9111 §3: status,
    /// directives, `Vary: *`, and a declared length within `max_object`).
    pub fn admit(&self, head: &ResponseHead<'_>, body: BodyKind, now: u64) -> Option<EntryHead> {
        if let BodyKind::Length(n) = body {
            if n > self.max_object {
                return None;
            }
        }
        let freshness = rules::storable(head.status, &head.headers, &self.times, now).ok()?;
        let vary = match rules::vary(&head.headers) {
            Vary::Names(names) => names,
            Vary::Any => return None,
        };
        let age = AgeClock::new(&head.headers, self.request_time, now);
        Some(EntryHead::new(head, freshness, age, vary))
    }

    /// Bytes a stored body may have.
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// A tee for the body of a response [`Store::admit`] accepted.
    pub fn tee(&self, head: EntryHead, leader: Option<Leader>) -> Tee {
        Tee {
            head: Some(head),
            body: Vec::new(),
            limit: self.max_object,
            leader,
        }
    }

    /// The request leaves for the upstream now (Unix seconds): the `request_time` its age
    /// counts from (RFC 9111 §4.2.3), so a wait before it (a coalesced miss, a leaky bucket,
    /// an upload) is not counted as the response's age.
    pub fn sent_at(&mut self, now: u64) {
        self.request_time = now;
    }

    /// Stores a response whose whole body arrived, unless its rule was purged since the
    /// request began (the entry would be dead on arrival, and would displace a live one).
    pub fn keep(&self, shard: &mut Shard, rules: &Rules, head: EntryHead, body: Vec<u8>) {
        if rules.generation(self.rule) != self.generation {
            return;
        }
        let entry = head.finish(body, self.generation);
        let variant = (!entry.vary.is_empty()).then(|| self.request.key(&entry.vary));
        shard.store(self.primary.clone(), variant, entry);
    }

    /// The entry for this request, looked up again (after waiting for another fetch).
    pub fn find(&self, shard: &mut Shard, now: u64) -> Option<crate::cache::Found> {
        shard.find(
            &self.primary,
            |names| self.request.key(names),
            self.generation,
            now,
        )
    }
}

/// A copy of a response body on its way to the client, for the cache. Past `max_object` it
/// gives up: the copy is freed and the waiters released at once (they go upstream).
pub struct Tee {
    head: Option<EntryHead>,
    body: Vec<u8>,
    limit: u64,
    leader: Option<Leader>,
}

impl Tee {
    /// Body bytes (decoded) that went to the client.
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) {
        if self.head.is_none() {
            return;
        }
        if (self.body.len() + bytes.len()) as u64 > self.limit {
            self.head = None;
            self.body = Vec::new();
            self.leader = None;
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    /// The head and whole body, when the body stayed within the limit.
    pub fn finish(mut self) -> Option<(EntryHead, Vec<u8>, Option<Leader>)> {
        let head = self.head.take()?;
        Some((head, std::mem::take(&mut self.body), self.leader.take()))
    }
}

/// The subject a `per_user` rule keys on: a JWT's issuer and `sub`, or an API key's
/// consumer. None: the request has no subject the cache can tell apart (it bypasses).
fn subject_key(subject: &Subject<'_>) -> Option<Vec<u8>> {
    match subject {
        Subject::Anonymous => None,
        Subject::Jwt { verified, .. } => {
            let sub = verified.claims.get("sub")?.as_str()?;
            let iss = verified
                .claims
                .get("iss")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let mut key = Vec::with_capacity(8 + iss.len() + sub.len());
            key.extend_from_slice(b"jwt\0");
            key.extend_from_slice(iss.as_bytes());
            key.push(0);
            key.extend_from_slice(sub.as_bytes());
            Some(key)
        }
        Subject::Consumer { consumer, .. } => {
            let mut key = b"key\0".to_vec();
            key.extend_from_slice(consumer.consumer.as_bytes());
            Some(key)
        }
    }
}

/// The rules whose `invalidate_on` this request matches.
fn purges(config: &CacheConfig, method: &str, path: &str) -> SmallVec<[CacheRuleId; 2]> {
    config
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.invalidate_on
                .iter()
                .any(|inv| purge::matches(inv, method, path.as_bytes()))
        })
        .map(|(id, _)| id)
        .collect()
}

/// Runs the lookup for a request on `route` (see the module doc). A hit allocates only its
/// key: the miss's state is built once the shard has been asked.
pub fn lookup(cache: Cache<'_>, route: &Route, req: &Request<'_, '_>, id: RequestId) -> Lookup {
    let purge = purges(cache.config, req.method, req.path);
    let go = |rule, result, purge| {
        Lookup::Go(Box::new(Pending {
            rule,
            result,
            store: None,
            stale: None,
            wait: None,
            leader: None,
            purge,
        }))
    };
    let Some(rule_id) = route.cache else {
        return match purge.is_empty() {
            true => Lookup::Skip,
            false => go(None, CacheResult::Bypass, purge),
        };
    };
    let rule = &cache.config.rules[rule_id];
    let bypass = rules::request_bypass(req.method, req.headers, rule.per_user).is_some()
        || req.body != BodyKind::None
        // An API key is a credential like `Authorization` (RFC 9111 §3.5): the answer may
        // be the consumer's own, so it is shared only under a `per_user` key.
        || (!rule.per_user && matches!(req.subject, Subject::Consumer { .. }));
    if bypass {
        return go(Some(rule_id), CacheResult::Bypass, purge);
    }
    let subject = match rule.per_user {
        true => match subject_key(req.subject) {
            Some(s) => Some(s),
            None => return go(Some(rule_id), CacheResult::Bypass, purge),
        },
        false => None,
    };
    let generation = cache.rules.generation(rule_id);
    // The fields the upstream will see: the identity headers are among them.
    let with_identity: SmallVec<[Header<'_>; 32]>;
    let fields = match req.identity {
        [] => req.headers,
        identity => {
            with_identity = req
                .headers
                .iter()
                .copied()
                .chain(identity.iter().map(|&(name, value)| Header {
                    name,
                    value: value.as_bytes(),
                }))
                .collect();
            &with_identity
        }
    };
    let parts = KeyParts {
        scope: req.scope,
        host: req.host,
        path: req.path.as_bytes(),
        query: req.query.map(str::as_bytes),
        rule_vary: &rule.vary,
        response_vary: &[],
        request_headers: fields,
        subject: subject.as_deref(),
    };
    let primary = rules::key(&parts);
    // A client's `no-cache` / `max-age=0` is answered from upstream (and refreshes the entry).
    let refresh = rules::request_refresh(req.headers);
    let (found, running) = {
        let mut shard = cache.shard.borrow_mut();
        shard.sweep(cache.rules);
        let found = shard.find(
            &primary,
            |names| {
                rules::key(&KeyParts {
                    response_vary: names,
                    ..parts
                })
            },
            generation,
            req.now,
        );
        (found, shard.flight(&primary, generation))
    };
    let store = |primary: Key| {
        Box::new(Store {
            primary,
            request: owned(&parts),
            rule: rule_id,
            generation,
            times: RuleTimes {
                ttl: rule.ttl,
                stale_while_revalidate: rule.stale_while_revalidate,
                stale_if_error: rule.stale_if_error,
            },
            max_object: cache.config.max_object,
            request_time: req.now,
        })
    };
    let mut stale = None;
    if let Some(found) = found {
        match found.state {
            State::Fresh if !refresh => {
                return Lookup::Answer(answer(&found, CacheResult::Hit, req.headers, id))
            }
            State::StaleWhileRevalidate if !refresh => {
                let r = answer(&found, CacheResult::Stale, req.headers, id);
                return match running {
                    // A fetch of the key is running: it refreshes the entry.
                    Some(_) => Lookup::Answer(r),
                    None => {
                        let leader = Shard::lead(cache.shard, primary.clone(), generation);
                        Lookup::Revalidate(r, leader, store(primary))
                    }
                };
            }
            // RFC 9111 §5.2.1.4: a client's `no-cache` refuses a stored response that was not
            // validated, so not even a stale one on an upstream failure.
            _ if refresh => {}
            _ => stale = Some(found.entry),
        }
    }
    let mut pending = Box::new(Pending {
        rule: Some(rule_id),
        result: CacheResult::Miss,
        store: None,
        stale,
        wait: None,
        leader: None,
        purge,
    });
    // A HEAD's response has no body to store: it goes upstream alone.
    if req.method != "GET" {
        return Lookup::Go(pending);
    }
    if !refresh {
        match running {
            Some(flight) => pending.wait = Some(flight),
            None => pending.leader = Some(Shard::lead(cache.shard, primary.clone(), generation)),
        }
    }
    pending.store = Some(store(primary));
    Lookup::Go(pending)
}

/// The stored answer for a request: whole, or `304` when its conditional is met.
pub fn answer(
    found: &crate::cache::Found,
    result: CacheResult,
    headers: &[Header<'_>],
    id: RequestId,
) -> Response {
    let entry = &found.entry;
    // Most requests are not conditional: the stored fields are walked only for one that is.
    let conditional = headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("if-none-match")
            || h.name.eq_ignore_ascii_case("if-modified-since")
    });
    let not_modified = conditional && rules::not_modified(headers, entry.status, &entry.headers());
    Response::stored(
        Stored {
            entry: entry.clone(),
            not_modified,
        },
        CacheMark {
            result,
            age: Some(found.age),
        },
        id,
    )
}

/// Whether `stale` may answer for a failed upstream at `now` (within its `stale_if_error`
/// window, or its revalidate window, which a failure may use too: RFC 5861 §3).
pub fn usable_on_error(stale: &Entry, now: u64) -> Option<u64> {
    let age = stale.age.current_age(now);
    match stale.freshness.state(age) {
        State::Expired => None,
        _ => Some(age),
    }
}

/// The answer with `stale` for a request whose upstream failed (or whose breaker is open),
/// when its `stale_if_error` (or revalidate) window allows it at `now`.
pub fn stale_answer(
    stale: &Rc<Entry>,
    now: u64,
    headers: &[Header<'_>],
    id: RequestId,
) -> Option<Response> {
    let age = usable_on_error(stale, now)?;
    let found = crate::cache::Found {
        entry: stale.clone(),
        age,
        state: State::StaleIfError,
    };
    Some(answer(&found, CacheResult::Stale, headers, id))
}

/// The request's key parts, owned.
fn owned(parts: &KeyParts<'_>) -> KeyRequest {
    let mut fields = OwnedFields::default();
    for h in parts.request_headers {
        fields.push(h);
    }
    KeyRequest {
        scope: parts.scope.to_vec(),
        host: parts.host.to_vec(),
        path: parts.path.to_vec(),
        query: parts.query.map(<[u8]>::to_vec),
        rule_vary: parts.rule_vary.to_vec(),
        fields,
        subject: parts.subject.map(<[u8]>::to_vec),
    }
}

/// Writes a stored answer: the stored head with the response phases' fields, its own
/// `Content-Length`, and the body unless `head_only`; or a `304` with the stored validators
/// (RFC 9110 §15.4.5). An HTTP/1.0 client kept alive is told so (`http10`).
pub fn write_stored(
    out: &mut Vec<u8>,
    stored: &Stored,
    head_only: bool,
    added: &[Added<'_>],
    close: bool,
    http10: bool,
) {
    let entry = &stored.entry;
    let fields = entry.headers();
    let connection = if close {
        ConnDirective::Close
    } else if http10 {
        ConnDirective::KeepAlive
    } else {
        ConnDirective::Default
    };
    if stored.not_modified {
        let kept: SmallVec<[Header<'_>; 8]> = rules::not_modified_headers(&fields).collect();
        write_response_head(
            out,
            &ResponseHeadOut {
                status: 304,
                reason: b"Not Modified",
                headers: &kept,
                framing: OutFraming::NoBody,
                added,
                connection,
            },
        );
        return;
    }
    // The stored fields are serialised once, when stored (`Entry::block`): a hit copies them.
    out.extend_from_slice(b"HTTP/1.1 ");
    crate::http::write::write_u64(out, u64::from(entry.status));
    out.push(b' ');
    out.extend_from_slice(entry.reason());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(entry.block());
    for a in added {
        out.extend_from_slice(a.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(a.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 §8.6: never on a 204.
    if entry.status != 204 {
        out.extend_from_slice(b"Content-Length: ");
        crate::http::write::write_u64(out, entry.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    match connection {
        ConnDirective::Default => {}
        ConnDirective::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnDirective::Close => out.extend_from_slice(b"Connection: close\r\n"),
        // A stored response is never a 101 (websocket routes have no cache rule).
        ConnDirective::Upgrade => out.extend_from_slice(super::super::headers::UPGRADE_WEBSOCKET),
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && entry.status != 204 {
        out.extend_from_slice(&entry.body);
    }
}
