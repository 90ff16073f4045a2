//! A config the gateway can run: [`config::load`](crate::config::load) (syntax, shape and
//! values), then the route table compiled here, its errors reported like every other config
//! error (`FILE:LINE:COL: routes.NAME.KEY: message`), then the policies
//! ([`crate::policy::check`]: key files read, limits within what their algorithms hold;
//! the limits' tables are built only for the running config).
//!
//! Key functions: [`load_config`] / [`load_config_str`] (what `dispatch check`, `run` and
//! `demo` load a file with), [`compile_config`] (the route table of a loaded config, as the
//! running snapshot and reload build it).
//!
//! The one thing to know: this step lives in the router, above `config`, because only the
//! router knows what makes a route table invalid (a bad pattern, two routes of equal
//! precedence). `config` stays plain data that the router reads and never imports back.

use std::path::Path;

use crate::config::{self, model::Config, ConfigError};

use super::{RouteError, Router};

/// Reads, validates and compiles the config file at `path`, route table included: a config
/// this returns starts (listen addresses permitting). Relative paths inside the file are
/// relative to its directory.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let config = config::load(path)?;
    compile_config(&config)?;
    crate::policy::check(&config)?;
    Ok(config)
}

/// Same, from a string (`path` is used for messages and relative paths).
pub fn load_config_str(src: &str, path: &Path) -> Result<Config, ConfigError> {
    let config = config::load_str(src, path)?;
    compile_config(&config)?;
    crate::policy::check(&config)?;
    Ok(config)
}

/// Compiles the route table of `cfg`, reporting a router error at the route it concerns (for
/// two ambiguous routes: at the later one, naming both).
pub fn compile_config(cfg: &Config) -> Result<Router, ConfigError> {
    Router::compile(&cfg.routes).map_err(|e| {
        let (route, key) = match &e {
            RouteError::InvalidPattern { route, .. } => (*route, "paths"),
            RouteError::InvalidHost { route, .. } => (*route, "hosts"),
            RouteError::InvalidMethod { route, .. } => (*route, "methods"),
            RouteError::Ambiguous { a, b, .. } => ((*a).max(*b), "paths"),
        };
        config::route_error(cfg, route, key, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "[upstreams.u]\nendpoints = [\"http://127.0.0.1:1\"]\n\n";

    fn error(routes: &str) -> String {
        let src = format!("{UPSTREAM}{routes}");
        match load_config_str(&src, Path::new("d.toml")) {
            Ok(_) => panic!("loaded, expected an error\n--- source ---\n{src}"),
            Err(e) => e.to_string(),
        }
    }

    /// Route table errors are config errors located at the route: the later of two
    /// ambiguous routes (naming both), or the route whose pattern does not compile.
    #[test]
    fn route_table_errors_point_at_the_route() {
        assert_eq!(
            error(
                "[routes.a]\npaths = [\"/a\"]\nupstream = \"u\"\n\n\
                 [routes.b]\npaths = [\"/a\"]\nupstream = \"u\"\n"
            ),
            "d.toml:8:1: routes.b.paths: routes.a and routes.b can match the same request with \
             equal precedence (path \"/a\"): same pattern, 0 predicate(s) each; methods: any \
             method; hosts: any host; headers compatible"
        );
        assert_eq!(
            error("[routes.a]\npaths = [\"/u//x\"]\nupstream = \"u\"\n"),
            "d.toml:4:1: routes.a.paths: routes.a: invalid path pattern \"/u//x\": empty \
             segment (\"//\")"
        );
    }

    /// `config::load_str` alone checks what config knows; the route table is the router's.
    #[test]
    fn config_load_leaves_the_route_table_to_the_router() {
        let src = format!(
            "{UPSTREAM}[routes.a]\npaths = [\"/a\"]\nupstream = \"u\"\n\n\
             [routes.b]\npaths = [\"/a\"]\nupstream = \"u\"\n"
        );
        let cfg = config::load_str(&src, Path::new("d.toml")).unwrap();
        assert!(compile_config(&cfg).is_err());
        let ok = format!("{UPSTREAM}[routes.a]\npaths = [\"/a\"]\nupstream = \"u\"\n");
        let cfg = load_config_str(&ok, Path::new("d.toml")).unwrap();
        assert_eq!(compile_config(&cfg).unwrap().describe().len(), 1);
    }
}
