//! Table tests of the cache rules: Cache-Control parsing, bypass and refresh, storability and
//! freshness, age and state, Vary and keys, conditional requests, HTTP-dates.

use super::rules::*;
use crate::http::parse::Header;

/// A table row's header fields, as `(name, value)` pairs.
type Fields<'a> = &'a [(&'a str, &'a str)];

/// Builds header fields from `(name, value)` pairs.
fn h<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<Header<'a>> {
    pairs
        .iter()
        .map(|(name, value)| Header {
            name,
            value: value.as_bytes(),
        })
        .collect()
}

fn cc(lines: &[&'static str]) -> CacheControl {
    let headers: Vec<Header<'_>> = lines
        .iter()
        .map(|v| Header {
            name: "Cache-Control",
            value: v.as_bytes(),
        })
        .collect();
    CacheControl::parse(&headers)
}

const RULE: RuleTimes = RuleTimes {
    ttl: 300,
    stale_while_revalidate: 60,
    stale_if_error: 600,
};

/// 1994-11-06 08:49:37 UTC.
const NOV_1994: u64 = 784_111_777;

#[test]
fn cache_control_parses_table() {
    let none = CacheControl::default();
    let cases: &[(&[&str], CacheControl)] = &[
        (
            &["max-age=60"],
            CacheControl {
                max_age: Some(60),
                ..none
            },
        ),
        (
            &["MAX-AGE=60, Public"],
            CacheControl {
                max_age: Some(60),
                public: true,
                ..none
            },
        ),
        (
            &["max-age=\"60\""],
            CacheControl {
                max_age: Some(60),
                ..none
            },
        ),
        (
            &["max-age=0"],
            CacheControl {
                max_age: Some(0),
                ..none
            },
        ),
        // Repeated fields are one list.
        (
            &["public", "max-age=5", "s-maxage=7"],
            CacheControl {
                public: true,
                max_age: Some(5),
                s_maxage: Some(7),
                ..none
            },
        ),
        // A comma inside a quoted string does not split the list.
        (
            &["no-cache=\"set-cookie, x-a\", max-age=9"],
            CacheControl {
                no_cache: true,
                max_age: Some(9),
                ..none
            },
        ),
        (
            &["private=\"x\\\"y\", no-store"],
            CacheControl {
                private: true,
                no_store: true,
                ..none
            },
        ),
        // Empty elements and whitespace are ignored; unknown directives too.
        (
            &[" , ,max-age = 3 ,, foo=\"bar\", ext"],
            CacheControl {
                max_age: Some(3),
                ..none
            },
        ),
        (
            &["stale-while-revalidate=30, stale-if-error=400"],
            CacheControl {
                stale_while_revalidate: Some(30),
                stale_if_error: Some(400),
                ..none
            },
        ),
        (
            &["must-revalidate, proxy-revalidate"],
            CacheControl {
                must_revalidate: true,
                proxy_revalidate: true,
                ..none
            },
        ),
        // Huge delta-seconds saturate at 2^31 (RFC 9111 §1.2.2).
        (
            &["max-age=99999999999999999999999"],
            CacheControl {
                max_age: Some(1 << 31),
                ..none
            },
        ),
        // Same value twice is fine; different values are invalid.
        (
            &["max-age=5", "max-age=5"],
            CacheControl {
                max_age: Some(5),
                ..none
            },
        ),
        (
            &["max-age=5, max-age=6"],
            CacheControl {
                max_age: Some(5),
                invalid: true,
                ..none
            },
        ),
        // Malformed delta-seconds.
        (
            &["max-age=abc"],
            CacheControl {
                invalid: true,
                ..none
            },
        ),
        (
            &["max-age="],
            CacheControl {
                invalid: true,
                ..none
            },
        ),
        (
            &["max-age"],
            CacheControl {
                invalid: true,
                ..none
            },
        ),
        (
            &["max-age=-1"],
            CacheControl {
                invalid: true,
                ..none
            },
        ),
        (
            &["max-age=1.5"],
            CacheControl {
                invalid: true,
                ..none
            },
        ),
        // Malformed syntax.
        (
            &["no-cache=\"unterminated"],
            CacheControl {
                invalid: true,
                ..none
            },
        ),
        (
            &["=60"],
            CacheControl {
                invalid: true,
                ..none
            },
        ),
        (
            &["max-age=60 public"],
            CacheControl {
                invalid: true,
                ..none
            },
        ),
        (&[""], none),
    ];
    for (lines, want) in cases {
        assert_eq!(cc(lines), *want, "{lines:?}");
    }
}

#[test]
fn request_bypass_table() {
    let cases: &[(&str, Fields, bool, Option<Bypass>)] = &[
        ("GET", &[], false, None),
        ("HEAD", &[], false, None),
        ("POST", &[], false, Some(Bypass::Method)),
        ("get", &[], false, Some(Bypass::Method)),
        ("OPTIONS", &[], true, Some(Bypass::Method)),
        (
            "GET",
            &[("cache-control", "No-Store")],
            false,
            Some(Bypass::NoStore),
        ),
        (
            "GET",
            &[
                ("Cache-Control", "max-age=0"),
                ("Cache-Control", "no-store"),
            ],
            true,
            Some(Bypass::NoStore),
        ),
        (
            "GET",
            &[("Authorization", "Bearer x")],
            false,
            Some(Bypass::Authorization),
        ),
        ("GET", &[("Cookie", "a=b")], false, Some(Bypass::Cookie)),
        (
            "GET",
            &[("Authorization", "Bearer x"), ("Cookie", "a=b")],
            true,
            None,
        ),
        ("GET", &[("Cache-Control", "no-cache")], false, None),
    ];
    for (method, headers, per_user, want) in cases {
        assert_eq!(
            request_bypass(method, &h(headers), *per_user),
            *want,
            "{method} {headers:?} {per_user}"
        );
    }
}

#[test]
fn request_refresh_table() {
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[], false),
        (&[("Cache-Control", "no-cache")], true),
        (&[("Cache-Control", "max-age=0")], true),
        (&[("Cache-Control", "max-age=10")], false),
        (&[("Cache-Control", "max-age=x")], true),
        (&[("Pragma", "no-cache")], true),
        // Cache-Control present: Pragma is ignored (RFC 9111 §5.4).
        (
            &[("Pragma", "no-cache"), ("Cache-Control", "max-age=10")],
            false,
        ),
        (&[("Cache-Control", "stale-if-error=5")], false),
    ];
    for (headers, want) in cases {
        assert_eq!(request_refresh(&h(headers)), *want, "{headers:?}");
    }
}

