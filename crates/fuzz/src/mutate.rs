//! Inputs made from seeds: byte-level mutations for any target, and
//! structural ones for JSON (a node replaced by a hostile value, keys
//! dropped or copied), with a small dictionary of the tokens that matter
//! to YAML, JSON and porter's own formats. Deterministic for a seed, so
//! every failure can be replayed.

use serde_json::{json, Map, Value};

/// xorshift64*: small, fast, and the same on every machine.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub(crate) fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Tokens that steer a parser somewhere interesting.
const DICTIONARY: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a",
    "<<: [*a, *a]",
    "!!binary ",
    "!!str ",
    "? ",
    "- ",
    ": ",
    "\n",
    "\n  ",
    "\n- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "#",
    "|\n",
    ">\n",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "${",
    "${SECRET}",
    "${UNSET}",
    "$$",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "1e999",
    "-0",
    "18446744073709551616",
    "0x7f",
    "~",
    "\t",
    "\r\n",
    "\u{feff}",
    "../",
    "/etc/passwd",
    "s3://",
    "porter1.",
    "arn:aws:states:",
    "porter-continuations/",
    "us-west-2",
    "environments",
    "regions",
    "stack_definition_path",
    "role_arn",
    "CodePipeline.job",
    "UserParameters",
    "continuationToken",
];

/// Hostile JSON values to put in place of a node.
fn hostile(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(1e308),
        5 => json!(""),
        6 => Value::String("x".repeat(rng.below(70_000))),
        7 => json!("\u{0}\u{7}\u{202e}\u{fffd}é"),
        8 => json!("s3://porter-local-artifacts/porter-continuations/../porter-deployment/x"),
        9 => json!("arn:aws:states:us-east-1:123456789012:execution:other:x"),
        10 => {
            let depth = rng.below(200);
            let mut v = json!(1);
            for _ in 0..depth {
                v = json!([v]);
            }
            v
        }
        11 => json!({"": "", "environment": ["staging"]}),
        12 => json!([]),
        13 => json!({}),
        14 => json!("porter1.e30.AAAA"),
        _ => Value::String(DICTIONARY[rng.below(DICTIONARY.len())].to_owned()),
    }
}

/// A random node of `v`, reached by a random walk.
fn random_node<'a>(rng: &mut Rng, v: &'a mut Value) -> &'a mut Value {
    if rng.chance(3) {
        return v;
    }
    let len = match &*v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if len == 0 {
        return v;
    }
    let i = rng.below(len);
    match v {
        Value::Object(m) => {
            let child = m.values_mut().nth(i).expect("in range");
            random_node(rng, child)
        }
        Value::Array(a) => random_node(rng, &mut a[i]),
        other => other,
    }
}

/// One structural change to a JSON document.
pub(crate) fn mutate_json(rng: &mut Rng, mut v: Value) -> Value {
    for _ in 0..1 + rng.below(3) {
        let node = random_node(rng, &mut v);
        match rng.below(4) {
            0 | 1 => *node = hostile(rng),
            2 => {
                if let Value::Object(m) = node {
                    if !m.is_empty() {
                        let k = m.keys().nth(rng.below(m.len())).cloned().expect("in range");
                        m.remove(&k);
                    }
                }
            }
            _ => {
                if let Value::Object(m) = node {
                    let key = DICTIONARY[rng.below(DICTIONARY.len())].to_owned();
                    m.insert(key, hostile(rng));
                } else {
                    let mut m = Map::new();
                    m.insert("value".into(), node.take());
                    *node = Value::Object(m);
                }
            }
        }
    }
    v
}

/// One to four byte-level changes; `other` is a second input to splice from.
pub(crate) fn mutate_bytes(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                b.drain(at..at + n);
            }
            4 if len > 0 => {
                // Repeat a run: deep nesting, long lines, many entries.
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                let run = b[at..at + n].to_vec();
                let most = if rng.chance(20) { 4096 } else { 16 };
                let times = 1 + rng.below(most);
                let insert: Vec<u8> = run.iter().copied().cycle().take(n * times).collect();
                b.splice(at..at, insert);
            }
            5 | 6 => {
                let at = rng.below(len + 1);
                let word = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes().to_vec();
                b.splice(at..at, word);
            }
            7 if !other.is_empty() => {
                let at = rng.below(len + 1);
                let from = rng.below(other.len());
                let n = 1 + rng.below((other.len() - from).min(256));
                b.splice(at..at, other[from..from + n].iter().copied());
            }
            8 if len > 0 => b.truncate(rng.below(len)),
            _ => {}
        }
    }
    b.truncate(max_len);
    b
}
