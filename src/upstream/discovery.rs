//! Endpoint sets that change while the gateway runs: registrations through the admin API
//! (`PUT`/`DELETE /upstreams/{name}/endpoints`) and DNS answers for endpoints written with a
//! host name (re-resolved every `dns_refresh`).
//!
//! Owns [`Discovery`]: the config as loaded from the file plus those overlays, from which the
//! effective config is built and published like a reload (compiled off the request path,
//! swapped atomically; workers keep the pools of endpoints whose address is unchanged). It
//! lives behind a `Mutex` in `Shared` that only the admin thread, the DNS thread and reload
//! take: never a worker.
//!
//! The one thing to know: overlays are kept by upstream name, so a reload keeps the
//! registrations of every upstream the new file still has, and drops the others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::model::{Config, Endpoint, EndpointSource};
use crate::upstream::balance::MAX_ENDPOINTS;

/// Why an endpoint change was refused; each variant names its admin API status.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// 404
    #[error("no upstream named {0:?}")]
    NoUpstream(String),
    /// 404
    #[error("upstream {upstream:?} has no endpoint {url:?}")]
    NoEndpoint { upstream: String, url: String },
    /// 409
    #[error("cannot remove the last endpoint of upstream {0:?}")]
    LastEndpoint(String),
    /// 409
    #[error(
        "upstream {upstream:?} would have {count} endpoints: at most {MAX_ENDPOINTS} per upstream"
    )]
    TooManyEndpoints { upstream: String, count: usize },
    /// 409: an `http://` URL for an https upstream, or the reverse. An upstream has one
    /// scheme (a retry must not move a request between TLS and plaintext), and a registered
    /// `https://` endpoint is verified with the upstream's `tls_*` settings.
    #[error(
        "upstream {upstream:?} has {} endpoints: {url:?} would mix http:// and https:// in one upstream",
        if *https { "http://" } else { "https://" }
    )]
    MixedSchemes {
        upstream: String,
        url: String,
        /// The URL's own scheme.
        https: bool,
    },
    /// 409
    #[error("address {addr} is already endpoint {url:?} of upstream {upstream:?}")]
    AddressInUse {
        upstream: String,
        url: String,
        addr: SocketAddr,
    },
}

impl DiscoveryError {
    pub fn status(&self) -> u16 {
        match self {
            DiscoveryError::NoUpstream(_) | DiscoveryError::NoEndpoint { .. } => 404,
            DiscoveryError::LastEndpoint(_)
            | DiscoveryError::MixedSchemes { .. }
            | DiscoveryError::AddressInUse { .. }
            | DiscoveryError::TooManyEndpoints { .. } => 409,
        }
    }
}

/// Changes made through the admin API to one upstream.
#[derive(Default, Clone)]
struct Overlay {
    /// Registered endpoints (one URL may stand for several addresses).
    added: Vec<Endpoint>,
    /// URLs of the file's endpoints that were deregistered.
    removed: Vec<String>,
}

#[derive(Clone)]
pub struct Discovery {
    file: Config,
    overlays: HashMap<String, Overlay>,
    /// Latest DNS answer per (upstream, url) for endpoints written with a host name.
    dns: HashMap<(String, String), Vec<SocketAddr>>,
}

/// One host name to re-resolve.
pub struct DnsTarget {
    pub upstream: String,
    pub url: String,
    pub host: String,
    pub port: u16,
    pub every: Duration,
}

impl Discovery {
    pub fn new(file: Config) -> Self {
        Discovery {
            file,
            overlays: HashMap::new(),
            dns: HashMap::new(),
        }
    }

    /// A reloaded file: overlays of upstreams it no longer has are dropped.
    pub fn set_file(&mut self, file: Config) {
        self.overlays
            .retain(|name, _| file.upstreams.iter().any(|u| &u.name == name));
        self.dns.clear();
        self.file = file;
    }

