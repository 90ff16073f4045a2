//! Authentication over real sockets (BEHAVIOR.md "Authentication", the 401 row of "Errors sent
//! to clients"): a gateway with `workers = 2` in front of an upstream that echoes the request
//! it got. Every refused JWT and API key is a 401 with its exact message and
//! `WWW-Authenticate`, and reaches no upstream; RS256, ES256 and HS256 (`secret_env`) tokens
//! pass with their claims forwarded as headers; identity headers sent by a client never reach
//! an upstream nor steer routing; API keys by header and by query (the parameter removed from
//! the target); reload swaps the keys or, with a missing key file, keeps the old ones;
//! `dispatch check` names a missing key file at its key; one token passes on every
//! connection of both workers (the token cache) and is refused once its `exp` has passed.
//! Regressions: a 401 with a request body unread closes the connection; `hash:header:` balance
//! and a split's `sticky` header on an identity header go by the verified value.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::auth::*;
use support::*;

/// The variable the HS256 policy's `secret_env` names. The gateway is a child process
/// (`Gateway::start` spawns `dispatch run`), so it is set in this test process, whose
/// environment every spawned gateway inherits.
const SECRET_ENV: &str = "DISPATCH_AUTH_TESTS_HS256_SECRET";
const SECRET: &str = "auth-tests-hs256-secret-of-at-least-32-bytes";

/// The API keys of the keys file (only their digests are written).
const ACME_KEY: &str = "acme-secret";
const SOLO_KEY: &str = "solo-secret";

fn set_secret_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // Set once, before the first gateway of this binary is spawned; never changed after, so
    // no spawn can see a half-written environment.
    ONCE.call_once(|| std::env::set_var(SECRET_ENV, SECRET));
}

/// Writes the key files of `config` into `dir`: `rsa.pem` (`keys().rsa`), `ec.pem`,
/// `jwks.json` (the RSA key as kid `k1`) and `api_keys.toml` (acme: business, solo: no plan).
fn write_keys(dir: &TempDir) {
    let k = keys();
    dir.write("rsa.pem", &rsa_pem(&k.rsa));
    dir.write("ec.pem", &ec_pem(&k.p256));
    dir.write(
        "jwks.json",
        &json!({"keys": [jwk_rsa(&k.rsa, "k1")]}).to_string(),
    );
    dir.write(
        "api_keys.toml",
        &format!(
            "[keys.\"{}\"]\nconsumer = \"acme\"\nplan = \"business\"\n\n[keys.\"{}\"]\nconsumer = \"solo\"\n",
            sha256_hex(ACME_KEY.as_bytes()),
            sha256_hex(SOLO_KEY.as_bytes())
        ),
    );
}

/// Two workers, one upstream, a route per policy (`/rsa`, `/ec`, `/hmac`, `/jwks`, `/short`,
/// `/key`, `/q`) and `/open` without auth. Key files are named by absolute path in `dir`.
fn config(dir: &TempDir, up: &Upstream) -> String {
    let d = dir.path().display();
    format!(
        r#"
[server]
workers = 2

[upstreams.app]
endpoints = ["{up}"]
retries = 0

[auth.rsa]
type = "jwt"
algorithms = ["RS256"]
keys = "{d}/rsa.pem"
issuer = "auth.example.com"
audience = ["dispatch"]
leeway = "30s"
required_claims = ["sub"]
forward = {{ sub = "x-user-id", roles = "x-user-roles", email = "x-user-email" }}
strip_authorization = true

[auth.ec]
type = "jwt"
algorithms = ["ES256"]
keys = "{d}/ec.pem"
forward = {{ sub = "x-user-id", roles = "x-user-roles" }}

[auth.hmac]
type = "jwt"
algorithms = ["HS256"]
secret_env = "{SECRET_ENV}"
forward = {{ sub = "x-user-id" }}

[auth.jwks]
type = "jwt"
algorithms = ["RS256"]
keys = "{d}/jwks.json"
forward = {{ sub = "x-user-id" }}

[auth.short]
type = "jwt"
algorithms = ["RS256"]
keys = "{d}/rsa.pem"
forward = {{ sub = "x-user-id" }}

[auth.partners]
type = "api_key"
header = "x-api-key"
keys_file = "{d}/api_keys.toml"
forward = {{ consumer = "x-consumer-id", plan = "x-consumer-plan" }}

[auth.by_query]
type = "api_key"
query = "api_key"
keys_file = "{d}/api_keys.toml"
forward = {{ consumer = "x-consumer-id", plan = "x-consumer-plan" }}

[routes.rsa]
paths = ["/rsa"]
upstream = "app"
auth = "rsa"

[routes.ec]
paths = ["/ec"]
upstream = "app"
auth = "ec"

[routes.hmac]
paths = ["/hmac"]
upstream = "app"
auth = "hmac"

[routes.jwks]
paths = ["/jwks"]
upstream = "app"
auth = "jwks"

[routes.short]
paths = ["/short"]
upstream = "app"
auth = "short"

[routes.key]
paths = ["/key"]
upstream = "app"
auth = "partners"

[routes.query]
paths = ["/q"]
upstream = "app"
auth = "by_query"

[routes.open]
paths = ["/open"]
upstream = "app"
"#,
        up = up.url()
    )
}

