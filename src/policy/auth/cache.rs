//! The verified-token cache: one per worker and policy (`!Send`, no lock, no atomics), a
//! bounded map from a token to what verifying it produced ([`Verified`]: claims and the headers
//! to forward), so a client reusing its token for minutes pays for one signature check.
//!
//! Key: the token's SHA-256, not its bytes. Every entry then costs the same 32 bytes of key
//! whatever the token's size (up to 8 KiB), the cache holds no usable bearer credential (a core
//! dump of it replays nothing), and equal digests mean equal tokens (collision resistance), so
//! a lookup never needs the token back. Hashing a 700-byte token costs about 0.4 µs with the
//! CPU's SHA extensions (benches/auth.rs: the whole hit), against ~20 µs for an RS256 check. The digest is already
//! uniform and not chosen by the client, so its first 8 bytes are the map's hash (no SipHash).
//!
//! Expiry: an entry is used only while `now < exp` (the token's own, no leeway: past `exp` a
//! request verifies again, where the leeway applies, and the result is not stored), and while
//! `nbf` still holds. Eviction is quick_cache's CLOCK-like S3-FIFO at `capacity` entries; a
//! verifier from a reload (another [`JwtVerifier::id`]) empties the cache first. Refusals are
//! not cached: a flood of bad tokens must not evict the good ones.

use std::hash::{BuildHasher, Hash, Hasher};
use std::rc::Rc;

use aws_lc_rs::digest;
use quick_cache::unsync::{Cache, DefaultLifecycle};
use quick_cache::UnitWeighter;

use super::error::AuthError;
use super::jwt::{Claims, ForwardHeaders, JwtVerifier, MAX_TOKEN_LEN};

/// What a successful verification produced.
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub claims: Claims,
    /// `(header, value)` to set on the request, in the policy's `forward` order.
    pub forward: ForwardHeaders,
}

/// A per-worker cache of verified tokens (see the module doc).
pub struct TokenCache {
    owner: u64,
    entries: Option<Cache<TokenDigest, Rc<Verified>, UnitWeighter, DigestHash>>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 verifies every request.
    pub fn new(capacity: usize) -> TokenCache {
        let entries = (capacity > 0).then(|| {
            Cache::with(
                capacity,
                capacity as u64,
                UnitWeighter,
                DigestHash,
                DefaultLifecycle::default(),
            )
        });
        TokenCache { owner: 0, entries }
    }

    /// Tokens held now.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `verifier.verify` and `verifier.forwarded` for `token` at `now_unix`, answered from the
    /// cache while the token's entry is valid.
    pub fn verify(
        &mut self,
        verifier: &JwtVerifier,
        token: &[u8],
        now_unix: u64,
    ) -> Result<Rc<Verified>, AuthError> {
        let Some(entries) = self.entries.as_mut() else {
            return verify(verifier, token, now_unix).map(Rc::new);
        };
        // An oversized token is refused by `verify` before it is hashed.
        if token.len() > MAX_TOKEN_LEN {
            return verify(verifier, token, now_unix).map(Rc::new);
        }
        if self.owner != verifier.id() {
            entries.clear();
            self.owner = verifier.id();
        }
        let key = TokenDigest::of(token);
        if let Some(hit) = entries.get(&key) {
            if usable(hit, verifier, now_unix) {
                return Ok(Rc::clone(hit));
            }
            entries.remove(&key);
        }
        let verified = Rc::new(verify(verifier, token, now_unix)?);
        if now_unix < verified.claims.expires_at() {
            entries.insert(key, Rc::clone(&verified));
        }
        Ok(verified)
    }
}

fn verify(verifier: &JwtVerifier, token: &[u8], now_unix: u64) -> Result<Verified, AuthError> {
    let claims = verifier.verify(token, now_unix)?;
    let forward = verifier.forwarded(&claims)?;
    Ok(Verified { claims, forward })
}

/// Whether a cached verification still stands at `now`: before `exp`, and (should the clock
/// have gone back) not before `nbf` less the leeway.
fn usable(hit: &Verified, verifier: &JwtVerifier, now: u64) -> bool {
    now < hit.claims.expires_at()
        && hit
            .claims
            .not_before()
            .is_none_or(|nbf| now.saturating_add(verifier.leeway_secs()) as f64 >= nbf)
}

/// A token's SHA-256 (the cache key).
#[derive(Clone, Copy, PartialEq, Eq)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &[u8]) -> TokenDigest {
        let mut out = [0; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, token).as_ref());
        TokenDigest(out)
    }
}

impl Hash for TokenDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut head = [0; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

/// The identity hash over a digest's first 8 bytes (see the module doc).
#[derive(Clone, Copy, Default)]
struct DigestHash;

#[derive(Default)]
struct DigestHasher(u64);

impl BuildHasher for DigestHash {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called by `TokenDigest::hash`; this keeps any other use correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