#[test]
fn storable_refusals_table() {
    let cases: &[(u16, Fields, NotStored)] = &[
        (201, &[], NotStored::Status(201)),
        (206, &[], NotStored::Status(206)),
        (302, &[], NotStored::Status(302)),
        (
            500,
            &[("Cache-Control", "max-age=60")],
            NotStored::Status(500),
        ),
        (
            200,
            &[
                ("Set-Cookie", "a=b"),
                ("Cache-Control", "public, max-age=60"),
            ],
            NotStored::SetCookie,
        ),
        (200, &[("Cache-Control", "private")], NotStored::Private),
        // s-maxage does not make a private response storable.
        (
            200,
            &[("Cache-Control", "private, s-maxage=60")],
            NotStored::Private,
        ),
        (
            200,
            &[("Cache-Control", "private=\"x-user\"")],
            NotStored::Private,
        ),
        (
            200,
            &[
                ("Cache-Control", "max-age=60"),
                ("Cache-Control", "no-store"),
            ],
            NotStored::NoStore,
        ),
        (200, &[("Cache-Control", "no-cache")], NotStored::NoCache),
        (
            200,
            &[("Cache-Control", "max-age=abc")],
            NotStored::InvalidCacheControl,
        ),
        (
            200,
            &[("Cache-Control", "max-age=1, max-age=2")],
            NotStored::InvalidCacheControl,
        ),
        (200, &[("Vary", "accept-encoding, *")], NotStored::VaryAny),
        (
            200,
            &[("Vary", "accept"), ("Vary", "*")],
            NotStored::VaryAny,
        ),
        // max-age=0 with no stale window can never serve.
        (
            200,
            &[("Cache-Control", "max-age=0, must-revalidate")],
            NotStored::NeverServable,
        ),
    ];
    for (status, headers, want) in cases {
        assert_eq!(
            storable(*status, &h(headers), &RULE, NOV_1994),
            Err(*want),
            "{status} {headers:?}"
        );
    }
    let no_stale = RuleTimes {
        ttl: 300,
        stale_while_revalidate: 0,
        stale_if_error: 0,
    };
    assert_eq!(
        storable(
            200,
            &h(&[("Cache-Control", "max-age=0")]),
            &no_stale,
            NOV_1994
        ),
        Err(NotStored::NeverServable)
    );
}

