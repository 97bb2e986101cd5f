//! IAM's evaluation of identity-based policies, as far as the local stack
//! checks it: `Effect`, `Action`/`NotAction` (case-insensitive),
//! `Resource`/`NotResource`, the wildcards `*` and `?`, an explicit Deny
//! winning over any Allow, and nothing allowed that no statement allows.
//! A permissions boundary, when a role has one, must allow too.
//!
//! Conditions are not evaluated. That is lenient both ways: an Allow with
//! a condition counts as allowing, a Deny with one as not denying (a
//! condition that would hold is what the roles' statements intend; a
//! stricter reading would refuse what AWS allows). Policy variables in a
//! resource (`${aws:PrincipalTag/...}`) match anything, for the same
//! reason. `docs/local-stack.md` lists this.

use serde_json::Value;

/// What IAM decides for one action on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows it.
    ImplicitDeny,
    /// A Deny statement names it.
    ExplicitDeny,
}

/// The decision of `statements` (with the role's permissions boundary,
/// if any) for `action` (`service:Operation`) on `resource` (an ARN, or
/// `*` for actions without resource-level permissions).
pub fn evaluate(statements: &[Value], boundary: Option<&[Value]>, action: &str, resource: &str) -> Decision {
    let own = decide(statements, action, resource);
    match (own, boundary.map(|b| decide(b, action, resource))) {
        (Decision::ExplicitDeny, _) | (_, Some(Decision::ExplicitDeny)) => Decision::ExplicitDeny,
        (Decision::Allow, Some(Decision::ImplicitDeny)) => Decision::ImplicitDeny,
        (d, _) => d,
    }
}