/// A running gateway of `config`, its echoing upstream and the directory of its key files
/// (the fields drop in order: the gateway before the files it names).
struct Fixture {
    gw: Gateway,
    up: Upstream,
    keys: TempDir,
}

fn start() -> Fixture {
    set_secret_env();
    let keys = TempDir::new();
    write_keys(&keys);
    let up = Upstream::echo();
    let gw = Gateway::start(&config(&keys, &up));
    Fixture { gw, up, keys }
}

/// Claims every policy accepts: `sub`, `iss`, `aud`, `iat`, `exp` (in 10 minutes), and the
/// forwarded `roles` (an array) and `email`.
fn claims() -> Value {
    let now = unix_now();
    json!({
        "sub": "user-1",
        "iss": "auth.example.com",
        "aud": "dispatch",
        "iat": now - 10,
        "exp": now + 600,
        "roles": ["admin", "ops"],
        "email": "user-1@example.com",
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().expect("claims object").remove(key);
    base
}

/// An RS256 token of `claims` signed by the key the `rsa` policy holds.
fn token(claims: &Value) -> String {
    rs256(&keys().rsa, None, claims)
}

fn bearer(target: &str, token: &str) -> Req {
    Req::get(target).header("Authorization", &format!("Bearer {token}"))
}

// ---- JWT refusals ----

/// Every way a JWT is refused is a 401 with BEHAVIOR.md's message and the RFC 6750 challenge
/// naming the reason, and none of those requests reaches the upstream.
#[test]
fn every_refused_jwt_is_a_401_with_its_challenge_and_reaches_no_upstream() {
    let f = start();
    let k = keys();
    let now = unix_now();
    let good = token(&claims());
    let (head64, rest) = good.split_once('.').unwrap();
    let sig64 = rest.rsplit_once('.').unwrap().1;
    let other_body = b64(with(claims(), "sub", json!("admin")).to_string().as_bytes());
    let der = {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair;
        k.rsa.public_key().as_der().unwrap().as_ref().to_vec()
    };
    let pem = rsa_pem(&k.rsa);
    let oversized = token(&with(claims(), "pad", json!("x".repeat(8 * 1024))));
    assert!(oversized.len() > 8 * 1024 && oversized.len() < 12 * 1024);

    let invalid = "Invalid token";
    let cases: Vec<(&str, Req, &str, String)> = vec![
        (
            "alg none",
            bearer(
                "/rsa",
                &jws(&json!({"alg": "none"}), &claims(), Signer::Unsigned),
            ),
            invalid,
            challenge("The token algorithm is not allowed"),
        ),
        (
            "alg None, signed",
            bearer(
                "/rsa",
                &jws(&json!({"alg": "None"}), &claims(), Signer::Rsa(&k.rsa)),
            ),
            invalid,
            challenge("The token algorithm is not allowed"),
        ),
        (
            "HS256 keyed with the RSA public key's PEM (algorithm confusion)",
            bearer(
                "/rsa",
                &jws(
                    &json!({"alg": "HS256"}),
                    &claims(),
                    Signer::Hmac(pem.as_bytes()),
                ),
            ),
            invalid,
            challenge("The token algorithm is not allowed"),
        ),
        (
            "HS256 keyed with the RSA public key's DER (algorithm confusion)",
            bearer(
                "/rsa",
                &jws(&json!({"alg": "HS256"}), &claims(), Signer::Hmac(&der)),
            ),
            invalid,
            challenge("The token algorithm is not allowed"),
        ),
        (
            "expired beyond the leeway",
            bearer("/rsa", &token(&with(claims(), "exp", json!(now - 120)))),
            "Token expired",
            r#"Bearer realm="dispatch", error="invalid_token", error_description="The token expired""#
                .to_string(),
        ),
        (
            "no exp",
            bearer("/rsa", &token(&without(claims(), "exp"))),
            invalid,
            challenge("The token has no expiry"),
        ),
        (
            "nbf in the future",
            bearer("/rsa", &token(&with(claims(), "nbf", json!(now + 600)))),
            invalid,
            challenge("The token is not valid yet"),
        ),
        (
            "iat in the future",
            bearer("/rsa", &token(&with(claims(), "iat", json!(now + 600)))),
            invalid,
            challenge("The token is issued in the future"),
        ),
        (
            "wrong iss",
            bearer(
                "/rsa",
                &token(&with(claims(), "iss", json!("evil.example.com"))),
            ),
            invalid,
            challenge("The token issuer is not accepted"),
        ),
        (
            "wrong aud",
            bearer(
                "/rsa",
                &token(&with(claims(), "aud", json!(["other", "api"]))),
            ),
            invalid,
            challenge("The token audience is not accepted"),
        ),
        (
            "signed by another key",
            bearer("/rsa", &rs256(&k.rsa2, None, &claims())),
            invalid,
            challenge("The token signature is invalid"),
        ),
        (
            "claims swapped under a good signature",
            bearer("/rsa", &format!("{head64}.{other_body}.{sig64}")),
            invalid,
            challenge("The token signature is invalid"),
        ),
        (
            "unknown kid in a JWKS",
            bearer("/jwks", &rs256(&k.rsa, Some("k2"), &claims())),
            invalid,
            challenge("The token key is unknown"),
        ),
        (
            "malformed base64",
            bearer("/rsa", &format!("{head64}.eyJ*c3ViIjoi.{sig64}")),
            invalid,
            challenge("The token is malformed"),
        ),
        (
            "padded base64",
            bearer("/rsa", &format!("{head64}=.{}", rest)),
            invalid,
            challenge("The token is malformed"),
        ),
        (
            "two segments",
            bearer("/rsa", &format!("{head64}.{other_body}")),
            invalid,
            challenge("The token is malformed"),
        ),
        (
            "over 8 KiB",
            bearer("/rsa", &oversized),
            invalid,
            challenge("The token is too large"),
        ),
        (
            "required claim missing",
            bearer("/rsa", &token(&without(claims(), "sub"))),
            invalid,
            challenge("The token lacks a required claim"),
        ),
        (
            "two Authorization fields, each with a good token",
            bearer("/rsa", &good).header("Authorization", &format!("Bearer {good}")),
            invalid,
            challenge("The token is malformed"),
        ),
        (
            "no Authorization",
            Req::get("/rsa"),
            "Missing authentication token",
            CHALLENGE_MISSING.to_string(),
        ),
        (
            "Basic scheme",
            Req::get("/rsa").header("Authorization", "Basic dXNlcjpwYXNz"),
            "Missing authentication token",
            CHALLENGE_MISSING.to_string(),
        ),
        (
            "Bearer without a token",
            Req::get("/rsa").header("Authorization", "Bearer "),
            "Missing authentication token",
            CHALLENGE_MISSING.to_string(),
        ),
    ];
    for (name, req, message, want) in &cases {
        let resp = send_request(f.gw.addr(), req);
        println!("case: {name}");
        assert_refused(&resp, message, want);
    }
    assert_eq!(
        f.up.request_count(),
        0,
        "a refused request reached the upstream"
    );

    // The same gateway passes the good token: the refusals above were the tokens' doing.
    let seen = seen(&send_request(f.gw.addr(), &bearer("/rsa", &good)));
    assert_eq!(seen.one("x-user-id"), Some("user-1"));
    assert_eq!(f.up.request_count(), 1);
}

/// `exp` is checked with the policy's leeway: 10 s past `exp` under a 30 s leeway passes.
#[test]
fn a_token_expired_within_the_leeway_is_accepted() {
    let f = start();
    let t = token(&with(claims(), "exp", json!(unix_now() - 10)));
    let seen = seen(&send_request(f.gw.addr(), &bearer("/rsa", &t)));
    assert_eq!(seen.one("x-user-id"), Some("user-1"));
}

// ---- JWT success ----

/// An RS256 token passes with its claims forwarded (an array joined with ","), and
/// `strip_authorization = true` removes `Authorization` (the scheme is case-insensitive).
#[test]
fn rs256_forwards_its_claims_and_strips_authorization() {
    let f = start();
    let t = token(&claims());
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let req = Req::get("/rsa/x?a=1").header("Authorization", &format!("{scheme} {t}"));
        let seen = seen(&send_request(f.gw.addr(), &req));
        assert_eq!(seen.target, "/rsa/x?a=1");
        assert_eq!(seen.one("x-user-id"), Some("user-1"));
        assert_eq!(seen.one("x-user-roles"), Some("admin,ops"));
        assert_eq!(seen.one("x-user-email"), Some("user-1@example.com"));
        assert_eq!(seen.all("authorization"), Vec::<&str>::new(), "{scheme}");
    }
    // Through a JWKS, by kid.
    let t = rs256(&keys().rsa, Some("k1"), &claims());
    let seen = seen(&send_request(f.gw.addr(), &bearer("/jwks", &t)));
    assert_eq!(seen.one("x-user-id"), Some("user-1"));
}

/// An ES256 token passes with its claims forwarded; without `strip_authorization` the
/// upstream gets `Authorization` as the client sent it.
#[test]
fn es256_forwards_its_claims_and_keeps_authorization() {
    let f = start();
    let t = jws(
        &json!({"alg": "ES256", "typ": "JWT"}),
        &with(claims(), "sub", json!("user-ec")),
        Signer::Ec(&keys().p256),
    );
    let seen = seen(&send_request(f.gw.addr(), &bearer("/ec", &t)));
    assert_eq!(seen.one("x-user-id"), Some("user-ec"));
    assert_eq!(seen.one("x-user-roles"), Some("admin,ops"));
    assert_eq!(
        seen.one("x-user-email"),
        None,
        "not in this policy's forward"
    );
    assert_eq!(seen.all("authorization"), vec![format!("Bearer {t}")]);
    // The RSA key's token is not this policy's.
    assert_refused(
        &send_request(f.gw.addr(), &bearer("/ec", &token(&claims()))),
        "Invalid token",
        &challenge("The token algorithm is not allowed"),
    );
}

/// An HS256 policy takes its secret from `secret_env`, read from the gateway's environment.
#[test]
fn hs256_with_the_secret_of_secret_env_passes() {
    let f = start();
    let hs256 = |secret: &[u8]| {
        jws(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &with(claims(), "sub", json!("user-hs")),
            Signer::Hmac(secret),
        )
    };
    let seen = seen(&send_request(
        f.gw.addr(),
        &bearer("/hmac", &hs256(SECRET.as_bytes())),
    ));
    assert_eq!(seen.one("x-user-id"), Some("user-hs"));
    assert_refused(
        &send_request(
            f.gw.addr(),
            &bearer("/hmac", &hs256(b"another-secret-of-at-least-32-bytes!")),
        ),
        "Invalid token",
        &challenge("The token signature is invalid"),
    );
}

// ---- Identity-header spoofing ----

/// Identity headers sent by a client (any letter case, any number of times) never reach an
/// upstream: on an auth route the upstream sees only the verified value, or none when the
/// token has no such claim; on a route without auth it sees none at all.
#[test]
fn identity_headers_from_the_client_never_reach_the_upstream() {
    let f = start();
    let spoof = |req: Req| {
        req.header("X-User-Id", "admin")
            .header("x-USER-id", "root")
            .header("X-User-Roles", "superuser")
            .header("X-Consumer-Id", "evil")
            .header("x-consumer-plan", "enterprise")
            .header("X-Kept", "1")
    };

    let seen_auth = seen(&send_request(
        f.gw.addr(),
        &spoof(bearer("/rsa", &token(&without(claims(), "roles")))),
    ));
    assert_eq!(seen_auth.all("x-user-id"), vec!["user-1"]);
    assert_eq!(
        seen_auth.all("x-user-roles"),
        Vec::<&str>::new(),
        "no roles claim: the client's value is dropped, not kept"
    );
    assert_eq!(seen_auth.all("x-user-email"), vec!["user-1@example.com"]);

    let seen_key = seen(&send_request(
        f.gw.addr(),
        &spoof(Req::get("/key").header("X-Api-Key", SOLO_KEY)),
    ));
    assert_eq!(seen_key.all("x-consumer-id"), vec!["solo"]);
    assert_eq!(
        seen_key.all("x-consumer-plan"),
        Vec::<&str>::new(),
        "solo has no plan"
    );
    assert_eq!(seen_key.all("x-user-id"), Vec::<&str>::new());

    let seen_open = seen(&send_request(f.gw.addr(), &spoof(Req::get("/open"))));
    for name in [
        "x-user-id",
        "x-user-roles",
        "x-user-email",
        "x-consumer-id",
        "x-consumer-plan",
    ] {
        assert_eq!(seen_open.all(name), Vec::<&str>::new(), "{name} on /open");
    }
    // Only the identity headers go: the test's other field arrives on every route.
    for s in [&seen_auth, &seen_key, &seen_open] {
        assert_eq!(s.all("x-kept"), vec!["1"]);
    }
}

/// A route's header predicate on an identity header could never be met (the header is
/// removed from every request before routing), so such a config is refused at load, located,
/// rather than left to route as if the predicate were absent.
#[test]
fn a_route_header_predicate_on_an_identity_header_is_refused_at_load() {
    let keys_dir = TempDir::new();
    write_keys(&keys_dir);
    let d = keys_dir.path().display();
    let out = check(&format!(
        r#"
[upstreams.app]
endpoints = ["http://127.0.0.1:9"]

[auth.rsa]
type = "jwt"
algorithms = ["RS256"]
keys = "{d}/rsa.pem"
forward = {{ sub = "x-user-id" }}

[routes.admin]
paths = ["/p"]
headers = {{ "x-user-id" = "admin" }}
upstream = "app"
"#
    ));
    let stderr = &out.stderr;
    assert_eq!(out.code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            ":13:27: routes.admin.headers.x-user-id: \"x-user-id\" is an identity header (auth.rsa forwards it): it is removed from every request before routing, so no route can match on it"
        ),
        "{stderr}"
    );
}

