//! Where things are in the config text: key paths, byte offsets and `file:line:col`.
//!
//! serde says *what* is wrong; this module says *where*. [`Source`] keeps a format-preserving
//! parse of the file (`toml_edit`), which remembers the span of every key and value, and answers
//! two questions: where is the value (or key) at this [`KeyPath`], and which key path holds this
//! byte offset (serde's errors come with a span but no path). Nothing here is on a hot path: it
//! runs once per load or reload.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml_edit::{Array, ImDocument, Item, Table, TableLike, Value};

use super::error::{did_you_mean, ConfigError};
use super::model::Location;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a key or value, e.g. `upstreams.users.endpoints[1].weight`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The path of nested keys, e.g. `KeyPath::of(&["routes", name])`.
    pub fn of(keys: &[&str]) -> Self {
        KeyPath(keys.iter().map(|k| Seg::Key(k.to_string())).collect())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Key(key.to_string()));
        path
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(index) => write!(f, "[{index}]")?,
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The text of a config file, its name for messages, and its parsed TOML tree.
pub struct Source<'a> {
    pub path: &'a Path,
    text: &'a str,
    doc: ImDocument<&'a str>,
}

impl<'a> Source<'a> {
    /// Parses the TOML syntax; a syntax error is reported here, without a key path.
    pub fn parse(text: &'a str, path: &'a Path) -> Result<Self, ConfigError> {
        match ImDocument::parse(text) {
            Ok(doc) => Ok(Source { path, text, doc }),
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                Err(ConfigError::Invalid {
                    location: location(path, text, offset),
                    key: String::new(),
                    message: one_line(e.message()),
                })
            }
        }
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    /// A serde error from deserializing [`super::file::File`], located, given its key path, and
    /// reworded where serde's wording is for programmers ("unknown field", "variant").
    pub fn shape_error(&self, error: &toml::de::Error) -> ConfigError {
        let offset = error.span().map_or(0, |s| s.start);
        let path = self.path_at(offset);
        let message = plain_words(&one_line(error.message()));
        // serde's fixed wording: "unknown field `x`, expected one of `a`, `b`",
        // "unknown variant `x`, expected `a` or `b`", "missing field `x`".
        let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
        let Some((&name, expected)) = quoted.split_first() else {
            return self.error_at(offset, &path, message);
        };
        let hint = did_you_mean(name, expected.iter().copied())
            .map_or_else(String::new, |s| format!(" (did you mean {s:?}?)"));
        let listed = expected
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        if message.starts_with("unknown field") {
            let message = match (hint.is_empty(), expected.is_empty()) {
                (false, _) => format!("unknown key {name:?}{hint}"),
                (true, true) => format!("unknown key {name:?}"),
                (true, false) => format!("unknown key {name:?}; expected one of {listed}"),
            };
            self.error_at(offset, &path, message)
        } else if message.starts_with("unknown variant") {
            self.error_at(
                offset,
                &path,
                format!("invalid value {name:?}: expected one of {listed}{hint}"),
            )
        } else if message.starts_with("missing field") {
            self.error_at(offset, &path.key(name), "missing required key")
        } else {
            self.error_at(offset, &path, message)
        }
    }

    /// An error located at the value at `path` (for a table: its header). When `path` does not
    /// exist (a missing key), at the nearest enclosing table that does.
    pub fn error(&self, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        self.error_at(self.resolve(path).value, path, message)
    }

    /// An error located at the key itself (unknown keys, keys not supported yet).
    pub fn key_error(&self, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        self.error_at(self.resolve(path).key, path, message)
    }