#[test]
fn storable_freshness_table() {
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    let expires = "Sun, 06 Nov 1994 08:59:37 GMT";
    let fr = |lifetime, source, swr, sie| Freshness {
        lifetime,
        source,
        stale_while_revalidate: swr,
        stale_if_error: sie,
    };
    use LifetimeSource::*;
    let cases: &[(u16, Fields, Freshness)] = &[
        (200, &[], fr(300, Rule, 60, 600)),
        (203, &[], fr(300, Rule, 60, 600)),
        (204, &[], fr(300, Rule, 60, 600)),
        (300, &[], fr(300, Rule, 60, 600)),
        (301, &[], fr(300, Rule, 60, 600)),
        (308, &[], fr(300, Rule, 60, 600)),
        (404, &[], fr(300, Rule, 60, 600)),
        (410, &[], fr(300, Rule, 60, 600)),
        (
            200,
            &[("Cache-Control", "max-age=10")],
            fr(10, MaxAge, 60, 600),
        ),
        (
            200,
            &[("Cache-Control", "max-age=10, s-maxage=20")],
            fr(20, SMaxage, 0, 0),
        ),
        (
            200,
            &[("Cache-Control", "s-maxage=20, stale-while-revalidate=5")],
            fr(20, SMaxage, 5, 0),
        ),
        (
            200,
            &[("Cache-Control", "max-age=0")],
            fr(0, MaxAge, 60, 600),
        ),
        (
            200,
            &[(
                "Cache-Control",
                "max-age=10, stale-while-revalidate=1, stale-if-error=2",
            )],
            fr(10, MaxAge, 1, 2),
        ),
        (
            200,
            &[(
                "Cache-Control",
                "max-age=10, must-revalidate, stale-if-error=2",
            )],
            fr(10, MaxAge, 0, 0),
        ),
        (
            200,
            &[("Cache-Control", "max-age=10, proxy-revalidate")],
            fr(10, MaxAge, 0, 0),
        ),
        // Expires minus Date; max-age wins over Expires.
        (
            200,
            &[("Date", date), ("Expires", expires)],
            fr(600, Expires, 60, 600),
        ),
        (
            200,
            &[
                ("Date", date),
                ("Expires", expires),
                ("Cache-Control", "max-age=5"),
            ],
            fr(5, MaxAge, 60, 600),
        ),
        // Expires without Date: minus the time received.
        (200, &[("Expires", expires)], fr(600, Expires, 60, 600)),
        // Invalid Expires ("0") is already expired (RFC 9111 §5.3); so is Expires before Date.
        (
            200,
            &[("Date", date), ("Expires", "0")],
            fr(0, Expires, 60, 600),
        ),
        (
            200,
            &[("Date", expires), ("Expires", date)],
            fr(0, Expires, 60, 600),
        ),
        (
            200,
            &[("Date", date), ("Expires", expires), ("Expires", date)],
            fr(0, Expires, 60, 600),
        ),
        (
            200,
            &[("Cache-Control", "public"), ("Vary", "Accept-Encoding")],
            fr(300, Rule, 60, 600),
        ),
    ];
    for (status, headers, want) in cases {
        assert_eq!(
            storable(*status, &h(headers), &RULE, NOV_1994),
            Ok(*want),
            "{status} {headers:?}"
        );
    }
}