// ---- API keys ----

/// A key in its header passes, and the upstream gets the entry's consumer and plan.
#[test]
fn an_api_key_in_its_header_forwards_the_consumer_and_plan() {
    let f = start();
    let seen_acme = seen(&send_request(
        f.gw.addr(),
        &Req::get("/key").header("X-API-Key", ACME_KEY),
    ));
    assert_eq!(seen_acme.one("x-consumer-id"), Some("acme"));
    assert_eq!(seen_acme.one("x-consumer-plan"), Some("business"));
    let seen_solo = seen(&send_request(
        f.gw.addr(),
        &Req::get("/key").header("x-api-key", SOLO_KEY),
    ));
    assert_eq!(seen_solo.one("x-consumer-id"), Some("solo"));
    assert_eq!(seen_solo.one("x-consumer-plan"), None);
}

/// A key in the query passes, and the upstream's target has that parameter removed (matched
/// by its decoded name, every copy), the other parameters kept byte for byte in order, and
/// the `?` dropped when nothing is left.
#[test]
fn an_api_key_in_the_query_is_removed_from_the_forwarded_target() {
    let f = start();
    let cases = [
        ("/q?api_key=acme-secret", "/q"),
        ("/q/x?api_key=acme-secret", "/q/x"),
        (
            "/q?x=1&api_key=acme-secret&y=a+b%2Fc&z&w=%7e",
            "/q?x=1&y=a+b%2Fc&z&w=%7e",
        ),
        ("/q?%61pi_key=acme-secret&x=1", "/q?x=1"),
        ("/q?x=1&api%5Fkey=acme%2Dsecret", "/q?x=1"),
        (
            "/q?api_keys=2&api_key=acme-secret&xapi_key=3",
            "/q?api_keys=2&xapi_key=3",
        ),
    ];
    for (sent, want) in cases {
        let seen = seen(&send_request(f.gw.addr(), &Req::get(sent)));
        assert_eq!(seen.target, want, "sent {sent}");
        assert_eq!(seen.one("x-consumer-id"), Some("acme"), "sent {sent}");
        assert_eq!(seen.one("x-consumer-plan"), Some("business"), "sent {sent}");
    }
}

