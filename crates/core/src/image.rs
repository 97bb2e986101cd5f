//! Container image references, checked before they reach a boot script.
//!
//! The image a release runs comes from the pipeline (the build stage's
//! output variable) and ends up inside the instances' UserData, a shell
//! script that CloudFormation also runs through `Fn::Sub`. So it is
//! accepted only in the plain form registries use —
//! `REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST]`, in the characters those
//! allow — which leaves no room for a quote, a `$` or a space.

use regex::Regex;
use std::sync::OnceLock;

/// A parsed `REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    /// `:tag` or `@sha256:...`, as written; empty for none.
    pub reference: String,
}

/// An Amazon ECR registry's account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ecr {
    pub account: String,
    pub region: String,
}

fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(?P<registry>[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?)/(?P<repo>[a-z0-9]+([._/-][a-z0-9]+)*)(?P<ref>:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})?$",
        )
        .expect("the image pattern compiles")
    })
}

fn ecr_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(?P<account>[0-9]{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
            .expect("the ECR pattern compiles")
    })
}

/// Text that is not a container image reference (the first 200 characters
/// of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a container image reference: REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST] in lower case, e.g. 123456789012.dkr.ecr.us-west-2.amazonaws.com/hello:1f2e3d4")]
pub struct NotAnImage(pub String);

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, NotAnImage> {
        let bad = || NotAnImage(text.chars().take(200).collect());
        if text.len() > 512 {
            return Err(bad());
        }
        let c = pattern().captures(text).ok_or_else(bad)?;
        Ok(ImageRef {
            registry: c["registry"].to_string(),
            repository: c["repo"].to_string(),
            reference: c.name("ref").map_or("", |m| m.as_str()).to_owned(),
        })
    }

    /// The ECR registry it lives in, if it is one.
    pub fn ecr(&self) -> Option<Ecr> {
        let c = ecr_pattern().captures(&self.registry)?;
        Some(Ecr {
            account: c["account"].to_string(),
            region: c["region"].to_string(),
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}{}", self.registry, self.repository, self.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references_parse_and_ecr_is_recognised() {
        let i = ImageRef::parse("123456789012.dkr.ecr.us-west-2.amazonaws.com/team/hello:1f2e3d4").unwrap();
        assert_eq!(i.repository, "team/hello");
        assert_eq!(i.reference, ":1f2e3d4");
        assert_eq!(
            i.ecr(),
            Some(Ecr {
                account: "123456789012".into(),
                region: "us-west-2".into()
            })
        );
        assert_eq!(
            i.to_string(),
            "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/hello:1f2e3d4"
        );
        let d = format!("registry.example.com:5000/hello@sha256:{}", "a".repeat(64));
        let i = ImageRef::parse(&d).unwrap();
        assert_eq!(i.ecr(), None);
        assert_eq!(i.to_string(), d);
    }

    #[test]
    fn anything_a_shell_or_fn_sub_would_read_is_refused() {
        for bad in [
            "hello",
            "r.example.com/hello;reboot",
            "r.example.com/hello:1 --privileged",
            "r.example.com/hello:$(id)",
            "r.example.com/${AWS::Region}",
            "r.example.com/hello`x`",
            "r.example.com/Hello",
            "r.example.com/hello\n:1",
            "",
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert_eq!(e.0, bad.chars().take(200).collect::<String>());
            assert!(
                e.to_string().contains("not a container image reference"),
                "{bad:?}: {e}"
            );
        }
    }
}