    /// The config workers run: the file's endpoints with fresh DNS answers, minus
    /// deregistered URLs, plus registrations (which replace a file endpoint of the same URL).
    pub fn effective(&self) -> Config {
        let mut config = self.file.clone();
        for u in &mut config.upstreams {
            let overlay = self.overlays.get(&u.name);
            let mut endpoints: Vec<Endpoint> = Vec::with_capacity(u.endpoints.len());
            let mut answered: Vec<&str> = Vec::new();
            for e in &u.endpoints {
                let replaced = overlay.is_some_and(|o| {
                    o.removed.contains(&e.url) || o.added.iter().any(|a| a.url == e.url)
                });
                if replaced || answered.contains(&e.url.as_str()) {
                    continue;
                }
                match self.dns.get(&(u.name.clone(), e.url.clone())) {
                    // Every address of the latest answer is an endpoint, in place of the
                    // addresses the name had at load.
                    Some(addrs) if e.dns.is_some() => {
                        answered.push(&e.url);
                        endpoints.extend(addrs.iter().map(|&addr| Endpoint { addr, ..e.clone() }))
                    }
                    _ => endpoints.push(e.clone()),
                }
            }
            if let Some(o) = overlay {
                endpoints.extend(o.added.iter().cloned());
            }
            // One pool per address: a later duplicate (a registration of an address the file
            // already has under another URL) gives way.
            let mut seen: Vec<SocketAddr> = Vec::with_capacity(endpoints.len());
            endpoints.retain(|e| {
                let fresh = !seen.contains(&e.addr);
                seen.push(e.addr);
                fresh
            });
            if !endpoints.is_empty() {
                u.endpoints = endpoints;
            }
        }
        config
    }

    /// Registers `endpoints` (the addresses of one URL) with `upstream`; true when the URL was
    /// not registered before.
    pub fn register(
        &mut self,
        upstream: &str,
        mut endpoints: Vec<Endpoint>,
    ) -> Result<bool, DiscoveryError> {
        self.upstream(upstream)?;
        let Some(url) = endpoints.first().map(|e| e.url.clone()) else {
            return Ok(false);
        };
        // One pool per address: an address already serving under another URL would be dropped
        // from the effective set, so the registration is refused instead.
        let current = self.effective();
        if let Some(u) = current.upstreams.iter().find(|u| u.name == upstream) {
            let https = endpoints[0].tls_name.is_some();
            if https != u.tls.is_some() {
                return Err(DiscoveryError::MixedSchemes {
                    upstream: upstream.to_string(),
                    url,
                    https,
                });
            }
            // A registration replaces the endpoints of its URL.
            let count = u.endpoints.iter().filter(|e| e.url != url).count() + endpoints.len();
            if count > MAX_ENDPOINTS {
                return Err(DiscoveryError::TooManyEndpoints {
                    upstream: upstream.to_string(),
                    count,
                });
            }
            for e in &endpoints {
                if let Some(other) = u
                    .endpoints
                    .iter()
                    .find(|o| o.addr == e.addr && o.url != url)
                {
                    return Err(DiscoveryError::AddressInUse {
                        upstream: upstream.to_string(),
                        url: other.url.clone(),
                        addr: e.addr,
                    });
                }
            }
        }
        for e in &mut endpoints {
            e.source = EndpointSource::Admin;
        }
        let overlay = self.overlays.entry(upstream.to_string()).or_default();
        let existed = overlay.added.iter().any(|e| e.url == url);
        overlay.added.retain(|e| e.url != url);
        overlay.removed.retain(|u| u != &url);
        overlay.added.extend(endpoints);
        Ok(!existed)
    }

    /// Deregisters `url` from `upstream` (a registration, or an endpoint of the file).
    pub fn deregister(&mut self, upstream: &str, url: &str) -> Result<(), DiscoveryError> {
        let current = self.effective();
        let u = current
            .upstreams
            .iter()
            .find(|u| u.name == upstream)
            .ok_or_else(|| DiscoveryError::NoUpstream(upstream.to_string()))?;
        if !u.endpoints.iter().any(|e| e.url == url) {
            return Err(DiscoveryError::NoEndpoint {
                upstream: upstream.to_string(),
                url: url.to_string(),
            });
        }
        if u.endpoints.iter().all(|e| e.url == url) {
            return Err(DiscoveryError::LastEndpoint(upstream.to_string()));
        }
        let overlay = self.overlays.entry(upstream.to_string()).or_default();
        overlay.added.retain(|e| e.url != url);
        let in_file = self
            .file
            .upstreams
            .iter()
            .any(|u| u.name == upstream && u.endpoints.iter().any(|e| e.url == url));
        if in_file && !overlay.removed.iter().any(|u| u == url) {
            overlay.removed.push(url.to_string());
        }
        Ok(())
    }