/// An unknown key, a missing key and a query key given twice are 401s that reach no upstream.
#[test]
fn unknown_and_missing_api_keys_are_refused() {
    let f = start();
    let unknown = challenge("The API key is unknown");
    let cases: [(&str, Req, &str, String); 7] = [
        (
            "unknown header key",
            Req::get("/key").header("X-Api-Key", "acme-secreT"),
            "Invalid token",
            unknown.clone(),
        ),
        (
            "no header",
            Req::get("/key"),
            "Missing authentication token",
            CHALLENGE_MISSING.to_string(),
        ),
        (
            "empty header",
            Req::get("/key").header("X-Api-Key", ""),
            "Missing authentication token",
            CHALLENGE_MISSING.to_string(),
        ),
        (
            "a bearer token instead",
            bearer("/key", ACME_KEY),
            "Missing authentication token",
            CHALLENGE_MISSING.to_string(),
        ),
        (
            "unknown query key",
            Req::get("/q?api_key=nobody&x=1"),
            "Invalid token",
            unknown,
        ),
        (
            "no query key",
            Req::get("/q?x=1&api_keys=acme-secret"),
            "Missing authentication token",
            CHALLENGE_MISSING.to_string(),
        ),
        (
            "query key twice",
            Req::get("/q?api_key=acme-secret&%61pi_key=acme-secret"),
            "Invalid token",
            challenge("The API key is given more than once"),
        ),
    ];
    for (name, req, message, want) in &cases {
        println!("case: {name}");
        assert_refused(&send_request(f.gw.addr(), req), message, want);
    }
    assert_eq!(
        f.up.request_count(),
        0,
        "a refused key reached the upstream"
    );
    seen(&send_request(
        f.gw.addr(),
        &Req::get("/key").header("X-Api-Key", ACME_KEY),
    ));
    assert_eq!(f.up.request_count(), 1);
}

