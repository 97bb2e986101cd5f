//! A YAML tree that remembers where every node came from.
//!
//! `.porter/config` errors must name the line and column, which serde-based
//! loaders forget. This loader keeps a [`Mark`] on every node, resolves
//! anchors and aliases, applies `<<:` merge keys (which porter configs use
//! for shared container blocks), and expands `${VAR}` in scalars.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Mark {
    fn from(m: Marker) -> Self {
        Mark {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A plain or quoted scalar; `quoted` keeps `"null"` apart from `null`.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Key order is kept so that diagnostics come out in file order.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub mark: Mark,
}

impl Node {
    /// The scalar text, or `None` for a sequence or mapping.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for `~`, `null`, or an empty plain scalar (a key with no value).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false }
            if text.is_empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }

    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A problem found while reading the YAML itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProblem {
    pub mark: Mark,
    /// The key path of the node being read, e.g. `environments[0].role_arn`;
    /// empty when the problem is not inside one (a syntax error).
    pub path: String,
    pub message: String,
}

/// The largest config accepted, in bytes. porter's own configs are a few
/// KiB; anything near this is a mistake or an attack.
pub const MAX_BYTES: usize = 256 * 1024;
/// The deepest nesting accepted. A porter config nests about six deep.
pub const MAX_DEPTH: usize = 64;
/// The most nodes a document may stand for once its aliases are expanded:
/// an alias costs as many nodes as its anchor holds, so a few hundred bytes
/// of aliases of aliases cannot grow into gigabytes.
pub const MAX_NODES: usize = 100_000;
/// A scalar (a key too) costs a node per this many bytes of its text, so
/// the node budget bounds the bytes a document expands to as well: at most
/// about 6 MiB of text, however it is aliased.
pub const BYTES_PER_NODE: usize = 64;

/// Parses one YAML document. `lookup` answers `${VAR}`; every unset
/// variable is reported (not just the first) so a user can fix them in one go.
///
/// Parsing is bounded ([`MAX_BYTES`], [`MAX_DEPTH`], [`MAX_NODES`]): events
/// are pulled one at a time rather than through the parser's recursive
/// loader, and the first limit crossed stops the parse with a problem
/// that says which.
pub fn load(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Node, Vec<LoadProblem>> {
    if text.len() > MAX_BYTES {
        return Err(vec![LoadProblem {
            mark: Mark { line: 1, col: 1 },
            path: String::new(),
            message: format!(
                "the file is {} bytes; a config may be at most {} KiB. Move large data out of it",
                text.len(),
                MAX_BYTES / 1024
            ),
        }]);
    }
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        problems: Vec::new(),
        lookup,
        nodes: 0,
        stopped: false,
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd | Event::DocumentEnd, _)) => break,
            Ok((ev, marker)) => {
                builder.on_event(ev, marker);
                if builder.stopped {
                    break;
                }
            }
            Err(e) => return Err(vec![syntax_problem(text, &e, builder.path())]),
        }
    }
    if !builder.problems.is_empty() {
        return Err(builder.problems);
    }
    builder.root.ok_or_else(|| {
        vec![LoadProblem {
            mark: Mark { line: 1, col: 1 },
            path: String::new(),
            message: "the file is empty; it needs at least service_name and environments".to_owned(),
        }]
    })
}

fn syntax_problem(text: &str, e: &yaml_rust2::ScanError, path: String) -> LoadProblem {
    let m = e.marker();
    let mark = Mark {
        line: m.line(),
        col: m.col() + 1,
    };
    // The parser resolves aliases itself; say which one, in the same
    // words as an alias the builder cannot resolve.
    if e.info().contains("unknown anchor") {
        let alias: String = text
            .lines()
            .nth(mark.line.saturating_sub(1))
            .unwrap_or_default()
            .chars()
            .skip(m.col())
            .take_while(|c| !c.is_whitespace() && !",]}".contains(*c))
            .take(64)
            .collect();
        return LoadProblem {
            mark,
            path,
            message: format!(
                "this alias `{alias}` refers to an anchor that is not defined above it; define it first with `&{}`",
                alias.trim_start_matches('*')
            ),
        };
    }
    LoadProblem {
        mark,
        path: String::new(),
        message: format!("this is not valid YAML: {}", e.info()),
    }
}

enum Open {
    Seq {
        anchor: usize,
        mark: Mark,
        items: Vec<Node>,
        size: usize,
    },
    Map {
        anchor: usize,
        mark: Mark,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        size: usize,
    },
}

