//! The cache's background refresh (RFC 5861 §3, `stale_while_revalidate`): a stale entry is
//! served at once, and one request for it goes upstream in a task of its own, through
//! [`upstream::call`](crate::upstream::call) like any other (balancer, pool, breaker,
//! retries), not tied to the client that triggered it: the client's connection may close,
//! the refresh goes on. Its response replaces the entry when it may be stored.
//!
//! One refresh per key at a time: the task holds the key's [`Leader`] (a miss for the key
//! meanwhile waits for it, a stale hit starts no other). An open breaker skips the refresh:
//! the entry stays stale (and is served until its window ends).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use super::phase::cache::Store;
use super::phase::framing::Framing;
use super::phase::{upstream, Destination};
use crate::cache::{EntryHead, Leader, Shard};
use crate::clock;
use crate::config::model::UpstreamId;
use crate::http::{BodyKind, Header, RequestHead, ResponseHead};
use crate::state::shared::Shared;
use crate::state::worker::{Snapshot, Worker};
use crate::upstream::call;

/// Request fields a refresh does not send: the client's conditionals and ranges (the
/// refresh wants the whole current response, not a `304` or a part of it).
const NOT_SENT: [&str; 6] = [
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
];

/// Builds the refresh's request (a GET of the same resource, as the request itself would
/// have been sent, less conditionals and ranges) and spawns it on this worker.
pub fn start(
    req: &upstream::Request<'_, '_>,
    to: &Destination<'_>,
    leader: Leader,
    store: Box<Store>,
    worker: &Worker,
    snap: &Rc<Snapshot>,
    shard: &Rc<RefCell<Shard>>,
) {
    let headers: SmallVec<[Header<'_>; 32]> = req
        .headers
        .iter()
        .copied()
        .filter(|h| !NOT_SENT.iter().any(|n| h.name.eq_ignore_ascii_case(n)))
        .collect();
    let head = RequestHead {
        method: "GET",
        headers: req.head.headers.clone(),
        ..req.head.clone()
    };
    let framing = Framing {
        body: BodyKind::None,
        keep_alive: true,
        expect_continue: false,
    };
    let sent = upstream::Request {
        head: &head,
        headers: &headers,
        framing: &framing,
        ..*req
    };
    let mut request = Vec::with_capacity(512);
    let balance_key = match upstream::run(&sent, to, u64::MAX, false, &mut request) {
        super::phase::Flow::Continue(key) => key,
        super::phase::Flow::Respond(_) => return,
    };
    let policy = call::Policy {
        retries: to.upstream.retries,
        idempotent: true,
        head: false,
        balance_key,
        connect_timeout: to.upstream.connect_timeout,
        read_timeout: to.route.timeout.unwrap_or(to.upstream.read_timeout),
        started: Instant::now(),
        upgrade: false,
    };
    monoio::spawn(run(Refresh {
        snap: snap.clone(),
        upstream: to.upstream_id,
        request,
        policy,
        store,
        leader,
        shared: worker.shared.clone(),
        worker: worker.id,
        shard: shard.clone(),
    }));
}

/// Everything a refresh owns: it outlives the request that started it.
struct Refresh {
    snap: Rc<Snapshot>,
    upstream: UpstreamId,
    request: Vec<u8>,
    policy: call::Policy,
    store: Box<Store>,
    leader: Leader,
    shared: Arc<Shared>,
    worker: usize,
    shard: Rc<RefCell<Shard>>,
}

async fn run(r: Refresh) {
    let snap = &*r.snap;
    let target = call::Target {
        id: r.upstream,
        config: &snap.active.config.upstreams[r.upstream],
        state: &snap.upstreams.list[r.upstream],
    };
    let admitted = {
        let state = target.state.borrow();
        call::admit(state.breaker.as_ref(), clock::now_ms())
    };
    // An open breaker: no refresh; the entry stays stale.
    let Ok(permit) = admitted else { return };
    let now_sec = || r.shared.now_sec();
    let env = call::Env {
        metrics: &snap.metrics,
        worker: r.worker,
        now_sec: &now_sec,
    };
    // The final head, when it may be stored.
    let mut stored: Option<EntryHead> = None;
    let mut caller = call::Held {
        request: r.request,
        on_head: |head: &ResponseHead<'_>, body: BodyKind| {
            stored = r.store.admit(head, body, clock::unix_now());
        },
    };
    let called = call::call(target, env, &r.policy, permit, &mut caller).await;
    drop(caller);
    let Ok(resp) = called else {
        return;
    };
    let limit = r.store.max_object() as usize;
    match stored {
        Some(head) => {
            if let Ok(body) = resp.collect(limit, r.policy.read_timeout).await {
                let mut shard = r.shard.borrow_mut();
                r.store.keep(&mut shard, &r.snap.active.cache, head, body);
                r.shared.publish_cache_size(r.worker, &shard);
            }
        }
        // Not storable: read (so the connection may be reused) and dropped.
        None => drop(resp.collect(limit, r.policy.read_timeout).await),
    }
    drop(r.leader);
}