#[test]
fn current_age_table() {
    // (Age, Date offset from response_time, request_time, response_time, now) -> current age
    let t = NOV_1994;
    let date = |d: u64| httpdate_string(d);
    // (Age, Date, request_time, response_time, now, current age)
    type Row = (Option<&'static str>, Option<u64>, u64, u64, u64, u64);
    let cases: &[Row] = &[
        // Nothing but resident time.
        (None, None, t, t, t + 7, 7),
        // Date 3s behind the receipt: apparent age 3.
        (None, Some(t - 3), t, t, t + 10, 13),
        // Age 20 plus response delay 2 beats apparent age 3.
        (Some("20"), Some(t - 3), t - 2, t, t + 10, 32),
        // Apparent age beats a small Age.
        (Some("1"), Some(t - 50), t, t, t, 50),
        // Date in the future: apparent age 0.
        (None, Some(t + 100), t, t, t + 1, 1),
        // Invalid Age is ignored; a list takes its first member.
        (Some("abc"), None, t, t, t + 1, 1),
        (Some("5, 9"), None, t, t, t, 5),
        // now before response_time (clock went back): resident time 0.
        (Some("4"), None, t, t, t - 10, 4),
    ];
    for &(age, date_at, request_time, response_time, now, want) in cases {
        let date_text = date_at.map(date);
        let mut fields = Vec::new();
        if let Some(a) = age {
            fields.push(Header {
                name: "Age",
                value: a.as_bytes(),
            });
        }
        if let Some(d) = &date_text {
            fields.push(Header {
                name: "Date",
                value: d.as_bytes(),
            });
        }
        let clock = AgeClock::new(&fields, request_time, response_time);
        assert_eq!(
            clock.current_age(now),
            want,
            "{age:?} {date_at:?} {request_time} {response_time} {now}"
        );
    }
}

/// An IMF-fixdate for Unix seconds `t` (test helper; the inverse of [`http_date`]).
fn httpdate_string(t: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let (mut days, secs) = (t / 86_400, t % 86_400);
    let weekday = DAYS[(days % 7) as usize];
    let mut year: u64 = 1970;
    loop {
        let len =
            if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) {
                366
            } else {
                365
            };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let lens = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= lens[month] {
        days -= lens[month];
        month += 1;
    }
    format!(
        "{weekday}, {:02} {} {year} {:02}:{:02}:{:02} GMT",
        days + 1,
        MONTHS[month],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[test]
fn state_windows_table() {
    let f = Freshness {
        lifetime: 100,
        source: LifetimeSource::MaxAge,
        stale_while_revalidate: 10,
        stale_if_error: 50,
    };
    let cases = [
        (0, State::Fresh),
        (99, State::Fresh),
        (100, State::StaleWhileRevalidate),
        (109, State::StaleWhileRevalidate),
        (110, State::StaleIfError),
        (149, State::StaleIfError),
        (150, State::Expired),
        (u64::MAX, State::Expired),
    ];
    for (age, want) in cases {
        assert_eq!(f.state(age), want, "age {age}");
    }
    assert_eq!(f.max_age(), 150);
    // A revalidate window longer than the error window: no StaleIfError band.
    let g = Freshness {
        stale_while_revalidate: 60,
        stale_if_error: 5,
        ..f
    };
    assert_eq!(g.state(159), State::StaleWhileRevalidate);
    assert_eq!(g.state(160), State::Expired);
    // max-age=0: stale at once.
    let z = Freshness { lifetime: 0, ..f };
    assert_eq!(z.state(0), State::StaleWhileRevalidate);
}

#[test]
fn vary_names_table() {
    let cases: &[(&[(&str, &str)], Vary)] = &[
        (&[], Vary::Names(vec![])),
        (
            &[("Vary", "Accept-Encoding")],
            Vary::Names(vec!["accept-encoding".into()]),
        ),
        (
            &[
                ("Vary", "Accept-Language, accept-encoding"),
                ("vary", "ACCEPT-ENCODING"),
            ],
            Vary::Names(vec!["accept-encoding".into(), "accept-language".into()]),
        ),
        (
            &[("Vary", " , origin ,")],
            Vary::Names(vec!["origin".into()]),
        ),
        (&[("Vary", "*")], Vary::Any),
        (&[("Vary", "accept, \"x\"")], Vary::Any),
        (&[("Vary", "accept, a b")], Vary::Any),
        (&[("Vary", "origin, *")], Vary::Any),
    ];
    for (headers, want) in cases {
        assert_eq!(vary(&h(headers)), *want, "{headers:?}");
    }
}

fn key_of(
    host: &str,
    path: &str,
    query: Option<&str>,
    rule_vary: &[&str],
    response_vary: &[&str],
    headers: &[(&str, &str)],
    subject: Option<&str>,
) -> Key {
    let rule_vary: Vec<String> = rule_vary.iter().map(|s| s.to_string()).collect();
    let response_vary: Vec<String> = response_vary.iter().map(|s| s.to_string()).collect();
    let headers = h(headers);
    key(&KeyParts {
        scope: b"",
        host: host.as_bytes(),
        path: path.as_bytes(),
        query: query.map(str::as_bytes),
        rule_vary: &rule_vary,
        response_vary: &response_vary,
        request_headers: &headers,
        subject: subject.map(str::as_bytes),
    })
}

#[test]
fn key_equalities_table() {
    let base = key_of(
        "api.example",
        "/a",
        Some("x=1"),
        &["accept-language"],
        &[],
        &[("Accept-Language", "en")],
        None,
    );
    let same = [
        key_of(
            "API.example:8080",
            "/a",
            Some("x=1"),
            &["accept-language"],
            &[],
            &[("Accept-Language", "en")],
            None,
        ),
        key_of(
            "api.example",
            "/a",
            Some("x=1"),
            &["Accept-Language"],
            &["accept-language"],
            &[("accept-language", "en")],
            None,
        ),
        key_of(
            "api.example",
            "/a",
            Some("x=1"),
            &["accept-language"],
            &[],
            &[("Accept-Language", "en"), ("Cookie", "z")],
            None,
        ),
    ];
    for k in &same {
        assert_eq!(*k, base);
        assert_eq!(k.hash(), base.hash());
    }
    let different = [
        key_of(
            "api.example2",
            "/a",
            Some("x=1"),
            &["accept-language"],
            &[],
            &[("Accept-Language", "en")],
            None,
        ),
        key_of(
            "api.example",
            "/a?x=1",
            None,
            &["accept-language"],
            &[],
            &[("Accept-Language", "en")],
            None,
        ),
        key_of(
            "api.example",
            "/a",
            Some(""),
            &["accept-language"],
            &[],
            &[("Accept-Language", "en")],
            None,
        ),
        key_of(
            "api.example",
            "/a",
            Some("x=1"),
            &["accept-language"],
            &[],
            &[("Accept-Language", "fr")],
            None,
        ),
        key_of(
            "api.example",
            "/a",
            Some("x=1"),
            &["accept-language"],
            &[],
            &[],
            None,
        ),
        key_of(
            "api.example",
            "/a",
            Some("x=1"),
            &["accept-language"],
            &[],
            &[("Accept-Language", "")],
            None,
        ),
        key_of(
            "api.example",
            "/a",
            Some("x=1"),
            &["accept-language"],
            &["accept-encoding"],
            &[("Accept-Language", "en")],
            None,
        ),
        key_of(
            "api.example",
            "/a",
            Some("x=1"),
            &["accept-language"],
            &[],
            &[("Accept-Language", "en")],
            Some("alice"),
        ),
    ];
    for (i, k) in different.iter().enumerate() {
        assert_ne!(*k, base, "case {i}");
        for (j, other) in different.iter().enumerate().skip(i + 1) {
            assert_ne!(k, other, "cases {i} and {j}");
        }
    }
    // Length prefixes: moving bytes between parts changes the key.
    assert_ne!(
        key_of("ab", "/c", None, &[], &[], &[], None),
        key_of("a", "b/c", None, &[], &[], &[], None)
    );
    assert_ne!(
        key_of("h", "/", None, &[], &[], &[], Some("a")),
        key_of("h", "/", None, &[], &[], &[], Some("A"))
    );
    // Two field lines equal one combined line, whitespace after commas aside.
    assert_eq!(
        key_of(
            "h",
            "/",
            None,
            &["accept"],
            &[],
            &[("Accept", "a/b"), ("Accept", "c/d")],
            None
        ),
        key_of(
            "h",
            "/",
            None,
            &["accept"],
            &[],
            &[("Accept", "a/b ,  c/d")],
            None
        )
    );
    // Ports and IPv6 literals.
    assert_eq!(
        key_of("[::1]:8080", "/", None, &[], &[], &[], None),
        key_of("[::1]", "/", None, &[], &[], &[], None)
    );
    assert_ne!(
        key_of("[::1]", "/", None, &[], &[], &[], None),
        key_of("[::2]", "/", None, &[], &[], &[], None)
    );
}

#[test]
fn not_modified_table() {
    let stored = h(&[
        ("ETag", "W/\"v1\""),
        ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Date", "Sun, 06 Nov 1994 09:00:00 GMT"),
    ]);
    let strong = h(&[("ETag", "\"v1\"")]);
    let dated = h(&[("Date", "Sun, 06 Nov 1994 09:00:00 GMT")]);
    let none: Vec<Header<'_>> = Vec::new();
    let cases: &[(Fields, u16, &[Header<'_>], bool)] = &[
        (&[("If-None-Match", "\"v1\"")], 200, &stored, true),
        (&[("If-None-Match", "W/\"v1\"")], 200, &strong, true),
        (&[("If-None-Match", "\"v1\"")], 200, &strong, true),
        (&[("If-None-Match", "\"v2\", W/\"v1\"")], 200, &strong, true),
        (
            &[("If-None-Match", "\"v2\""), ("If-None-Match", "\"v1\"")],
            200,
            &strong,
            true,
        ),
        (&[("If-None-Match", "\"v2\"")], 200, &strong, false),
        (&[("If-None-Match", "\"V1\"")], 200, &strong, false),
        (&[("If-None-Match", "*")], 200, &none, true),
        (&[("If-None-Match", "*")], 404, &none, false),
        (&[("If-None-Match", "\"v1\"")], 301, &strong, false),
        (&[("If-None-Match", "\"v1\"")], 200, &none, false),
        // Malformed: no match, the full response.
        (&[("If-None-Match", "v1")], 200, &strong, false),
        (&[("If-None-Match", "\"v1")], 200, &strong, false),
        // If-None-Match present: If-Modified-Since is not evaluated.
        (
            &[
                ("If-None-Match", "\"v2\""),
                ("If-Modified-Since", "Sun, 06 Nov 1994 10:00:00 GMT"),
            ],
            200,
            &stored,
            false,
        ),
        (
            &[("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")],
            200,
            &stored,
            true,
        ),
        (
            &[("If-Modified-Since", "Sun, 06 Nov 1994 10:00:00 GMT")],
            200,
            &stored,
            true,
        ),
        (
            &[("If-Modified-Since", "Sun, 06 Nov 1994 08:49:36 GMT")],
            200,
            &stored,
            false,
        ),
        (&[("If-Modified-Since", "yesterday")], 200, &stored, false),
        // Two If-Modified-Since lines: ignored (RFC 9110 §13.1.3).
        (
            &[
                ("If-Modified-Since", "Sun, 06 Nov 1994 10:00:00 GMT"),
                ("If-Modified-Since", "Sun, 06 Nov 1994 10:00:00 GMT"),
            ],
            200,
            &stored,
            false,
        ),
        // No Last-Modified: the stored Date stands in.
        (
            &[("If-Modified-Since", "Sun, 06 Nov 1994 09:00:00 GMT")],
            200,
            &dated,
            true,
        ),
        (
            &[("If-Modified-Since", "Sun, 06 Nov 1994 08:59:59 GMT")],
            200,
            &dated,
            false,
        ),
        (
            &[("If-Modified-Since", "Sun, 06 Nov 1994 09:00:00 GMT")],
            200,
            &none,
            false,
        ),
        (&[], 200, &stored, false),
    ];
    for (request, status, stored, want) in cases {
        assert_eq!(
            not_modified(&h(request), *status, stored),
            *want,
            "{request:?} {status} {stored:?}"
        );
    }
}

#[test]
fn not_modified_headers_table() {
    let stored = h(&[
        ("Content-Type", "application/json"),
        ("ETag", "\"v1\""),
        ("Cache-Control", "max-age=60"),
        ("Content-Length", "12"),
        ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Vary", "Accept"),
        ("Expires", "Sun, 06 Nov 1994 09:49:37 GMT"),
        ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Content-Location", "/a.json"),
    ]);
    let names: Vec<&str> = not_modified_headers(&stored).map(|h| h.name).collect();
    assert_eq!(
        names,
        [
            "ETag",
            "Cache-Control",
            "Vary",
            "Expires",
            "Date",
            "Content-Location"
        ]
    );
    let without_etag = h(&[
        ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Content-Length", "3"),
    ]);
    let names: Vec<&str> = not_modified_headers(&without_etag)
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["Last-Modified"]);
}

#[test]
fn http_date_table() {
    let cases: &[(&str, Option<u64>)] = &[
        ("Sun, 06 Nov 1994 08:49:37 GMT", Some(NOV_1994)),
        ("Sunday, 06-Nov-94 08:49:37 GMT", Some(NOV_1994)),
        ("Sun Nov  6 08:49:37 1994", Some(NOV_1994)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
        ("Tue, 29 Feb 2000 12:00:00 GMT", Some(951_825_600)),
        ("Sun, 06 Dec 2026 11:30:00 GMT", Some(1_796_556_600)),
        ("Sat, 06-Dec-26 11:30:00 GMT", Some(1_796_556_600)),
        ("Tue, 29 Feb 2001 12:00:00 GMT", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("Sun, 6 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Wed, 31 Dec 1969 23:59:59 GMT", None),
        ("0", None),
        ("", None),
        ("Sun Nov  6 08:49:37 1994 ", Some(NOV_1994)),
        ("Sün Nov  6 08:49:37 1994", None),
        ("Sun Nov  6 08:49:37 19945", None),
    ];
    for (text, want) in cases {
        assert_eq!(http_date(text.as_bytes()), *want, "{text}");
    }
    // The test helper round-trips.
    for t in [0, NOV_1994, 951_825_600, 1_796_556_600] {
        assert_eq!(http_date(httpdate_string(t).as_bytes()), Some(t));
    }
}
