//! API keys (`type = "api_key"`): [`ApiKeySpec`] compiles into an [`ApiKeyVerifier`] holding
//! the `keys_file` entries by SHA-256 digest; [`ApiKeyVerifier::lookup`] digests the presented
//! key and compares digests in constant time. [`query_param`] and [`remove_query_param`] read
//! and remove a key given in the target's query.
//!
//! The keys file holds no key, only digests: `[keys."<sha256 hex>"] consumer = "...", plan =
//! "..."`. A lookup first narrows to the entries whose digest starts with the same 8 bytes (a
//! map), then compares the full 32 bytes with aws-lc's constant-time comparison. The map's
//! timing can only tell an attacker something about SHA-256 of the keys they send, never about
//! a stored key: learning a stored digest would still leave a preimage to find.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use aws_lc_rs::{constant_time, digest};
use serde::Deserialize;

use super::error::{AuthConfigError, AuthError, Invalid};

/// Where the key is presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    /// A request header (`header = "x-api-key"`).
    Header(String),
    /// A query parameter (`query = "api_key"`), removed from the target before forwarding.
    Query(String),
}

/// An entry's field that `forward` may set as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyField {
    Consumer,
    Plan,
}

impl ApiKeyField {
    /// The field of a `forward` table key (`consumer`, `plan`).
    pub fn parse(name: &str) -> Option<ApiKeyField> {
        match name {
            "consumer" => Some(ApiKeyField::Consumer),
            "plan" => Some(ApiKeyField::Plan),
            _ => None,
        }
    }
}

/// One `[auth.NAME]` policy of `type = "api_key"`, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySpec {
    pub from: KeyFrom,
    pub keys_file: PathBuf,
    /// `(field, header)`: the entry's fields set as request headers on success.
    pub forward: Vec<(ApiKeyField, String)>,
}

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub consumer: Box<str>,
    pub plan: Option<Box<str>>,
}

/// A compiled API-key policy: shared by every worker, replaced whole on reload.
pub struct ApiKeyVerifier {
    from: KeyFrom,
    /// By the digest's first 8 bytes; the full digest is compared in constant time.
    entries: HashMap<u64, Vec<([u8; 32], Consumer)>>,
    forward: Box<[(ApiKeyField, Box<str>)]>,
}

impl std::fmt::Debug for ApiKeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyVerifier")
            .field("from", &self.from)
            .field("keys", &self.entries.values().map(Vec::len).sum::<usize>())
            .field("forward", &self.forward)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    consumer: String,
    plan: Option<String>,
}

