//! [`Tickets`]: the session-ticket keys of TLS resumption (RFC 8446 §4.6.1, RFC 5077), shared
//! by every worker without a lock.
//!
//! A client's next connection may be accepted by any worker (SO_REUSEPORT spreads them), so a
//! ticket sealed on one worker must open on every other. rustls's own ticketer rotates its key
//! behind a mutex, and its stateful session cache is a mutex too: both would put a lock that
//! every core takes on the handshake path. Here nothing is mutable: the key of each rotation
//! period is derived (HKDF-SHA256, RFC 5869) from one process secret, drawn at random when the
//! process first needs it, and the period's number. Every worker derives the same key for the
//! same period, and a reload keeps the secret (a config generation's tickets stay valid).
//!
//! Each key is also bound to the client authentication of the config that issued it (the
//! trusted `client_ca` certificates, or none): rustls resumes a session without verifying the
//! client's certificate again, so a ticket issued before `client_ca` was added or changed must
//! not open after the reload.
//!
//! A ticket is `period (8 bytes, big-endian) || nonce (12) || AES-256-GCM-SIV(state) || tag
//! (16)`, the period authenticated as associated data. Nonces are random, and GCM-SIV stays
//! safe if one ever repeats under a period's key (plain GCM would leak its authentication key
//! past about 2^32 tickets a period). It opens in its own period and the next one,
//! so it lives between one and two periods; the lifetime hint sent to clients is one period.
//! Tickets die with the process (the secret is never written anywhere): a restart costs every
//! client one full handshake.

use std::sync::{Arc, OnceLock};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV, NONCE_LEN};
use aws_lc_rs::hkdf::{Prk, Salt, HKDF_SHA256};
use rustls::server::ProducesTickets;

/// How long one ticket key is used to seal new tickets.
pub const PERIOD_SECS: u64 = 6 * 60 * 60;

const PERIOD_LEN: usize = 8;
const TAG_LEN: usize = 16;
/// HKDF's `info`, so these keys can never equal a key derived from the secret for another use.
const INFO: &[u8] = b"dispatch tls session ticket key v1";

/// Seconds on some monotonic scale shared by all workers (the process clock).
pub type Clock = fn() -> u64;

/// The process's ticketer for a config whose client authentication is `auth` (the trusted
/// client CAs, or nothing): one secret for the whole process, whichever config generation
/// asks, with `auth` in every key. A resumed session skips client-certificate verification
/// (its ticket carries the chain verified then), so a ticket must not open under another
/// `client_ca`: adding or changing it forces a full handshake.
pub fn process(auth: &[u8]) -> Arc<Tickets> {
    static TICKETS: OnceLock<Tickets> = OnceLock::new();
    let base = TICKETS.get_or_init(|| {
        let mut secret = [0u8; 32];
        // The system's random generator failing leaves no safe secret to use.
        aws_lc_rs::rand::fill(&mut secret).expect("the system random generator works");
        Tickets::new(secret, || crate::clock::now_ms() / 1000)
    });
    Arc::new(base.with_context(auth))
}

/// Seals and opens session tickets with the key of the current or the previous period.
pub struct Tickets {
    /// HKDF-Extract of the secret: every period's key is an expansion of it.
    prk: Prk,
    clock: Clock,
    /// SHA-256 of what a ticket is bound to (the client authentication it was issued under).
    context: [u8; 32],
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.write_str("Tickets")
    }
}

impl Tickets {
    pub fn new(secret: [u8; 32], clock: Clock) -> Tickets {
        Tickets {
            prk: Salt::new(HKDF_SHA256, INFO).extract(&secret),
            clock,
            context: [0; 32],
        }
    }

    /// The same secret and clock, keys bound to `context`.
    pub fn with_context(&self, context: &[u8]) -> Tickets {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, context);
        let mut bound = [0u8; 32];
        bound.copy_from_slice(digest.as_ref());
        Tickets {
            prk: self.prk.clone(),
            clock: self.clock,
            context: bound,
        }
    }

    fn period(&self) -> u64 {
        (self.clock)() / PERIOD_SECS
    }

    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let period = period.to_be_bytes();
        let info = [INFO, &self.context[..], &period[..]];
        let okm = self.prk.expand(&info, &AES_256_GCM_SIV).ok()?;
        let key: UnboundKey = okm.into();
        Some(LessSafeKey::new(key))
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let period = self.period();
        let key = self.key(period)?;
        let mut nonce = [0u8; NONCE_LEN];
        // A nonce repeated under one key would break GCM: random, never a counter two
        // workers could both be at.
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let header = period.to_be_bytes();
        let mut out = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&header),
            &mut sealed,
        )
        .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < PERIOD_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (header, rest) = cipher.split_at(PERIOD_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let period = u64::from_be_bytes(header.try_into().ok()?);
        let now = self.period();
        // The current key, or the one before it: a ticket from any older period (or from a
        // period not reached yet) is refused, and the client does a full handshake.
        if period != now && period.checked_add(1) != Some(now) {
            return None;
        }
        let key = self.key(period)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(header), &mut buf).ok()?;
        let n = plain.len();
        buf.truncate(n);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static NOW: AtomicU64 = AtomicU64::new(0);

    fn clock() -> u64 {
        NOW.load(Ordering::Relaxed)
    }

    /// Tickets sealed by one instance open on another built from the same secret (another
    /// worker), in the same period and the next, and not after.
    #[test]
    fn ticket_opens_on_any_worker_for_two_periods_only() {
        NOW.store(10 * PERIOD_SECS + 5, Ordering::Relaxed);
        let a = Tickets::new([7; 32], clock);
        let b = Tickets::new([7; 32], clock);
        let ticket = a.encrypt(b"session state").unwrap();
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        NOW.store(11 * PERIOD_SECS + PERIOD_SECS - 1, Ordering::Relaxed);
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        NOW.store(12 * PERIOD_SECS, Ordering::Relaxed);
        assert_eq!(
            b.decrypt(&ticket),
            None,
            "two periods later the key is gone"
        );
        // A ticket from another process's secret, or tampered with, never opens.
        NOW.store(10 * PERIOD_SECS, Ordering::Relaxed);
        let other = Tickets::new([8; 32], clock);
        assert_eq!(other.decrypt(&ticket), None);
        let mut flipped = ticket.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(a.decrypt(&flipped), None);
        // The period is authenticated: relabelling a ticket as a later period fails.
        let mut relabelled = ticket.clone();
        relabelled[7] ^= 1;
        assert_eq!(a.decrypt(&relabelled), None);
        assert_eq!(a.decrypt(&ticket[..20]), None, "short input is refused");
        assert_ne!(
            a.encrypt(b"x").unwrap(),
            a.encrypt(b"x").unwrap(),
            "each ticket has its own nonce"
        );
    }

    /// A session resumed skips client-certificate verification, so a ticket issued without
    /// `client_ca` (or under another one) must not open once a reload sets it.
    #[test]
    fn a_ticket_does_not_open_under_another_client_authentication() {
        // Its own clock: the other test moves NOW while this one runs.
        let base = Tickets::new([7; 32], || 3 * PERIOD_SECS);
        let open = base.with_context(b"no client authentication");
        let ticket = open.encrypt(b"session state").unwrap();
        let same = base.with_context(b"no client authentication");
        assert_eq!(
            same.decrypt(&ticket).as_deref(),
            Some(&b"session state"[..])
        );
        assert_eq!(base.with_context(b"ca one").decrypt(&ticket), None);
    }
}