    /// The host names of the file's endpoints, with their refresh intervals.
    pub fn dns_targets(&self) -> Vec<DnsTarget> {
        let mut targets: Vec<DnsTarget> = Vec::new();
        for u in &self.file.upstreams {
            for e in &u.endpoints {
                if let Some((host, port)) = &e.dns {
                    if !targets
                        .iter()
                        .any(|t| t.upstream == u.name && t.url == e.url)
                    {
                        targets.push(DnsTarget {
                            upstream: u.name.clone(),
                            url: e.url.clone(),
                            host: host.clone(),
                            port: *port,
                            every: u.dns_refresh,
                        });
                    }
                }
            }
        }
        targets
    }

    /// Records a DNS answer; true when it differs from the addresses in use. An answer that
    /// would take the upstream past [`MAX_ENDPOINTS`] keeps only the first addresses that fit
    /// (in sorted order, so the choice is stable), or the previous answer when none fits, with
    /// a warning.
    pub fn set_dns(&mut self, upstream: &str, url: &str, mut addrs: Vec<SocketAddr>) -> bool {
        addrs.sort();
        let others = self
            .effective()
            .upstreams
            .iter()
            .find(|u| u.name == upstream)
            .map_or(0, |u| u.endpoints.iter().filter(|e| e.url != url).count());
        let room = MAX_ENDPOINTS.saturating_sub(others);
        if room == 0 {
            crate::warn!(
                "upstream {upstream}: no room for the addresses of {url} (at most {MAX_ENDPOINTS} endpoints per upstream); keeping the previous answer"
            );
            return false;
        }
        if addrs.len() > room {
            crate::warn!(
                "upstream {upstream}: {url} resolves to {} addresses; keeping {room} (at most {MAX_ENDPOINTS} endpoints per upstream)",
                addrs.len()
            );
            addrs.truncate(room);
        }
        let key = (upstream.to_string(), url.to_string());
        let mut current: Vec<SocketAddr> = match self.dns.get(&key) {
            Some(a) => a.clone(),
            None => self
                .file
                .upstreams
                .iter()
                .filter(|u| u.name == upstream)
                .flat_map(|u| u.endpoints.iter())
                .filter(|e| e.url == url)
                .map(|e| e.addr)
                .collect(),
        };
        current.sort();
        if current == addrs {
            return false;
        }
        self.dns.insert(key, addrs);
        true
    }

