//! The checker every rule reports to, and what the rules share: key
//! lists checked with "did you mean", typed reads of a node, key paths.

use super::*;

pub(super) struct Checker<'a> {
    pub(super) repo_root: &'a Path,
    pub(super) diagnostics: Vec<Diagnostic>,
    pub(super) warned: HashSet<&'static str>,
    /// The service and environment being checked, when their names are
    /// valid: secrets must live under names made of them.
    pub(super) service: Option<String>,
    pub(super) environment: Option<String>,
}

impl Checker<'_> {
    pub(super) fn report(&mut self, severity: Severity, node: &Node, path: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            severity,
            line: node.mark.line,
            col: node.mark.col,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn error(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        self.report(Severity::Error, node, path, message);
    }

    /// The mapping's entries, or an error naming what was found instead.
    pub(super) fn mapping<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> Option<&'n [(Node, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ => {
                self.error(
                    node,
                    path,
                    format!("expected {what} (a mapping of keys), found {}", node.kind()),
                );
                None
            }
        }
    }

    /// The mapping under `key` of `parent` (`what` says what it holds):
    /// its node, entries and path. `Some(None)` when the key is absent or
    /// null (the caller's default), `None` when it is not a mapping
    /// (reported): the callers' `?` and `let ... else` read both at once.
    #[allow(clippy::option_option)]
    pub(super) fn section<'n>(
        &mut self,
        parent: &'n Node,
        path: &str,
        key: &str,
        what: &str,
    ) -> Option<Option<Section<'n>>> {
        let Some(node) = parent.get(key).filter(|n| !n.is_null()) else {
            return Some(None);
        };
        let path = join(path, key);
        Some(Some((node, self.mapping(node, &path, what)?, path)))
    }

    /// The items of a list that are mappings (`what`), each with its path
    /// (`PATH[i]`) and its keys checked against `known`; `false` beside
    /// them when an item was not a mapping (reported).
    pub(super) fn mappings<'n>(
        &mut self,
        items: &'n [Node],
        path: &str,
        what: &str,
        known: &[&str],
    ) -> (Vec<(&'n Node, String)>, bool) {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let ipath = format!("{path}[{i}]");
            match self.mapping(item, &ipath, what) {
                Some(entries) => {
                    self.keys(entries, &ipath, known, false);
                    out.push((item, ipath));
                }
                None => ok = false,
            }
        }
        (out, ok)
    }

    pub(super) fn list<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.error(
                    node,
                    path,
                    format!(
                        "expected a list of {what} (lines starting with `- `), found {}",
                        node.kind()
                    ),
                );
                None
            }
        }
    }

    /// Checks keys against the known set: porter keys this product does not
    /// act on get one warning each; unknown keys are errors with the list of
    /// known ones, since a typo would otherwise be silently ignored.
    pub(super) fn keys(&mut self, entries: &[(Node, Node)], path: &str, known: &[&str], allow_underscore: bool) {
        self.check_keys(entries, path, known, allow_underscore, true);
    }

    /// [`Checker::keys`] where a key porter does not act on elsewhere has
    /// a meaning of its own (a hook's `dockerfile`).
    pub(super) fn keys_acted_on(&mut self, entries: &[(Node, Node)], path: &str, known: &[&str]) {
        self.check_keys(entries, path, known, false, false);
    }

    pub(super) fn check_keys(
        &mut self,
        entries: &[(Node, Node)],
        path: &str,
        known: &[&str],
        allow_underscore: bool,
        warn: bool,
    ) {
        let mut seen = HashSet::new();
        for (k, _) in entries {
            let Some(key) = k.as_str() else {
                self.error(k, path, "keys must be plain names");
                continue;
            };
            let shown = clip_key(key);
            let key_path = join(path, &shown);
            if !seen.insert(key.to_owned()) {
                self.error(k, &key_path, format!("`{shown}` is set twice; keep one"));
                continue;
            }
            if allow_underscore && key.starts_with('_') {
                continue; // anchor holders such as `_container_base_inet`
            }
            if !known.contains(&key) {
                let message = match closest(key, known) {
                    Some(near) => format!(
                        "unknown key `{shown}`; did you mean `{near}`? (expected one of: {})",
                        known.join(", ")
                    ),
                    None => format!("unknown key `{shown}`; expected one of: {}", known.join(", ")),
                };
                self.error(k, &key_path, message);
                continue;
            }
            if let Some((name, why)) = NOT_ACTED_ON.iter().find(|(n, _)| warn && *n == key) {
                if self.warned.insert(name) {
                    self.report(
                        Severity::Warning,
                        k,
                        &key_path,
                        format!("accepted but not acted on: {why}"),
                    );
                }
            }
        }
    }

    pub(super) fn string<'n>(
        &mut self,
        parent: &'n Node,
        key: &str,
        path: &str,
        required: bool,
    ) -> Option<(String, &'n Node)> {
        let key_path = join(path, key);
        match parent.get(key) {
            None => {
                if required {
                    self.error(parent, &key_path, format!("`{key}` is required here"));
                }
                None
            }
            Some(node) if node.is_null() => {
                if required {
                    self.error(node, &key_path, format!("`{key}` is empty; give it a value"));
                }
                None
            }
            Some(node) => match node.as_str() {
                Some(s) => Some((s.to_owned(), node)),
                None => {
                    self.error(
                        node,
                        &key_path,
                        format!("expected a single value, found {}", node.kind()),
                    );
                    None
                }
            },
        }
    }

    /// `key` of `parent` when it matches `re`; otherwise reported, the value
    /// shown clipped and `why` after it. `None` too when it is absent.
    pub(super) fn matching(
        &mut self,
        parent: &Node,
        key: &str,
        path: &str,
        required: bool,
        re: &Regex,
        why: &str,
    ) -> Option<String> {
        self.parsed(
            parent,
            key,
            path,
            required,
            |t| re.is_match(t).then(|| t.to_owned()),
            why,
        )
    }

    /// `key` of `parent` as `parse` reads it; when it cannot, reported,
    /// the value shown clipped and `why` after it. `None` too when it is
    /// absent.
    pub(super) fn parsed<T>(
        &mut self,
        parent: &Node,
        key: &str,
        path: &str,
        required: bool,
        parse: impl FnOnce(&str) -> Option<T>,
        why: &str,
    ) -> Option<T> {
        let (text, node) = self.string(parent, key, path, required)?;
        let parsed = parse(&text);
        if parsed.is_none() {
            self.error(node, &join(path, key), format!("`{}` {why}", clip_key(&text)));
        }
        parsed
    }

    /// Whether the key `name` (its node `k`) matches `re`; otherwise
    /// reported at `path`, `why` after it.
    pub(super) fn key_matching(&mut self, k: &Node, path: &str, name: &str, re: &Regex, why: &str) -> bool {
        let matched = re.is_match(name);
        if !matched {
            self.error(k, path, format!("`{name}` {why}"));
        }
        matched
    }

    /// `key` of `parent` as a whole number in `range`: `Ok(None)` when it
    /// is absent, `Err(())` once reported (saying `what` it counts).
    pub(super) fn number_in<T>(
        &mut self,
        parent: &Node,
        key: &str,
        path: &str,
        range: std::ops::RangeInclusive<T>,
        what: &str,
    ) -> Result<Option<T>, ()>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display,
    {
        let Some((text, node)) = self.string(parent, key, path, false) else {
            return if parent.get(key).is_some_and(|n| !n.is_null()) {
                Err(())
            } else {
                Ok(None)
            };
        };
        match text.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => {
                self.error(
                    node,
                    &join(path, key),
                    format!(
                        "expected {what} from {} to {}, found `{}`",
                        range.start(),
                        range.end(),
                        text.chars().take(20).collect::<String>()
                    ),
                );
                Err(())
            }
        }
    }

    /// An instance count: a whole number from 1 to [`MOST_INSTANCES`];
    /// `None` when absent or reported.
    pub(super) fn count(&mut self, parent: &Node, key: &str, path: &str) -> Option<u32> {
        self.number_in(parent, key, path, 1..=MOST_INSTANCES, "a whole number")
            .ok()
            .flatten()
    }

    pub(super) fn stack_definition(&mut self, parent: &Node, path: &str) -> Option<StackDefinition> {
        let (rel, node) = self.string(parent, "stack_definition_path", path, false)?;
        let key_path = join(path, "stack_definition_path");
        // The overlay is repository content merged into a stack that runs
        // with deployment rights: it may only come from inside the repository.
        let escapes = Path::new(&rel)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
        if escapes {
            self.error(
                node,
                &key_path,
                format!("`{rel}` leaves the repository; give a path inside it, relative to its root, without `..`"),
            );
            return None;
        }
        let file = self.repo_root.join(&rel);
        // Where the path really leads, links followed, must be inside the
        // repository, and a plain file (a device or a pipe would be read
        // without end).
        let outside = match (std::fs::canonicalize(&file), std::fs::canonicalize(self.repo_root)) {
            (Ok(real), Ok(root)) if !real.starts_with(&root) => {
                Some(format!("`{rel}` is a link to a file outside the repository; put the template itself in the repository"))
            }
            (Ok(real), Ok(_)) if !std::fs::metadata(&real).is_ok_and(|m| m.is_file()) => {
                Some(format!("`{rel}` is not a plain file; put the template itself in the repository"))
            }
            (Ok(_), Ok(_)) => None,
            // A link that leads nowhere is no template; a missing file is
            // reported below, where it is read.
            (Err(_), _) if std::fs::symlink_metadata(&file).is_ok() => Some(format!(
                "`{rel}` is a link that leads to no file inside the repository; put the template itself in the repository"
            )),
            (Err(_), _) => None,
            (_, Err(e)) => Some(format!(
                "the repository folder {} cannot be resolved ({e}), so `{rel}` cannot be checked to be inside it",
                self.repo_root.display()
            )),
        };
        if let Some(why) = outside {
            self.error(node, &key_path, why);
            return None;
        }
        const MAX_TEMPLATE: u64 = 1024 * 1024;
        if std::fs::metadata(&file).is_ok_and(|m| m.len() > MAX_TEMPLATE) {
            self.error(
                node,
                &key_path,
                format!("`{rel}` is larger than 1 MiB, CloudFormation's own limit for a template"),
            );
            return None;
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                self.report(
                    Severity::Incomplete,
                    node,
                    &key_path,
                    format!(
                        "cannot read `{}` ({e}); the path is relative to the repository root",
                        file.display()
                    ),
                );
                return None;
            }
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(template) if template.is_object() => {
                let refused = crate::overlay::problems(&template);
                for p in &refused {
                    self.error(node, &key_path, format!("`{rel}` at {}: {}", p.path, p.why));
                }
                for e in crate::overlay::externals(&template) {
                    self.report(
                        Severity::Warning,
                        node,
                        &key_path,
                        format!(
                            "`{rel}` at {} names `{}`, outside the stack: pack refuses it unless the installation allows it (AllowedExternalReferences)",
                            e.path, e.value
                        ),
                    );
                }
                refused.is_empty().then_some(StackDefinition { path: rel, template })
            }
            Ok(_) => {
                self.error(
                    node,
                    &key_path,
                    format!("`{rel}` must hold a JSON object (a CloudFormation template)"),
                );
                None
            }
            Err(e) => {
                self.error(
                    node,
                    &key_path,
                    format!(
                        "`{rel}` is not valid JSON: line {} column {}: {e}",
                        e.line(),
                        e.column()
                    ),
                );
                None
            }
        }
    }
}