    /// An error `offset` bytes into the text of the string value at `path` (a jq program's
    /// failing token): located at that character when the string is written on one line as
    /// its own text (a literal string, or a basic string without escapes); otherwise at the
    /// value, with the offset in the message.
    pub fn error_in_string(
        &self,
        path: &KeyPath,
        offset: usize,
        message: impl Into<String>,
    ) -> ConfigError {
        let start = self.resolve(path).value;
        let raw = &self.text[start..];
        let message = message.into();
        let content = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
            None
        } else if let Some(rest) = raw.strip_prefix('\'') {
            rest.find(['\'', '\n']).map(|end| &rest[..end])
        } else if let Some(rest) = raw.strip_prefix('"') {
            rest.find(['"', '\\', '\n'])
                .filter(|&end| rest[end..].starts_with('"'))
                .map(|end| &rest[..end])
        } else {
            None
        };
        match content {
            Some(text) if offset <= text.len() => self.error_at(start + 1 + offset, path, message),
            _ => self.error_at(
                start,
                path,
                format!("{message} (at byte {offset} of the program)"),
            ),
        }
    }

    /// Where the value at `path` starts (a table: its header), as for [`Source::error`].
    pub fn location_of(&self, path: &KeyPath) -> Location {
        self.location(self.resolve(path).value)
    }

    fn error_at(&self, offset: usize, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            location: self.location(offset),
            key: path.to_string(),
            message: message.into(),
        }
    }

    fn location(&self, offset: usize) -> Location {
        location(self.path, self.text, offset)
    }

    /// Byte offsets of the value and of the key at `path`, falling back to the nearest
    /// enclosing node with a position. Implicit tables (`upstreams` in `[upstreams.users]`) have
    /// no span of their own; their key's position stands in.
    fn resolve(&self, path: &KeyPath) -> Offsets {
        let mut node = Node::Item(self.doc.as_item());
        let mut at = Offsets { value: 0, key: 0 };
        for seg in &path.0 {
            let Some((key_span, child)) = node.child(seg) else {
                return Offsets {
                    value: at.value,
                    key: at.value,
                };
            };
            let key = key_span
                .or_else(|| child.span())
                .map_or(at.value, |s| s.start);
            let value = child.span().map_or(key, |s| s.start);
            at = Offsets { value, key };
            node = child;
        }
        at
    }

    /// The key path at `offset`: the key whose text contains it (serde's unknown-key errors
    /// point at the key), else the deepest value whose span contains it.
    ///
    /// Every node is visited: a standard table's span ends at its last key/value, so its
    /// sub-tables (`[upstreams.users.breaker]`) lie outside it and are found as its descendants
    /// only by descending regardless of spans.
    pub fn path_at(&self, offset: usize) -> KeyPath {
        #[derive(Default)]
        struct Found {
            key: Option<Vec<Seg>>,
            value: Vec<Seg>,
        }
        fn visit(node: Node<'_>, path: &mut Vec<Seg>, offset: usize, found: &mut Found) {
            for (seg, key_span, child) in node.children() {
                path.push(seg);
                if key_span.is_some_and(|s| s.contains(&offset)) {
                    found.key = Some(path.clone());
                }
                let in_value = child.span().is_some_and(|s| s.contains(&offset));
                if in_value && path.len() > found.value.len() {
                    found.value = path.clone();
                }
                visit(child, path, offset, found);
                path.pop();
            }
        }
        let mut found = Found::default();
        visit(
            Node::Item(self.doc.as_item()),
            &mut Vec::new(),
            offset,
            &mut found,
        );
        KeyPath(found.key.unwrap_or(found.value))
    }
}

struct Offsets {
    value: usize,
    key: usize,
}