// ---- Reload ----

fn reload(gw: &Gateway) -> Response {
    send_request(gw.admin_addr(), &Req::post("/reload", b""))
}

/// A reload after the key file changed (a new PEM) makes the new signer's tokens pass and
/// the old signer's fail, also for a token the old keys verified and cached on this
/// connection's worker.
#[test]
fn a_reload_with_a_new_key_file_swaps_the_signer() {
    let f = start();
    let old = token(&claims());
    let new = rs256(&keys().rsa2, None, &claims());
    let mut c = Client::connect(f.gw.addr());
    seen(&c.request(&bearer("/rsa", &old)));
    assert_refused(
        &c.request(&bearer("/rsa", &new)),
        "Invalid token",
        &challenge("The token signature is invalid"),
    );

    f.keys.write("rsa.pem", &rsa_pem(&keys().rsa2));
    let r = reload(&f.gw);
    assert_eq!(r.status, 200, "POST /reload: {}", r.text());

    // POST /reload answers once the new config is active: the next request uses it.
    let signature = challenge("The token signature is invalid");
    assert_refused(
        &c.request(&bearer("/rsa", &old)),
        "Invalid token",
        &signature,
    );
    assert_eq!(
        seen(&c.request(&bearer("/rsa", &new))).one("x-user-id"),
        Some("user-1")
    );
    for _ in 0..8 {
        let mut fresh = Client::connect(f.gw.addr());
        seen(&fresh.request(&bearer("/rsa", &new)));
        assert_refused(
            &fresh.request(&bearer("/rsa", &old)),
            "Invalid token",
            &signature,
        );
    }
}

