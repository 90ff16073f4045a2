//! The rate limiter's cost on the request path, per algorithm.
//!
//! What is compared, and why:
//! - `one_key/admit/*`: one key, every request admitted (limits far above the load, the clock
//!   advancing 1 ms a request): hash, lock-free lookup, one CAS. The cost a limited route adds
//!   to every request of a steady client; the log also writes its ring entry and `done` word.
//! - `one_key/reject/*`: one key far over its limit: rejections write nothing, so this is the
//!   cost of a flood from one client (it should be below `admit`).
//! - `many_keys/*`: 50,000 keys already in a table sized for the default 100,000, visited in
//!   a scattered order: every lookup is a cache miss, the realistic case for `key = "ip"`.
//! - `new_keys/*`: a distinct key every request (a flood of client IPs): the slow path, which
//!   takes the shard lock to insert, re-use a recovered slot, or turn the key away.
//! - Before the timings, a 1,000,000-key flood per algorithm prints the limit's table bytes and
//!   the process RSS growth it caused (`flood_1m_keys/*`): the memory bound, measured.
//! - `contended/*`: every core hammering ONE key at once (the worst case for the shared-word
//!   design: one cache line bouncing between cores, CAS retries); time per request as each
//!   thread sees it. Compare with `one_key/admit` to see what exactness across cores costs.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dispatch::policy::ratelimit::{Algorithm, LimitSpec, Limiter};

/// A limit of each algorithm that admits at least ten requests per ms forever.
fn never_rejects(algorithm: Algorithm) -> LimitSpec {
    let (limit, window, rate, burst) = match algorithm {
        Algorithm::FixedWindow => (1 << 30, Duration::from_secs(3600), 0, 0),
        Algorithm::SlidingWindowLog => (10_000, Duration::from_secs(1), 0, 0),
        Algorithm::SlidingWindowCounter => (1_000_000, Duration::from_secs(60), 0, 0),
        Algorithm::TokenBucket | Algorithm::LeakyBucket => (0, Duration::ZERO, 1_000_000, 1000),
    };
    LimitSpec {
        algorithm,
        limit,
        window,
        rate,
        burst,
        max_keys: None,
    }
}

/// A limit of each algorithm that a single key exhausts at once.
fn tiny(algorithm: Algorithm) -> LimitSpec {
    let mut spec = never_rejects(algorithm);
    match algorithm {
        _ if algorithm.is_windowed() => spec.limit = 1,
        Algorithm::TokenBucket => (spec.rate, spec.burst) = (1, 1),
        _ => (spec.rate, spec.burst) = (1, 0),
    }
    spec
}

/// The process's resident set, from /proc (0 where there is none).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn flood(algorithm: Algorithm, name: &str) {
    let before = rss_kib();
    let limiter = Limiter::new(never_rejects(algorithm)).unwrap();
    let mut turned_away = 0u64;
    for i in 0..1_000_000u32 {
        // 100 new keys a millisecond, 10 s in all.
        if !limiter
            .check(&i.to_be_bytes(), 1_000 + u64::from(i / 100))
            .admitted()
        {
            turned_away += 1;
        }
    }
    println!(
        "flood_1m_keys/{name}: table {} KiB, RSS +{} KiB, {} keys held, {turned_away} turned away",
        limiter.heap_bytes() / 1024,
        rss_kib().saturating_sub(before),
        limiter.table().keys(),
    );
}

fn bench(c: &mut Criterion) {
    for (algorithm, name) in Algorithm::ALL {
        flood(algorithm, name);
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    for (algorithm, name) in Algorithm::ALL {
        let limiter = Limiter::new(never_rejects(algorithm)).unwrap();
        let mut now = 1_000_000u64;
        c.bench_function(&format!("one_key/admit/{name}"), |b| {
            b.iter(|| {
                now += 1;
                assert!(limiter.check(black_box(b"203.0.113.7"), now).admitted());
            })
        });

        let limiter = Limiter::new(tiny(algorithm)).unwrap();
        limiter.check(b"203.0.113.7", 1000);
        c.bench_function(&format!("one_key/reject/{name}"), |b| {
            b.iter(|| {
                assert!(!limiter.check(black_box(b"203.0.113.7"), 1000).admitted());
            })
        });

        let limiter = Limiter::new(never_rejects(algorithm)).unwrap();
        let keys: Vec<[u8; 4]> = (0..50_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes())
            .collect();
        for k in &keys {
            limiter.check(k, 1000);
        }
        let (mut i, mut now) = (0usize, 1_000_000u64);
        c.bench_function(&format!("many_keys/{name}"), |b| {
            b.iter(|| {
                i = (i + 7919) % keys.len();
                now += 1;
                black_box(limiter.check(&keys[i], now / 50));
            })
        });

        let limiter = Limiter::new(never_rejects(algorithm)).unwrap();
        let (mut key, mut now) = (0u64, 1_000_000u64);
        c.bench_function(&format!("new_keys/{name}"), |b| {
            b.iter(|| {
                key += 1;
                now += u64::from(key % 100 == 0);
                black_box(limiter.check(&key.to_be_bytes(), now));
            })
        });

        let limiter = Limiter::new(never_rejects(algorithm)).unwrap();
        c.bench_function(&format!("contended/{threads}_threads/{name}"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters / threads as u64 + 1;
                let barrier = Arc::new(Barrier::new(threads + 1));
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let (limiter, barrier) = (limiter.clone(), barrier.clone());
                        std::thread::spawn(move || {
                            barrier.wait();
                            let base = 2_000_000 + t as u64;
                            for n in 0..per_thread {
                                black_box(limiter.check(b"203.0.113.7", base + n));
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for h in handles {
                    h.join().unwrap();
                }
                // Time per request on each thread, comparable with `one_key/admit`.
                start.elapsed() * threads as u32
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