/// A node of the `toml_edit` tree: top-level items, values inside arrays and inline tables,
/// and the tables of an array of tables are three different types there.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(item) => item.span(),
            Node::Value(value) => value.span(),
            Node::Table(table) => table.span(),
        }
    }

    fn table(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Value(value) => value.as_inline_table().map(|t| t as &dyn TableLike),
            Node::Table(table) => Some(table),
        }
    }

    fn array(self) -> Option<&'a Array> {
        match self {
            Node::Item(item) => item.as_array(),
            Node::Value(value) => value.as_array(),
            Node::Table(_) => None,
        }
    }

    /// The child at `seg`, with the span of its key (None for array elements).
    fn child(self, seg: &Seg) -> Option<(Option<Range<usize>>, Node<'a>)> {
        match seg {
            Seg::Key(key) => {
                let (key, item) = self.table()?.get_key_value(key)?;
                Some((key.span(), Node::Item(item)))
            }
            Seg::Index(index) => match self {
                Node::Item(Item::ArrayOfTables(tables)) => {
                    tables.get(*index).map(|t| (None, Node::Table(t)))
                }
                _ => self.array()?.get(*index).map(|v| (None, Node::Value(v))),
            },
        }
    }

    fn children(self) -> Vec<(Seg, Option<Range<usize>>, Node<'a>)> {
        if let Some(table) = self.table() {
            return table
                .iter()
                .filter_map(|(key, _)| table.get_key_value(key))
                .map(|(key, item)| {
                    (
                        Seg::Key(key.get().to_string()),
                        key.span(),
                        Node::Item(item),
                    )
                })
                .collect();
        }
        if let Node::Item(Item::ArrayOfTables(tables)) = self {
            return tables
                .iter()
                .enumerate()
                .map(|(i, t)| (Seg::Index(i), None, Node::Table(t)))
                .collect();
        }
        match self.array() {
            Some(array) => array
                .iter()
                .enumerate()
                .map(|(i, v)| (Seg::Index(i), None, Node::Value(v)))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn location(path: &Path, text: &str, offset: usize) -> Location {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        file: path.to_path_buf(),
        line: before.matches('\n').count() + 1,
        col: before[line_start..].chars().count() + 1,
    }
}

/// serde names Rust types ("expected struct Route", "sequence", "u32"); say TOML's words.
fn plain_words(message: &str) -> String {
    let mut out = message
        .replace("a sequence", "an array")
        .replace("sequence", "array")
        .replace("expected a map", "expected a table")
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u32", "expected an integer from 0 to 4294967295")
        .replace("expected u16", "expected an integer from 0 to 65535");
    if let Some(at) = out.find("expected struct ") {
        let name = at + "expected struct ".len();
        let end = out[name..].find([',', ' ']).map_or(out.len(), |i| name + i);
        out.replace_range(at..end, "expected a table");
    }
    out
}

/// toml's messages may span lines ("invalid table header\nduplicate key ..."); ours may not.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
[server]
listen = [\"a\", \"b\"]

[upstreams.users]
endpoints = [\"x\", { url = \"y\", weight = 3 }]

[upstreams.users.breaker]
window = \"60s\"

[routes.\"a.b\"]
headers = { \"X-Canary\" = \"1\" }
";

    fn source() -> Source<'static> {
        Source::parse(TEXT, Path::new("t.toml")).unwrap()
    }

    fn at(path: &KeyPath) -> (usize, usize) {
        let loc = source().location_of(path);
        (loc.line, loc.col)
    }

    #[test]
    fn resolves_values_tables_and_missing_keys() {
        let users = KeyPath::of(&["upstreams", "users"]);
        assert_eq!(at(&KeyPath::of(&["server", "listen"]).index(1)), (2, 16));
        assert_eq!(at(&users), (4, 1));
        assert_eq!(at(&users.key("endpoints").index(1).key("weight")), (5, 41));
        assert_eq!(at(&users.key("breaker").key("window")), (8, 10));
        // A missing key points at its table's header.
        assert_eq!(at(&users.key("balance")), (4, 1));
        assert_eq!(
            at(&KeyPath::of(&["routes", "a.b", "headers", "X-Canary"])),
            (11, 26)
        );
        let key = source().key_error(&users.key("breaker"), "m");
        assert_eq!(key.to_string(), "t.toml:7:18: upstreams.users.breaker: m");
    }

    #[test]
    fn finds_the_path_at_an_offset() {
        let src = source();
        for (needle, expected) in [
            ("\"b\"", "server.listen[1]"),
            ("weight", "upstreams.users.endpoints[1].weight"),
            ("\"60s\"", "upstreams.users.breaker.window"),
            ("[upstreams.users]", "upstreams.users"),
            ("\"1\"", "routes.\"a.b\".headers.X-Canary"),
        ] {
            let offset = TEXT.find(needle).unwrap();
            assert_eq!(src.path_at(offset).to_string(), expected, "{needle}");
        }
    }

    #[test]
    fn serde_wording_becomes_toml_wording() {
        for (serde, plain) in [
            (
                "invalid type: integer `1`, expected struct Route",
                "invalid type: integer `1`, expected a table",
            ),
            (
                "invalid type: string \"x\", expected a sequence",
                "invalid type: string \"x\", expected an array",
            ),
            (
                "invalid value: integer `-1`, expected usize",
                "invalid value: integer `-1`, expected a non-negative integer",
            ),
            (
                "invalid value: integer `70000`, expected u16",
                "invalid value: integer `70000`, expected an integer from 0 to 65535",
            ),
        ] {
            assert_eq!(plain_words(serde), plain);
        }
    }

    #[test]
    fn syntax_errors_have_a_position_and_no_key() {
        let err = Source::parse("[a]\nx = \n", Path::new("t.toml"))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "t.toml:2:5: invalid string: expected `\"`, `'`"
        );
    }
}