struct Builder<'a> {
    stack: Vec<Open>,
    /// Each anchor's node and how many nodes it holds (what an alias costs).
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    problems: Vec<LoadProblem>,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Nodes made so far, aliases counted at their full size.
    nodes: usize,
    /// A limit was crossed: the parse ends here.
    stopped: bool,
}

impl Builder<'_> {
    /// The key path of the node about to be finished: the keys and list
    /// indexes of every open collection. A mapping key itself is reported
    /// with its mapping's path.
    fn path(&self) -> String {
        let mut path = String::new();
        for open in &self.stack {
            match open {
                Open::Seq { items, .. } => path.push_str(&format!("[{}]", items.len())),
                Open::Map {
                    pending_key: Some(key), ..
                } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key.as_str().unwrap_or("?"));
                }
                Open::Map { .. } => {}
            }
        }
        path
    }

    /// Stops the parse with `message` at `mark`.
    fn stop(&mut self, mark: Mark, message: String) {
        self.problems.push(LoadProblem {
            mark,
            path: self.path(),
            message,
        });
        self.stopped = true;
    }

    /// A YAML tag (`!!binary`, `!Ref`, `!ImportValue`) would change what a
    /// value means, and each reader means something else by it (porter's
    /// Go decoder decodes `!!binary`; here it would be the base64 text), so
    /// the value a user reads is the only one: tags are refused.
    fn refuse_tag(&mut self, tag: Option<&yaml_rust2::parser::Tag>, mark: Mark) {
        let Some(tag) = tag else {
            return;
        };
        let written = match tag.handle.as_str() {
            "tag:yaml.org,2002:" => format!("!!{}", tag.suffix),
            handle => format!("{handle}{}", tag.suffix),
        };
        let written: String = written.chars().take(40).collect();
        self.problems.push(LoadProblem {
            mark,
            path: self.path(),
            message: format!(
                "`{written}` is a YAML tag; porter reads plain values only (a tag would change what the value means): remove it and write the value itself"
            ),
        });
    }

    /// Counts `size` more nodes against [`MAX_NODES`]; false once over it.
    fn spend(&mut self, size: usize, mark: Mark) -> bool {
        self.nodes = self.nodes.saturating_add(size);
        if self.nodes > MAX_NODES {
            self.stop(
                mark,
                format!(
                    "the document expands to more than {MAX_NODES} nodes (aliases count as the nodes they repeat); a config this large is not accepted"
                ),
            );
            return false;
        }
        true
    }

    /// Opens a collection, unless that would nest deeper than [`MAX_DEPTH`].
    fn open(&mut self, open: Open, mark: Mark) {
        if self.stack.len() >= MAX_DEPTH {
            self.stop(
                mark,
                format!("the document nests more than {MAX_DEPTH} levels deep; a porter config needs about six"),
            );
            return;
        }
        if self.spend(1, mark) {
            self.stack.push(open);
        }
    }

    /// Hands a finished node (standing for `size` nodes) to its parent.
    fn finish(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Open::Seq { items, size: total, .. }) => {
                *total += size;
                items.push(node)
            }
            Some(Open::Map {
                entries,
                pending_key,
                size: total,
                ..
            }) => match pending_key.take() {
                None => {
                    *total += size;
                    *pending_key = Some(node)
                }
                Some(key) => {
                    *total += size;
                    entries.push((key, node))
                }
            },
        }
    }

    fn expand(&mut self, text: String, mark: Mark) -> String {
        if !text.contains("${") {
            return text;
        }
        let path = self.path();
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.problems.push(LoadProblem {
                    mark,
                    path,
                    message: format!("`{text}` opens `${{` without a closing `}}`"),
                });
                return text;
            };
            let name = &after[..end];
            let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain {
                // A shell's `${X:-y}` in a hook's command, most likely.
                self.problems.push(LoadProblem {
                    mark,
                    path: path.clone(),
                    message: format!(
                        "`${{{name}}}` is not a variable name: `${{NAME}}` in .porter/config is porter's own expansion; for a shell's variable in a hook's command, write $NAME without braces"
                    ),
                });
                rest = &after[end + 1..];
                continue;
            }
            match (self.lookup)(name) {
                Some(v) => out.push_str(&v),
                None => self.problems.push(LoadProblem {
                    mark,
                    path: path.clone(),
                    message: format!(
                        "the variable `{name}` is not set: for the CLI, set it in the shell (export {name}=...); for a deploy, pass it in `variables` (UserParameters or the state machine input); or write the value into the config"
                    ),
                }),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// Applies `<<:` merge keys: entries of the merged mapping(s) fill in keys
/// the mapping does not set itself; explicit keys always win. Also returns
/// the marks of `<<` values that are not mappings (`<<: base` without the
/// `*`), which would otherwise merge nothing without a word.
fn apply_merge(entries: Vec<(Node, Node)>) -> (Vec<(Node, Node)>, Vec<Mark>) {
    if !entries.iter().any(|(k, _)| k.as_str() == Some("<<")) {
        return (entries, Vec::new());
    }
    let mut own = Vec::new();
    let mut merged_sources = Vec::new();
    let mut not_mappings = Vec::new();
    for (k, v) in entries {
        if k.as_str() == Some("<<") {
            match v.value {
                Value::Map(m) => merged_sources.push(m),
                Value::Seq(items) => {
                    for item in items {
                        match item.value {
                            Value::Map(m) => merged_sources.push(m),
                            _ => not_mappings.push(item.mark),
                        }
                    }
                }
                Value::Scalar { .. } => not_mappings.push(v.mark),
            }
        } else {
            own.push((k, v));
        }
    }
    // Explicit keys, then each source's in order: a set of the keys seen,
    // so merging many large mappings stays linear.
    let mut seen: std::collections::HashSet<String> =
        own.iter().filter_map(|(k, _)| k.as_str().map(str::to_owned)).collect();
    for source in merged_sources {
        for (k, v) in source {
            let fresh = match k.as_str() {
                Some(name) => seen.insert(name.to_owned()),
                None => true,
            };
            if fresh {
                own.push((k, v));
            }
        }
    }
    (own, not_mappings)
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        let mark = Mark::from(marker);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.refuse_tag(tag.as_ref(), mark);
                let quoted = !matches!(style, TScalarStyle::Plain);
                // A key with no value (`vpc_id:`) gets an empty scalar that
                // the parser places at the next token, often the next line;
                // the key is where the user has to look.
                let mark = match self.stack.last() {
                    Some(Open::Map {
                        pending_key: Some(key), ..
                    }) if text.is_empty() && !quoted => key.mark,
                    _ => mark,
                };
                let text = self.expand(text, mark);
                // A scalar costs a node per [`BYTES_PER_NODE`] of its text
                // (keys too): a long one aliased many times costs what its
                // copies hold, not one node each.
                let size = 1 + text.len() / BYTES_PER_NODE;
                if !self.spend(size, mark) {
                    return;
                }
                self.finish(
                    Node {
                        value: Value::Scalar { text, quoted },
                        mark,
                    },
                    anchor,
                    size,
                );
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                self.refuse_tag(tag.as_ref(), mark);
                let open = if matches!(ev, Event::SequenceStart(..)) {
                    Open::Seq {
                        anchor,
                        mark,
                        items: Vec::new(),
                        size: 1,
                    }
                } else {
                    Open::Map {
                        anchor,
                        mark,
                        entries: Vec::new(),
                        pending_key: None,
                        size: 1,
                    }
                };
                self.open(open, mark)
            }
            Event::SequenceEnd => {
                if let Some(Open::Seq {
                    anchor,
                    mark,
                    items,
                    size,
                }) = self.stack.pop()
                {
                    self.finish(
                        Node {
                            value: Value::Seq(items),
                            mark,
                        },
                        anchor,
                        size,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Open::Map {
                    anchor,
                    mut mark,
                    entries,
                    size,
                    ..
                }) = self.stack.pop()
                {
                    // A block mapping's start is marked at the first `:`;
                    // its first key is where it begins. (A flow mapping's
                    // `{` comes before its first key and is kept.)
                    if let Some((first, _)) = entries.first() {
                        if (first.mark.line, first.mark.col) < (mark.line, mark.col) {
                            mark = first.mark;
                        }
                    }
                    let (entries, not_mappings) = apply_merge(entries);
                    for bad in not_mappings {
                        let mut path = self.path();
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str("<<");
                        self.problems.push(LoadProblem {
                            mark: bad,
                            path,
                            message: "a merge key takes an alias to a mapping, like `<<: *base` or `<<: [*a, *b]`"
                                .to_owned(),
                        });
                    }
                    self.finish(
                        Node {
                            value: Value::Map(entries),
                            mark,
                        },
                        anchor,
                        size,
                    );
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).map(|(_, size)| *size) {
                // Counted before it is copied: the copy is what a bomb costs.
                Some(size) => {
                    if self.spend(size, mark) {
                        let node = self.anchors[&id].0.clone();
                        self.finish(node, 0, size);
                    }
                }
                None => self.problems.push(LoadProblem {
                    mark,
                    path: self.path(),
                    message: "this alias refers to an anchor that is not defined above it".to_owned(),
                }),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "REGION").then(|| "us-west-2".to_owned())
    }

    #[test]
    fn merge_keys_fill_in_but_do_not_override() {
        let doc = "base: &B\n  name: inet\n  port: 3000\nc:\n  <<: *B\n  name: worker\n";
        let root = load(doc, &env).unwrap();
        let c = root.get("c").unwrap();
        assert_eq!(c.get("name").unwrap().as_str(), Some("worker"));
        assert_eq!(c.get("port").unwrap().as_str(), Some("3000"));
        assert!(c.get("<<").is_none());
    }

    #[test]
    fn marks_are_one_based() {
        let root = load("a: 1\nb:\n  c: x\n", &env).unwrap();
        let c = root.get("b").unwrap().get("c").unwrap();
        assert_eq!(c.mark, Mark { line: 3, col: 6 });
    }

    #[test]
    fn variables_expand_and_unset_ones_are_all_named() {
        let root = load("r: ${REGION}a\n", &env).unwrap();
        assert_eq!(root.get("r").unwrap().as_str(), Some("us-west-2a"));
        let problems = load("a: ${NOPE_ONE}\nb: ${NOPE_TWO}\n", &env).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].message.contains("NOPE_ONE"));
        assert_eq!(problems[1].mark.line, 2);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let problems = load("a: [1, 2\nb: 3\n", &env).unwrap_err();
        assert!(problems[0].message.contains("not valid YAML"));
        assert!(problems[0].mark.line >= 1);
    }

    /// Nine levels of nine aliases each: 330-odd bytes that stand for
    /// 9^9 (about 387 million) scalars.
    fn alias_bomb() -> String {
        let mut doc = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 9].join(",");
            doc.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
        }
        doc
    }

    #[test]
    fn an_alias_bomb_is_refused_by_the_node_budget() {
        let doc = alias_bomb();
        assert!(doc.len() < 400, "the bomb is small: {} bytes", doc.len());
        let problems = load(&doc, &env).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("more than 100000 nodes"),
            "{:?}",
            problems[0]
        );
        assert!(
            problems[0].mark.line >= 5,
            "names where it crossed: {:?}",
            problems[0].mark
        );
    }

    /// An alias of a long scalar costs its bytes, not one node: a config
    /// under the file limit cannot expand to gigabytes through them, nor
    /// through merges of large mappings.
    #[test]
    fn long_scalars_and_merges_are_charged_by_their_bytes() {
        let big = "x".repeat(120 * 1024);
        let mut doc = format!("a: &a \"{big}\"\nb: [");
        doc.push_str(&vec!["*a"; 2000].join(","));
        doc.push_str("]\n");
        assert!(doc.len() < MAX_BYTES);
        let problems = load(&doc, &env).unwrap_err();
        assert!(problems[0].message.contains("nodes"), "{:?}", problems[0]);

        // Merges over a large mapping, many times: linear.
        let mut doc = String::from("base: &base\n");
        for i in 0..1000 {
            doc.push_str(&format!("  k{i}: v\n"));
        }
        for i in 0..40 {
            doc.push_str(&format!("m{i}:\n  <<: *base\n  own: 1\n"));
        }
        let root = load(&doc, &env).unwrap();
        assert_eq!(
            match &root.get("m39").unwrap().value {
                Value::Map(entries) => entries.len(),
                _ => 0,
            },
            1001
        );
    }

    #[test]
    fn aliases_within_the_budget_still_work() {
        let root = load("a: &a [1, 2]\nb: [*a, *a]\n", &env).unwrap();
        assert_eq!(root.get("b").unwrap().kind(), "a list");
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        for doc in ["[".repeat(10_000), "a:\n".to_owned() + &"- ".repeat(10_000) + "x\n"] {
            let problems = load(&doc, &env).unwrap_err();
            assert!(
                problems[0].message.contains("nests more than 64 levels")
                    || problems[0].message.contains("not valid YAML"),
                "{:?}",
                problems[0]
            );
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        let problems = load(&deep, &env).unwrap_err();
        assert!(
            problems[0].message.contains("nests more than 64 levels"),
            "{:?}",
            problems[0]
        );
        assert_eq!(problems[0].mark, Mark { line: 1, col: 65 });
        let ok = "[".repeat(60) + &"]".repeat(60);
        load(&ok, &env).unwrap();
    }

    #[test]
    fn an_oversized_file_is_refused_before_parsing() {
        let doc = "a: b\n".repeat(MAX_BYTES / 5 + 1);
        let problems = load(&doc, &env).unwrap_err();
        assert!(problems[0].message.contains("at most 256 KiB"), "{:?}", problems[0]);
    }
}