/// A reload whose key file is missing is refused with the config error naming the key and
/// the file, and the running keys keep verifying (tokens never seen before included, so the
/// answer is not the token cache's).
#[test]
fn a_reload_with_a_missing_key_file_is_refused_and_the_old_keys_keep_working() {
    let f = start();
    seen(&send_request(
        f.gw.addr(),
        &bearer("/rsa", &token(&claims())),
    ));

    let pem = f.keys.path().join("rsa.pem");
    std::fs::remove_file(&pem).unwrap();
    let r = reload(&f.gw);
    assert_eq!(r.status, 400, "POST /reload: {}", r.text());
    assert_eq!(r.json()["error"]["code"], json!(400), "{}", r.text());
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let want = format!("auth.rsa.keys: cannot read {}: ", pem.display());
    assert!(
        message.starts_with(&format!("{}:", f.gw.config_path().display()))
            && message.contains(&want),
        "reload error {message:?} should name the config file and contain {want:?}"
    );

    for i in 0..8 {
        let fresh = token(&with(claims(), "jti", json!(format!("after-{i}"))));
        let seen = seen(&send_request(f.gw.addr(), &bearer("/rsa", &fresh)));
        assert_eq!(seen.one("x-user-id"), Some("user-1"));
    }
    assert_refused(
        &send_request(
            f.gw.addr(),
            &bearer("/rsa", &rs256(&keys().rsa2, None, &claims())),
        ),
        "Invalid token",
        &challenge("The token signature is invalid"),
    );
}

// ---- dispatch check ----

/// The one `FILE:LINE:COL: message` line of a failed `dispatch check`: (line, col, message).
fn error_at(out: &gateway::Output) -> (usize, usize, String) {
    assert_eq!(out.code, Some(1), "expected exit 1; output:\n{}", out.all());
    let prefix = format!("{}:", out.config_path.display());
    let all = out.all();
    let lines: Vec<&str> = all
        .lines()
        .filter_map(|l| l.find(&prefix).map(|i| &l[i + prefix.len()..]))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{all}");
    let mut parts = lines[0].splitn(3, ':');
    let line = parts.next().and_then(|l| l.parse().ok()).expect("line");
    let col = parts.next().and_then(|c| c.parse().ok()).expect("col");
    (line, col, parts.next().expect("message").trim().to_string())
}