fn decide(statements: &[Value], action: &str, resource: &str) -> Decision {
    let mut allowed = false;
    for s in statements {
        if !applies(s, action, resource) {
            continue;
        }
        match s.get("Effect").and_then(Value::as_str) {
            // A conditional Deny is read as not applying (lenient).
            Some("Deny") if s.get("Condition").is_none() => return Decision::ExplicitDeny,
            Some("Allow") => allowed = true,
            _ => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// Whether a statement names the action and the resource.
fn applies(statement: &Value, action: &str, resource: &str) -> bool {
    let action = action.to_ascii_lowercase();
    let action_matches = |v: &Value| strings(v).iter().any(|p| glob(&p.to_ascii_lowercase(), &action));
    let acts = match (statement.get("Action"), statement.get("NotAction")) {
        (Some(a), _) => action_matches(a),
        (None, Some(n)) => !action_matches(n),
        (None, None) => false,
    };
    let resource_matches = |v: &Value| strings(v).iter().any(|p| glob(&without_variables(p), resource));
    let on = match (statement.get("Resource"), statement.get("NotResource")) {
        (Some(r), _) => resource_matches(r),
        (None, Some(n)) => !resource_matches(n),
        (None, None) => false,
    };
    acts && on
}

/// A string or a list of strings; nothing else counts.
fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// `${...}` policy variables as `*`.
fn without_variables(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push('*');
                rest = &rest[start + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// IAM's wildcards: `*` any run of characters (none too), `?` exactly one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TABLE: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/porter-leases";

    /// Asserts IAM's decision on each `(action, resource, want)` under
    /// `statements` and `boundary`; a failure names the case and the line
    /// of its table.
    #[track_caller]
    fn decides(statements: &[Value], boundary: Option<&[Value]>, cases: &[(&str, &str, Decision)]) {
        for &(action, resource, want) in cases {
            assert_eq!(
                evaluate(statements, boundary, action, resource),
                want,
                "{action} on {resource}"
            );
        }
    }

    #[test]
    fn wildcards_match_as_iam_does() {
        for (pattern, text, want) in [
            ("arn:aws:s3:::b/*", "arn:aws:s3:::b/k/x", true),
            ("arn:aws:s3:::b/*", "arn:aws:s3:::b/", true),
            ("arn:aws:s3:::b/*", "arn:aws:s3:::b", false),
            ("secret:a-??????", "secret:a-AbC123", true),
            ("secret:a-??????", "secret:a-AbC1234", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ] {
            assert_eq!(glob(pattern, text), want, "{pattern} against {text}");
        }
    }

    #[test]
    fn an_allow_naming_the_action_and_the_resource_allows_and_nothing_else_does() {
        let s = [json!({"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": TABLE})];
        let (upper, other) = (TABLE.to_uppercase(), format!("{TABLE}-other"));
        decides(
            &s,
            None,
            &[
                ("dynamodb:GetItem", TABLE, Decision::Allow),
                // Actions are case-insensitive, resources are not.
                ("DynamoDB:getitem", TABLE, Decision::Allow),
                ("dynamodb:GetItem", upper.as_str(), Decision::ImplicitDeny),
                ("dynamodb:PutItem", TABLE, Decision::ImplicitDeny),
                ("dynamodb:GetItem", other.as_str(), Decision::ImplicitDeny),
            ],
        );
        decides(&[], None, &[("dynamodb:GetItem", TABLE, Decision::ImplicitDeny)]);
    }

    #[test]
    fn an_explicit_deny_wins_and_a_conditional_one_does_not_apply() {
        let allow = json!({"Effect": "Allow", "Action": "s3:*", "Resource": "*"});
        let deny = json!({"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/secret/*"});
        let s = [allow.clone(), deny.clone()];
        decides(
            &s,
            None,
            &[
                ("s3:GetObject", "arn:aws:s3:::b/secret/k", Decision::ExplicitDeny),
                ("s3:GetObject", "arn:aws:s3:::b/open/k", Decision::Allow),
            ],
        );
        let mut conditional = deny;
        conditional["Condition"] = json!({"Bool": {"aws:SecureTransport": "false"}});
        decides(
            &[allow, conditional],
            None,
            &[("s3:GetObject", "arn:aws:s3:::b/secret/k", Decision::Allow)],
        );
    }

    #[test]
    fn a_conditional_allow_applies() {
        let s = [
            json!({"Effect": "Allow", "Action": "cloudformation:DeleteStack", "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/porter:service": "${aws:PrincipalTag/porter:service}"}}}),
        ];
        decides(&s, None, &[("cloudformation:DeleteStack", "arn:x", Decision::Allow)]);
    }

    #[test]
    fn not_action_and_not_resource_name_everything_else() {
        let s = [json!({"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::private/*"})];
        decides(
            &s,
            None,
            &[
                ("s3:GetObject", "arn:aws:s3:::open/k", Decision::Allow),
                ("IAM:PassRole", "arn:aws:s3:::open/k", Decision::ImplicitDeny),
                ("s3:GetObject", "arn:aws:s3:::private/k", Decision::ImplicitDeny),
            ],
        );
        let deny = [
            json!({"Effect": "Allow", "Action": "*", "Resource": "*"}),
            json!({"Effect": "Deny", "NotAction": ["s3:GetObject"], "Resource": "*"}),
        ];
        decides(
            &deny,
            None,
            &[
                ("s3:PutObject", "x", Decision::ExplicitDeny),
                ("s3:GetObject", "x", Decision::Allow),
            ],
        );
    }

    #[test]
    fn a_boundary_must_allow_too() {
        let s = [json!({"Effect": "Allow", "Action": "*", "Resource": "*"})];
        let boundary = [json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})];
        decides(
            &s,
            Some(&boundary),
            &[
                ("s3:GetObject", "x", Decision::Allow),
                ("s3:PutObject", "x", Decision::ImplicitDeny),
            ],
        );
        decides(&[], Some(&boundary), &[("s3:GetObject", "x", Decision::ImplicitDeny)]);
    }

    #[test]
    fn a_policy_variable_matches_any_value() {
        let s = [json!({"Effect": "Allow", "Action": "ssm:GetParameter",
            "Resource": "arn:aws:ssm:*:1:parameter/porter/${aws:PrincipalTag/porter:service}/*"})];
        decides(
            &s,
            None,
            &[
                (
                    "ssm:GetParameter",
                    "arn:aws:ssm:r:1:parameter/porter/web/x",
                    Decision::Allow,
                ),
                (
                    "ssm:GetParameter",
                    "arn:aws:ssm:r:1:parameter/other/web/x",
                    Decision::ImplicitDeny,
                ),
            ],
        );
    }
}