    fn upstream(&self, name: &str) -> Result<(), DiscoveryError> {
        if self.file.upstreams.iter().any(|u| u.name == name) {
            Ok(())
        } else {
            Err(DiscoveryError::NoUpstream(name.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::load_str(
            r#"
[upstreams.users]
endpoints = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
[upstreams.other]
endpoints = ["http://127.0.0.1:9003"]
[routes.r]
paths = ["/"]
upstream = "users"
"#,
            std::path::Path::new("t.toml"),
        )
        .expect("test config loads")
    }

    fn registered(url: &str, weight: u32) -> Vec<Endpoint> {
        crate::config::parse_endpoint(url, weight).expect("valid url")
    }

    fn urls(c: &Config, upstream: usize) -> Vec<(String, u32)> {
        c.upstreams[upstream]
            .endpoints
            .iter()
            .map(|e| (e.url.clone(), e.weight))
            .collect()
    }

    /// Registrations and DNS answers could grow an upstream past what endpoint sets index.
    #[test]
    fn endpoints_are_capped_at_max_endpoints() {
        let mut d = Discovery::new(config());
        for i in 0..MAX_ENDPOINTS - 2 {
            let url = format!("http://127.0.1.{}:{}", i / 250, 1000 + i % 250);
            d.register("users", registered(&url, 1)).expect("room left");
        }
        assert_eq!(d.effective().upstreams[0].endpoints.len(), MAX_ENDPOINTS);
        let err = d
            .register("users", registered("http://127.0.0.9:1", 1))
            .unwrap_err();
        assert_eq!(err.status(), 409);
        assert_eq!(
            err.to_string(),
            "upstream \"users\" would have 1025 endpoints: at most 1024 per upstream"
        );
        // Updating a registered URL at the cap replaces its endpoint: allowed.
        assert!(!d
            .register("users", registered("http://127.0.1.0:1000", 7))
            .unwrap());

        // A DNS answer larger than the room left keeps the first addresses that fit.
        let file = crate::config::load_str(
            "[upstreams.dns]\nendpoints = [\"http://localhost:9000\"]\n",
            std::path::Path::new("t.toml"),
        )
        .expect("localhost resolves");
        let mut d = Discovery::new(file);
        let answer: Vec<SocketAddr> = (0..MAX_ENDPOINTS + 500)
            .map(|i| SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 9000)))
            .collect();
        assert!(d.set_dns("dns", "http://localhost:9000", answer));
        assert_eq!(d.effective().upstreams[0].endpoints.len(), MAX_ENDPOINTS);
    }

    #[test]
    fn register_update_deregister() {
        let mut d = Discovery::new(config());
        assert!(d
            .register("users", registered("http://127.0.0.1:9005", 2))
            .unwrap());
        assert!(!d
            .register("users", registered("http://127.0.0.1:9005", 4))
            .unwrap());
        let c = d.effective();
        assert_eq!(c.upstreams[0].endpoints.len(), 3);
        assert_eq!(c.upstreams[0].endpoints[2].weight, 4);
        assert_eq!(c.upstreams[0].endpoints[2].source, EndpointSource::Admin);
        d.deregister("users", "http://127.0.0.1:9001").unwrap();
        d.deregister("users", "http://127.0.0.1:9005").unwrap();
        assert_eq!(
            urls(&d.effective(), 0),
            vec![("http://127.0.0.1:9002".to_string(), 1)]
        );
        assert_eq!(
            d.deregister("users", "http://127.0.0.1:9002")
                .unwrap_err()
                .status(),
            409
        );
        assert_eq!(
            d.deregister("users", "http://127.0.0.1:9009")
                .unwrap_err()
                .status(),
            404
        );
        assert_eq!(
            d.register("nope", registered("http://127.0.0.1:9005", 1))
                .unwrap_err()
                .status(),
            404
        );
    }

    #[test]
    fn an_address_serving_under_another_url_is_refused() {
        let mut d = Discovery::new(config());
        let err = d
            .register("users", registered("http://localhost:9001", 1))
            .unwrap_err();
        // localhost may also resolve to ::1, which is free; 127.0.0.1:9001 is taken.
        assert_eq!(err.status(), 409, "{err}");
        assert!(err.to_string().contains("http://127.0.0.1:9001"), "{err}");
    }

    #[test]
    fn registration_of_a_file_url_replaces_it_and_survives_reload() {
        let mut d = Discovery::new(config());
        d.register("users", registered("http://127.0.0.1:9002", 7))
            .unwrap();
        d.register("other", registered("http://127.0.0.1:9007", 1))
            .unwrap();
        let mut next = config();
        next.upstreams.truncate(1);
        d.set_file(next);
        let c = d.effective();
        assert_eq!(
            urls(&c, 0),
            vec![
                ("http://127.0.0.1:9001".to_string(), 1),
                ("http://127.0.0.1:9002".to_string(), 7)
            ]
        );
        assert!(!d.overlays.contains_key("other"));
    }

    #[test]
    fn dns_answers_become_endpoints() {
        let mut file = config();
        let mut e = file.upstreams[1].endpoints[0].clone();
        e.url = "http://backend.test:9003".into();
        e.source = EndpointSource::Dns;
        e.dns = Some(("backend.test".into(), 9003));
        file.upstreams[1].endpoints = vec![e];
        let mut d = Discovery::new(file);
        assert_eq!(d.dns_targets().len(), 1);
        let a: SocketAddr = "127.0.0.1:9003".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:9003".parse().unwrap();
        assert!(!d.set_dns("other", "http://backend.test:9003", vec![a]));
        assert!(d.set_dns("other", "http://backend.test:9003", vec![b, a]));
        let addrs: Vec<SocketAddr> = d.effective().upstreams[1]
            .endpoints
            .iter()
            .map(|e| e.addr)
            .collect();
        assert_eq!(addrs, vec![a, b]);
        assert!(!d.set_dns("other", "http://backend.test:9003", vec![a, b]));
    }
}