/// `dispatch check` on a config whose key file (a JWT policy's `keys`, an API-key policy's
/// `keys_file`) is missing exits 1 with `FILE:LINE:COL: auth.NAME.KEY: cannot read PATH: ...`,
/// the path resolved against the config file's directory.
#[test]
fn dispatch_check_reports_a_missing_key_file_at_its_key() {
    for (policy, key) in [
        (
            "type = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = \"keys/missing.pem\"",
            "keys",
        ),
        (
            "type = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"keys/missing.pem\"",
            "keys_file",
        ),
    ] {
        let toml = format!(
            "[server]\nlisten = [\"{}\"]\nworkers = 2\n\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:9\"]\n\n[auth.gate]\n{policy}\n\n[routes.r]\npaths = [\"/\"]\nupstream = \"app\"\nauth = \"gate\"\n",
            free_addr()
        );
        let out = check(&toml);
        let (line, col, message) = error_at(&out);
        // At the value: the line of `KEY = "keys/missing.pem"`, the column of its quote.
        let (key_line, text) = toml
            .lines()
            .enumerate()
            .find(|(_, l)| l.starts_with(&format!("{key} = ")))
            .unwrap();
        let value_col = text.find('"').unwrap() + 1;
        assert_eq!((line, col), (key_line + 1, value_col), "{}", out.all());
        let missing = out.config_path.parent().unwrap().join("keys/missing.pem");
        assert!(
            message.starts_with(&format!(
                "auth.gate.{key}: cannot read {}: ",
                missing.display()
            )),
            "{message}"
        );
    }
}

// ---- The token cache ----

/// One token on 24 connections, 4 requests each, passes every time on both workers (each
/// worker pools one upstream connection, so two upstream connections mean both served).
#[test]
fn one_token_on_many_connections_over_both_workers_always_passes() {
    let f = start();
    let t = token(&claims());
    for _ in 0..24 {
        let mut c = Client::connect(f.gw.addr());
        for _ in 0..4 {
            let seen = seen(&c.request(&bearer("/rsa", &t)));
            assert_eq!(seen.one("x-user-id"), Some("user-1"));
            assert_eq!(seen.one("x-user-roles"), Some("admin,ops"));
        }
    }
    assert_eq!(f.up.request_count(), 96);
    assert_eq!(
        f.up.connections(),
        2,
        "24 connections over 2 workers should give one pooled upstream connection per worker"
    );
}