impl ApiKeyVerifier {
    /// Compiles a policy: reads and checks `keys_file` once.
    pub fn new(spec: &ApiKeySpec) -> Result<ApiKeyVerifier, AuthConfigError> {
        let path = &spec.keys_file;
        let fail = |reason: String| AuthConfigError::KeyFile {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: path.clone(),
            source,
        })?;
        // toml's message carries the line and column.
        let file: KeysFile = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        if file.keys.is_empty() {
            return Err(fail("has no [keys.\"<sha256 hex>\"] entry".into()));
        }
        let mut entries: HashMap<u64, Vec<([u8; 32], Consumer)>> = HashMap::new();
        for (hex, entry) in file.keys {
            let digest = parse_hex(&hex).ok_or_else(|| {
                fail(format!(
                    "keys.{hex:?}: not a SHA-256 digest (64 hex digits)"
                ))
            })?;
            for (field, value) in [
                ("consumer", Some(&entry.consumer)),
                ("plan", entry.plan.as_ref()),
            ] {
                if let Some(value) = value {
                    if value.is_empty() || !super::is_forwardable(value.as_bytes()) {
                        return Err(fail(format!(
                            "keys.{hex:?}: {field} {value:?} cannot be sent as a header value"
                        )));
                    }
                }
            }
            let bucket = entries.entry(prefix(&digest)).or_default();
            if bucket.iter().any(|(d, _)| *d == digest) {
                return Err(fail(format!("keys.{hex:?}: the digest is listed twice")));
            }
            bucket.push((
                digest,
                Consumer {
                    consumer: entry.consumer.into(),
                    plan: entry.plan.map(Into::into),
                },
            ));
        }
        let from = match &spec.from {
            KeyFrom::Header(name) => KeyFrom::Header(name.to_ascii_lowercase()),
            query => query.clone(),
        };
        let mut forward = Vec::with_capacity(spec.forward.len());
        for (field, header) in &spec.forward {
            forward.push((*field, super::forward_header(header)?));
        }
        Ok(ApiKeyVerifier {
            from,
            entries,
            forward: forward.into(),
        })
    }

    /// Where the key is read from (a header name is lower-case).
    pub fn from(&self) -> &KeyFrom {
        &self.from
    }

    /// The consumer of a presented key; an empty key is `Missing`, an unknown one `Invalid`.
    pub fn lookup(&self, presented: &[u8]) -> Result<&Consumer, AuthError> {
        if presented.is_empty() {
            return Err(AuthError::Missing);
        }
        let digest = digest::digest(&digest::SHA256, presented);
        let digest = digest.as_ref();
        let mut found = None;
        if let Some(bucket) = self.entries.get(&prefix(digest)) {
            for (stored, consumer) in bucket {
                if constant_time::verify_slices_are_equal(stored, digest).is_ok() {
                    found = Some(consumer);
                }
            }
        }
        found.ok_or(AuthError::Invalid(Invalid::UnknownApiKey))
    }

    /// The `(header, value)` pairs to set for `consumer`, in `forward` order (no plan, no header).
    pub fn forwarded<'a>(&'a self, consumer: &'a Consumer) -> Vec<(&'a str, &'a str)> {
        self.forward
            .iter()
            .filter_map(|(field, header)| {
                let value = match field {
                    ApiKeyField::Consumer => Some(&*consumer.consumer),
                    ApiKeyField::Plan => consumer.plan.as_deref(),
                };
                value.map(|v| (&**header, v))
            })
            .collect()
    }

    /// The header names this policy sets (lower-case): removed from every incoming request.
    pub fn forward_headers(&self) -> impl Iterator<Item = &str> {
        self.forward.iter().map(|(_, header)| &**header)
    }
}

fn prefix(digest: &[u8]) -> u64 {
    let mut head = [0; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head)
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// The query of a request target (after the first `?`), if any.
fn split_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (target, None),
    }
}

/// Whether a query segment (`name=value` or `name`) is the parameter `name`, comparing the
/// decoded name (`%61pi_key` is `api_key`).
fn segment_is(segment: &[u8], name: &str) -> bool {
    let raw = segment.split(|&b| b == b'=').next().unwrap_or_default();
    *form_decode(raw) == *name.as_bytes()
}

/// The decoded value of the query parameter `name` of `target`: `Ok(None)` when absent,
/// `Invalid` when given more than once (which of two keys is meant is not ours to guess).
pub fn query_param<'a>(target: &'a [u8], name: &str) -> Result<Option<Cow<'a, [u8]>>, AuthError> {
    let Some(query) = split_query(target).1 else {
        return Ok(None);
    };
    let mut found = None;
    for segment in query.split(|&b| b == b'&') {
        if segment_is(segment, name) {
            if found.is_some() {
                return Err(AuthError::Invalid(Invalid::AmbiguousApiKey));
            }
            let value = match segment.iter().position(|&b| b == b'=') {
                Some(eq) => &segment[eq + 1..],
                None => &[][..],
            };
            found = Some(form_decode(value));
        }
    }
    Ok(found)
}

/// `target` without the query parameter `name` (every occurrence, matched by decoded name):
/// the path, the other parameters and their order and spelling kept byte for byte, the `?`
/// dropped when nothing is left. Borrowed when there is nothing to remove.
pub fn remove_query_param<'a>(target: &'a [u8], name: &str) -> Cow<'a, [u8]> {
    let (path, Some(query)) = split_query(target) else {
        return Cow::Borrowed(target);
    };
    if !query.split(|&b| b == b'&').any(|s| segment_is(s, name)) {
        return Cow::Borrowed(target);
    }
    let mut out = Vec::with_capacity(target.len());
    out.extend_from_slice(path);
    let mut first = true;
    for segment in query.split(|&b| b == b'&').filter(|s| !segment_is(s, name)) {
        out.push(if first { b'?' } else { b'&' });
        out.extend_from_slice(segment);
        first = false;
    }
    Cow::Owned(out)
}