/// The longest key a finding shows whole; past it, its start and its length.
pub(super) const MAX_KEY_SHOWN: usize = 64;

/// A mapping found by [`Checker::section`]: its node, entries and path.
pub(super) type Section<'n> = (&'n Node, &'n [(Node, Node)], String);

/// `key` as a finding shows it: clipped, so a 100 KB key is not repeated
/// into every message and path.
pub(super) fn clip_key(key: &str) -> String {
    if key.chars().count() <= MAX_KEY_SHOWN {
        return key.to_owned();
    }
    let start: String = key.chars().take(MAX_KEY_SHOWN).collect();
    format!("{start}... ({} bytes)", key.len())
}

/// The known key a typo most likely meant: at most two edits away (a swap
/// of neighbours counting as one), and never for very short keys.
pub(super) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    // Lengths more than two apart are more than two edits apart: a long
    // key (a config of any shape may hold one, repeated) costs nothing.
    let len = key.chars().count();
    if !(3..=MAX_KEY_SHOWN).contains(&len) {
        return None;
    }
    known
        .iter()
        .filter(|k| k.chars().count().abs_diff(len) <= 2)
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and transpositions of adjacent characters.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The `name` of a mapping when it is a plain value, with its node.
pub(super) fn given_name(node: &Node) -> Option<(&str, &Node)> {
    let name = node.get("name")?;
    match name.as_str() {
        Some(s) if !name.is_null() => Some((s, name)),
        _ => None,
    }
}

/// Whether the mapping sets `key` to something (an invalid something
/// included: that gets its own error).
pub(super) fn has_value(node: &Node, key: &str) -> bool {
    node.get(key).is_some_and(|v| !v.is_null())
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}