/// Seconds since the epoch with the fraction, now.
fn unix_secs_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A token verified and cached on a connection's worker passes until its `exp` and is
/// `Token expired` from then on (policy `short`: no leeway). Every answer is checked against
/// the time it was sent or received, so the boundary is exact whatever the poll's pace.
#[test]
fn a_cached_token_is_refused_once_its_exp_has_passed() {
    let f = start();
    let exp = unix_now() + 2;
    let t = token(&with(claims(), "exp", json!(exp)));
    let mut c = Client::connect(f.gw.addr());
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut passed = 0;
    loop {
        let sent = unix_secs_f64();
        let r = c.request(&bearer("/short", &t));
        let received = unix_secs_f64();
        if r.status == 200 {
            // The gateway's clock (whole seconds, read after `sent`) was before exp.
            assert!(sent < exp as f64, "passed when sent at {sent}, exp {exp}");
            passed += 1;
        } else {
            assert_refused(
                &r,
                "Token expired",
                r#"Bearer realm="dispatch", error="invalid_token", error_description="The token expired""#,
            );
            assert!(
                received >= exp as f64,
                "refused at {received}, before exp {exp}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still passing 4 s after exp {exp}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(passed >= 1, "the token never passed before its exp");
    assert_refused(
        &send_request(f.gw.addr(), &bearer("/short", &t)),
        "Token expired",
        r#"Bearer realm="dispatch", error="invalid_token", error_description="The token expired""#,
    );
}

// ---- Regressions ----

/// A 401 answered before a request's body was read kept the connection open, so the body was
/// read as the next request: a request smuggled inside a refused POST reached the upstream,
/// and the client's next request got its answer. A refusal now closes the connection when a
/// body follows the head (as a 404 or 405 does), and keeps it open when none does.
#[test]
fn a_401_before_the_body_is_read_closes_the_connection_instead_of_reading_the_body_as_a_request() {
    let f = start();
    let smuggled = b"GET /open/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let with_bodies = [
        Req::post("/rsa", smuggled),
        Req::post("/rsa", b"").chunked(&[smuggled]),
        Req::post("/key", smuggled),
        Req::post("/rsa", smuggled).header("Expect", "100-continue"),
    ];
    for req in &with_bodies {
        let mut c = Client::connect(f.gw.addr());
        let r = c.request(req);
        assert_refused(&r, "Missing authentication token", CHALLENGE_MISSING);
        assert!(
            r.interim.is_empty(),
            "no 100 Continue for a refused request"
        );
        assert!(!r.keeps_alive(), "a 401 with an unread body must close");
        c.assert_closed(Duration::from_secs(5));
    }
    assert_eq!(
        f.up.request_count(),
        0,
        "the refused body reached the upstream"
    );

    // Without a body, the connection serves on.
    let mut c = Client::connect(f.gw.addr());
    let r = c.request(&Req::get("/rsa"));
    assert_refused(&r, "Missing authentication token", CHALLENGE_MISSING);
    assert!(r.keeps_alive());
    seen(&c.request(&bearer("/rsa", &token(&claims()))));
    // A client that asked to close gets its close.
    let mut c = Client::connect(f.gw.addr());
    let r = c.request(&Req::get("/rsa").header("Connection", "close"));
    assert_refused(&r, "Missing authentication token", CHALLENGE_MISSING);
    c.assert_closed(Duration::from_secs(5));
}

/// `balance = "hash:header:x-user-id"` hashed the client's field, which phase 0 had already
/// dropped as an identity header, so every request fell back to round robin: one user's
/// requests were spread over every endpoint. The key is now the verified value the upstream
/// gets; a client sending the header itself (on a route without auth) still drives nothing.
#[test]
fn hash_balance_on_an_identity_header_follows_the_verified_identity() {
    set_secret_env();
    let keys_dir = TempDir::new();
    write_keys(&keys_dir);
    let a = Upstream::echo();
    let b = Upstream::echo();
    let d = keys_dir.path().display();
    let gw = Gateway::start(&format!(
        r#"
[server]
workers = 2

[upstreams.pool]
endpoints = ["{a}", "{b}"]
balance = "hash:header:x-user-id"

[auth.rsa]
type = "jwt"
algorithms = ["RS256"]
keys = "{d}/rsa.pem"
forward = {{ sub = "x-user-id" }}

[routes.me]
paths = ["/me"]
upstream = "pool"
auth = "rsa"

[routes.open]
paths = ["/open"]
upstream = "pool"
"#,
        a = a.url(),
        b = b.url()
    ));
    assert_verified_identity_picks_the_side(&gw, &a, &b);
}

/// A split with `sticky = "header:x-user-id"` on an auth route drew its side at random: the
/// split phase read the client's field, which phase 0 had dropped as an identity header,
/// before the auth phase verified one. The side now follows the verified value; a client
/// sending the header itself (on a route without auth) still steers nothing.
#[test]
fn a_split_sticky_on_an_identity_header_follows_the_verified_identity() {
    set_secret_env();
    let keys_dir = TempDir::new();
    write_keys(&keys_dir);
    let a = Upstream::echo();
    let b = Upstream::echo();
    let d = keys_dir.path().display();
    let gw = Gateway::start(&format!(
        r#"
[server]
workers = 2

[upstreams.a]
endpoints = ["{a}"]

[upstreams.b]
endpoints = ["{b}"]

[auth.rsa]
type = "jwt"
algorithms = ["RS256"]
keys = "{d}/rsa.pem"
forward = {{ sub = "x-user-id" }}

[routes.me]
paths = ["/me"]
auth = "rsa"
split = [{{ upstream = "a", weight = 50 }}, {{ upstream = "b", weight = 50 }}]
sticky = "header:x-user-id"

[routes.open]
paths = ["/open"]
split = [{{ upstream = "a", weight = 50 }}, {{ upstream = "b", weight = 50 }}]
sticky = "header:x-user-id"
"#,
        a = a.url(),
        b = b.url()
    ));
    assert_verified_identity_picks_the_side(&gw, &a, &b);
}

/// Asserts that `/me` (auth `rsa`, forwarding `sub` as `x-user-id`) keeps each of 16 verified
/// users on one of `a` and `b` for 4 requests, that both serve someone (all on one side by
/// chance: 2 in 2^16), and that `/open` with a client-sent `X-User-Id` reaches both over 40
/// requests (the forged header drives nothing; one side by chance: at most 2 in 2^40 for a
/// random draw, never for a round robin).
fn assert_verified_identity_picks_the_side(gw: &Gateway, a: &Upstream, b: &Upstream) {
    for user in 0..16 {
        let t = token(&with(claims(), "sub", json!(format!("user-{user}"))));
        let (a0, b0) = (a.request_count(), b.request_count());
        for _ in 0..4 {
            let seen = seen(&send_request(gw.addr(), &bearer("/me", &t)));
            assert_eq!(seen.one("x-user-id"), Some(format!("user-{user}").as_str()));
        }
        let (da, db) = (a.request_count() - a0, b.request_count() - b0);
        assert!(
            (da, db) == (4, 0) || (da, db) == (0, 4),
            "user-{user}'s requests went to both sides: {da} on a, {db} on b"
        );
    }
    assert!(a.request_count() > 0 && b.request_count() > 0);
    let (a0, b0) = (a.request_count(), b.request_count());
    for _ in 0..40 {
        seen(&send_request(
            gw.addr(),
            &Req::get("/open").header("X-User-Id", "admin"),
        ));
    }
    assert!(
        a.request_count() > a0 && b.request_count() > b0,
        "a client-sent identity header picked the side"
    );
}