/// A query (without its `?`) without the parameter `name` (every occurrence, matched by
/// decoded name), the other parameters kept byte for byte: None when nothing is left.
/// Borrowed when there is nothing to remove.
pub fn remove_from_query<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    if !query.split('&').any(|s| segment_is(s.as_bytes(), name)) {
        return Some(Cow::Borrowed(query));
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|s| !segment_is(s.as_bytes(), name))
        .collect();
    (!kept.is_empty()).then(|| Cow::Owned(kept.join("&")))
}

/// application/x-www-form-urlencoded decoding (WHATWG URL §5.1): `+` is a space, `%XX` a byte;
/// a `%` not followed by two hex digits stays as it is.
fn form_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                raw.get(i + 1).and_then(|&b| hex(b)),
                raw.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(key: &[u8]) -> String {
        digest::digest(&digest::SHA256, key)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn write_keys(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join("dispatch-auth-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-keys-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn verifier(name: &str, text: &str) -> Result<ApiKeyVerifier, AuthConfigError> {
        let keys_file = write_keys(name, text);
        let verifier = ApiKeyVerifier::new(&ApiKeySpec {
            from: KeyFrom::Header("X-Api-Key".into()),
            keys_file: keys_file.clone(),
            forward: vec![
                (ApiKeyField::Consumer, "x-consumer-id".into()),
                (ApiKeyField::Plan, "x-consumer-plan".into()),
            ],
        });
        // Read once, at build: the file is not needed after (and must not pile up in /tmp).
        let _ = std::fs::remove_file(&keys_file);
        verifier
    }

    /// A key whose digest is listed is found, with its consumer and plan forwarded.
    #[test]
    fn a_listed_key_finds_its_consumer() {
        let text = format!(
            "[keys.\"{}\"]\nconsumer = \"acme\"\nplan = \"business\"\n\n[keys.\"{}\"]\nconsumer = \"solo\"\n",
            sha256_hex(b"acme-secret"),
            sha256_hex(b"solo-secret").to_uppercase()
        );
        let v = verifier("hit.toml", &text).unwrap();
        assert_eq!(v.from(), &KeyFrom::Header("x-api-key".into()));
        let acme = v.lookup(b"acme-secret").unwrap();
        assert_eq!(&*acme.consumer, "acme");
        assert_eq!(
            v.forwarded(acme),
            vec![("x-consumer-id", "acme"), ("x-consumer-plan", "business")]
        );
        let solo = v.lookup(b"solo-secret").unwrap();
        assert_eq!(v.forwarded(solo), vec![("x-consumer-id", "solo")]);
        assert_eq!(
            v.forward_headers().collect::<Vec<_>>(),
            ["x-consumer-id", "x-consumer-plan"]
        );
    }

    /// An unknown key is `Invalid token`; an empty one is `Missing authentication token`.
    #[test]
    fn an_unknown_key_is_refused() {
        let text = format!(
            "[keys.\"{}\"]\nconsumer = \"acme\"\n",
            sha256_hex(b"acme-secret")
        );
        let v = verifier("miss.toml", &text).unwrap();
        assert_eq!(
            v.lookup(b"acme-secreT"),
            Err(AuthError::Invalid(Invalid::UnknownApiKey))
        );
        assert_eq!(v.lookup(b""), Err(AuthError::Missing));
        assert_eq!(
            v.lookup(b"acme-secreT").unwrap_err().message(),
            "Invalid token"
        );
    }

    /// The constant-time comparison decides, not the map: an entry sharing the presented key's
    /// first 8 digest bytes but differing in the last byte is found by the map and refused.
    #[test]
    fn a_digest_matching_only_in_its_prefix_is_refused() {
        let mut near = sha256_hex(b"acme-secret");
        let last = if near.ends_with('0') { "1" } else { "0" };
        near.replace_range(63.., last);
        let text = format!("[keys.\"{near}\"]\nconsumer = \"acme\"\n");
        let v = verifier("near.toml", &text).unwrap();
        let digest = digest::digest(&digest::SHA256, b"acme-secret");
        assert!(v.entries.contains_key(&prefix(digest.as_ref())));
        assert_eq!(
            v.lookup(b"acme-secret"),
            Err(AuthError::Invalid(Invalid::UnknownApiKey))
        );
    }

    /// A keys file that is not what it should be fails at load, naming the file and the entry.
    #[test]
    fn bad_keys_files_fail_at_load_naming_the_file() {
        let cases = [
            (
                "short.toml",
                "[keys.\"abcd\"]\nconsumer = \"a\"\n",
                "not a SHA-256 digest",
            ),
            ("empty.toml", "[keys]\n", "has no"),
            (
                "field.toml",
                &format!(
                    "[keys.\"{}\"]\nconsumer = \"a\"\nplna = \"x\"\n",
                    sha256_hex(b"k")
                ),
                "unknown field",
            ),
            (
                "crlf.toml",
                &format!(
                    "[keys.\"{}\"]\nconsumer = \"a\\r\\nx-admin: 1\"\n",
                    sha256_hex(b"k")
                ),
                "cannot be sent as a header value",
            ),
            (
                "dup.toml",
                &format!(
                    "[keys.\"{}\"]\nconsumer = \"a\"\n[keys.\"{}\"]\nconsumer = \"b\"\n",
                    sha256_hex(b"k"),
                    sha256_hex(b"k").to_uppercase()
                ),
                "listed twice",
            ),
            ("syntax.toml", "[keys\n", "line 1"),
        ];
        for (name, text, expect) in cases {
            let err = verifier(name, text).err().unwrap().to_string();
            assert!(err.contains(name), "{name}: {err}");
            assert!(err.contains(expect), "{name}: {err}");
        }
        let missing = ApiKeyVerifier::new(&ApiKeySpec {
            from: KeyFrom::Query("api_key".into()),
            keys_file: "/nonexistent/keys.toml".into(),
            forward: vec![],
        });
        assert!(missing
            .err()
            .unwrap()
            .to_string()
            .contains("/nonexistent/keys.toml"));
    }

    /// The query key is read decoded, and a second copy of it is refused.
    #[test]
    fn query_param_reads_the_decoded_value_once() {
        assert_eq!(
            query_param(b"/a?x=1&api_key=k1&y=2", "api_key")
                .unwrap()
                .as_deref(),
            Some(&b"k1"[..])
        );
        assert_eq!(
            query_param(b"/a?%61pi_key=k%2B1+2", "api_key")
                .unwrap()
                .as_deref(),
            Some(&b"k+1 2"[..])
        );
        assert_eq!(query_param(b"/a?api_keys=1", "api_key").unwrap(), None);
        assert_eq!(query_param(b"/a", "api_key").unwrap(), None);
        assert_eq!(
            query_param(b"/a?api_key", "api_key").unwrap().as_deref(),
            Some(&b""[..])
        );
        assert_eq!(
            query_param(b"/a?api_key=1&api%5Fkey=2", "api_key"),
            Err(AuthError::Invalid(Invalid::AmbiguousApiKey))
        );
    }

    /// Removing the key keeps the path and every other parameter, in order, byte for byte.
    #[test]
    fn remove_query_param_keeps_everything_else() {
        let cases: [(&[u8], &[u8]); 9] = [
            (b"/a?x=1&api_key=k&y=%20", b"/a?x=1&y=%20"),
            (b"/a?api_key=k", b"/a"),
            (b"/a?api_key=k&x=1", b"/a?x=1"),
            (b"/a?x=1&api_key=k", b"/a?x=1"),
            (b"/a?%61pi%5fkey=k&x=1", b"/a?x=1"),
            (b"/a?api_key=1&b=2&api_key=3", b"/a?b=2"),
            (b"/a?api_keys=1&xapi_key=2", b"/a?api_keys=1&xapi_key=2"),
            (b"/a/api_key=1", b"/a/api_key=1"),
            (b"/a?x=%zz&api_key", b"/a?x=%zz"),
        ];
        for (target, expect) in cases {
            assert_eq!(
                &*remove_query_param(target, "api_key"),
                expect,
                "{}",
                String::from_utf8_lossy(target)
            );
        }
        assert!(matches!(
            remove_query_param(b"/a?x=1", "api_key"),
            Cow::Borrowed(_)
        ));
    }
}
