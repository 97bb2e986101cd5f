//! A region's keys: its availability zones, load balancers and
//! containers.

use super::*;

pattern!(region_re, r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$");
pattern!(vpc_re, r"^vpc-[0-9a-f]{8}([0-9a-f]{9})?$");
pattern!(subnet_re, r"^subnet-[0-9a-f]{8}([0-9a-f]{9})?$");
pattern!(
    kms_key_arn_re,
    r"^arn:aws[a-z-]*:kms:[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d:\d{12}:key/(mrk-)?[0-9a-f-]{32,36}$"
);
pattern!(bucket_re, r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$");
pattern!(elb_re, r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?$");

pub(super) struct Inherited<'a> {
    /// The environment's `role_arn` when it is valid.
    pub(super) role_arn: Option<&'a str>,
    /// Whether the environment writes one at all (a malformed one is
    /// reported there, not again on each region).
    pub(super) role_arn_given: bool,
    pub(super) stack_definition: Option<&'a StackDefinition>,
    pub(super) instance_count: u32,
    /// The environment's `secrets:` when they are valid.
    pub(super) secrets: Option<&'a [Secret]>,
}

pub(super) fn check_region(
    c: &mut Checker<'_>,
    region: &Node,
    path: &str,
    inherited: &Inherited<'_>,
) -> Option<Region> {
    let entries = c.mapping(region, path, "a region")?;
    c.keys(entries, path, REGION_KEYS, false);

    let name = c.string(region, "name", path, true).and_then(|(name, node)| {
        if !region_re().is_match(&name) {
            c.error(
                node,
                &join(path, "name"),
                format!("`{name}` is not an AWS region name like us-west-2"),
            );
            None
        } else if !regions::is_known(&name) {
            c.error(
                node,
                &join(path, "name"),
                format!(
                    "`{name}` is not an AWS region; did you mean `{}`? (A region newer than this release: add it to {})",
                    regions::nearest(&name, edit_distance),
                    regions::EXTRA_VAR
                ),
            );
            None
        } else {
            Some(name)
        }
    });
    let own_role = check_role(c, region, path);
    let role_arn = match (own_role, inherited.role_arn) {
        (Some(r), _) => Some(r),
        (None, Some(r)) => Some(r.to_owned()),
        (None, None) => {
            if !has_value(region, "role_arn") && !inherited.role_arn_given {
                c.error(
                    region,
                    &join(path, "role_arn"),
                    "no `role_arn` for this region: set one here or on its environment",
                );
            }
            None
        }
    };
    let vpc_id = c.string(region, "vpc_id", path, false).map(|(v, node)| {
        if !vpc_re().is_match(&v) {
            c.report(
                Severity::Incomplete,
                node,
                &join(path, "vpc_id"),
                format!("`{v}` is not a VPC id like vpc-0a1b2c3d"),
            );
        }
        v
    });
    let azs = check_azs(c, region, path, name.as_deref(), vpc_id.is_some());
    let s3_bucket = c.string(region, "s3_bucket", path, true).map(|(b, node)| {
        if !bucket_re().is_match(&b) || b.contains("..") {
            c.report(
                Severity::Incomplete,
                node,
                &join(path, "s3_bucket"),
                format!("`{b}` is not a valid S3 bucket name (3-63 lowercase letters, digits, `.` and `-`)"),
            );
        }
        b
    });
    // The key goes into the instance role's `kms:Decrypt` statement and the
    // uploads' headers: a key ARN only (IAM matches keys by their ARN, and a
    // `*` would grant every key).
    let sse_kms_key_id = c
        .string(region, "sse_kms_key_id", path, false)
        .and_then(|(k, node)| {
            if kms_key_arn_re().is_match(&k) {
                Some(k)
            } else {
                c.error(
                    node,
                    &join(path, "sse_kms_key_id"),
                    format!(
                        "`{}` is not a KMS key ARN like arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                        k.chars().take(128).collect::<String>()
                    ),
                );
                None
            }
        });
    let elbs = check_elbs(c, region, path);
    let instance_count = c
        .count(region, "instance_count", path)
        .unwrap_or(inherited.instance_count);
    let key_pair_name = c.string(region, "key_pair_name", path, false).map(|(k, _)| k);
    let containers = check_containers(c, region, path);
    let stack_definition = c
        .stack_definition(region, path)
        .or_else(|| inherited.stack_definition.cloned());
    let rollout = check_region_rollout(c, region, path, instance_count);
    // The region's own replace the environment's of the same variable.
    let secrets = check_secrets(c, region, path).map(|own| {
        let mut all: Vec<Secret> = inherited
            .secrets
            .unwrap_or_default()
            .iter()
            .filter(|s| !own.iter().any(|o| o.variable == s.variable))
            .cloned()
            .collect();
        all.extend(own);
        all
    });

    Some(Region {
        name: name?,
        role_arn: role_arn?,
        vpc_id,
        azs: azs?,
        s3_bucket: s3_bucket?,
        sse_kms_key_id,
        elbs: elbs?,
        instance_count,
        key_pair_name,
        containers: containers?,
        stack_definition,
        rollout: rollout?,
        secrets: secrets?,
    })
}

pub(super) fn check_azs(
    c: &mut Checker<'_>,
    region: &Node,
    path: &str,
    region_name: Option<&str>,
    has_vpc: bool,
) -> Option<Vec<AvailabilityZone>> {
    let apath = join(path, "azs");
    let Some(node) = region.get("azs") else {
        c.error(
            region,
            &apath,
            "`azs` is required: a list like `- {name: us-west-2a, subnet_id: subnet-0a1b2c3d}`",
        );
        return None;
    };
    let items = c.list(node, &apath, "availability zones")?;
    if items.is_empty() {
        c.error(node, &apath, "needs at least one availability zone");
        return None;
    }
    let mut azs = Vec::new();
    let mut names = HashSet::new();
    let mut ok = true;
    for (i, az) in items.iter().enumerate() {
        let zpath = format!("{apath}[{i}]");
        let Some(entries) = c.mapping(az, &zpath, "an availability zone") else {
            ok = false;
            continue;
        };
        c.keys(entries, &zpath, &["name", "subnet_id"], false);
        let name = c.string(az, "name", &zpath, true);
        if let (Some((n, nnode)), Some(r)) = (&name, region_name) {
            let suffix = n.strip_prefix(r);
            if !suffix.is_some_and(|s| s.len() == 1 && s.chars().all(|ch| ch.is_ascii_lowercase())) {
                c.error(
                    nnode,
                    &join(&zpath, "name"),
                    format!("`{n}` is not an availability zone of {r} (like {r}a)"),
                );
                ok = false;
            }
            if !names.insert(n.clone()) {
                c.error(nnode, &join(&zpath, "name"), format!("`{n}` is listed twice"));
                ok = false;
            }
        }
        let subnet_id = c.string(az, "subnet_id", &zpath, false).map(|(s, node)| {
            if !subnet_re().is_match(&s) {
                c.report(
                    Severity::Incomplete,
                    node,
                    &join(&zpath, "subnet_id"),
                    format!("`{s}` is not a subnet id like subnet-0a1b2c3d"),
                );
            }
            s
        });
        if !has_vpc && has_value(az, "subnet_id") {
            // The stack's security group goes where vpc_id says, the
            // instances where their subnets are: without it the group is
            // made in the default VPC and cannot be given to them.
            c.error(
                az,
                &join(&zpath, "subnet_id"),
                "a subnet needs the region's `vpc_id` (the subnet's VPC), or the instances' security group is made in the default VPC",
            );
            ok = false;
        }
        if has_vpc && !has_value(az, "subnet_id") {
            c.error(
                az,
                &join(&zpath, "subnet_id"),
                "the region sets `vpc_id`, so every availability zone needs a `subnet_id`",
            );
            ok = false;
        }
        match name {
            Some((name, _)) => azs.push(AvailabilityZone { name, subnet_id }),
            None => ok = false,
        }
    }
    ok.then_some(azs)
}

pub(super) fn check_elbs(c: &mut Checker<'_>, region: &Node, path: &str) -> Option<Vec<Elb>> {
    let classic = check_balancers(c, region, path, BalancerKind::Classic);
    let groups = check_balancers(c, region, path, BalancerKind::TargetGroup);
    let (classic, groups) = (classic?, groups?);
    if classic == Declared::Unset && groups == Declared::Unset {
        c.report(
            Severity::Warning,
            region,
            &join(path, "elb"),
            "no `elb` or `target_group` set: promote does nothing in this region (write `elb: none` to say so)",
        );
    }
    let mut all = classic.into_vec();
    all.extend(groups.into_vec());
    Some(all)
}

/// A region's load balancers of one kind, as its config declares them.
#[derive(Debug, PartialEq)]
pub(super) enum Declared {
    /// Neither key is set (a warning: promote does nothing there).
    Unset,
    /// Listed, or `none` (an empty list, said on purpose).
    Listed(Vec<Elb>),
}

impl Declared {
    pub(super) fn into_vec(self) -> Vec<Elb> {
        match self {
            Declared::Unset => Vec::new(),
            Declared::Listed(elbs) => elbs,
        }
    }
}

/// One kind's keys of a region: `elb`/`elbs` or `target_group`/
/// `target_groups`. `None` when invalid.
pub(super) fn check_balancers(c: &mut Checker<'_>, region: &Node, path: &str, kind: BalancerKind) -> Option<Declared> {
    let (one, many) = match kind {
        BalancerKind::Classic => ("elb", "elbs"),
        BalancerKind::TargetGroup => ("target_group", "target_groups"),
    };
    let noun = kind.noun();
    let single = c.string(region, one, path, false);
    let list = region.get(many);
    if let (Some((_, node)), Some(_)) = (&single, list) {
        c.error(
            node,
            &join(path, one),
            format!("set either `{one}` or `{many}`, not both"),
        );
        return None;
    }
    let check_name = |c: &mut Checker<'_>, name: &str, node: &Node, p: &str| -> bool {
        if elb_re().is_match(name) {
            true
        } else {
            c.error(
                node,
                p,
                format!(
                    "`{name}` is not a {noun} name (1-32 letters, digits and `-`, not starting or ending with `-`)"
                ),
            );
            false
        }
    };
    let make = |name: String, tag: Option<String>| Elb { name, tag, kind };
    if let Some((name, node)) = single {
        if name.eq_ignore_ascii_case("none") {
            return Some(Declared::Listed(Vec::new()));
        }
        return check_name(c, &name, node, &join(path, one)).then(|| Declared::Listed(vec![make(name, None)]));
    }
    let Some(node) = list else {
        return Some(Declared::Unset);
    };
    let epath = join(path, many);
    let items = c.list(node, &epath, &format!("{noun}s with name and tag"))?;
    let mut elbs = Vec::new();
    let mut names = HashSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{epath}[{i}]");
        let Some(entries) = c.mapping(item, &ipath, &format!("a {noun}")) else {
            ok = false;
            continue;
        };
        c.keys(entries, &ipath, &["name", "tag"], false);
        let tag = c.string(item, "tag", &ipath, false).map(|(t, _)| t);
        match c.string(item, "name", &ipath, true) {
            Some((name, nnode)) => {
                if !check_name(c, &name, nnode, &join(&ipath, "name")) {
                    ok = false;
                } else if !names.insert(name.clone()) {
                    c.error(nnode, &join(&ipath, "name"), format!("`{name}` is listed twice"));
                    ok = false;
                } else {
                    elbs.push(make(name, tag));
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(Declared::Listed(elbs))
}

pub(super) fn check_containers(c: &mut Checker<'_>, region: &Node, path: &str) -> Option<Vec<Container>> {
    let cpath = join(path, "containers");
    let Some(node) = region.get("containers") else {
        return Some(vec![Container {
            name: "primary".into(),
            topology: Topology::Inet,
            inet_port: None,
            health_check: HealthCheck::default(),
        }]);
    };
    let items = c.list(node, &cpath, "containers")?;
    let mut containers = Vec::new();
    let mut names = HashSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{cpath}[{i}]");
        let Some(entries) = c.mapping(item, &ipath, "a container") else {
            ok = false;
            continue;
        };
        c.keys(entries, &ipath, CONTAINER_KEYS, false);
        let name = c.string(item, "name", &ipath, true);
        if let Some((n, nnode)) = &name {
            if !names.insert(n.clone()) {
                c.error(
                    nnode,
                    &join(&ipath, "name"),
                    format!("container `{n}` is defined twice in this region"),
                );
                ok = false;
            }
        }
        let topology = match c.string(item, "topology", &ipath, false) {
            None => Some(Topology::Inet),
            Some((t, _)) if t == "inet" => Some(Topology::Inet),
            Some((t, _)) if t == "worker" => Some(Topology::Worker),
            Some((t, tnode)) => {
                c.error(
                    tnode,
                    &join(&ipath, "topology"),
                    format!("`{t}` is not a topology; expected `inet` or `worker`"),
                );
                None
            }
        };
        let inet_port = match c.string(item, "inet_port", &ipath, false) {
            None => Some(None),
            Some((p, pnode)) => match p.parse::<u16>() {
                Ok(port) if port > 0 => Some(Some(port)),
                _ => {
                    c.error(
                        pnode,
                        &join(&ipath, "inet_port"),
                        format!("`{p}` is not a port number from 1 to 65535"),
                    );
                    None
                }
            },
        };
        let health_check = match item.get("health_check") {
            None => Some(HealthCheck::default()),
            Some(h) => {
                let hpath = join(&ipath, "health_check");
                match c.mapping(h, &hpath, "a health check with method and path") {
                    None => None,
                    Some(entries) => {
                        c.keys(entries, &hpath, &["method", "path"], false);
                        let method = c.string(h, "method", &hpath, true).and_then(|(m, mnode)| {
                            if ["GET", "HEAD"].contains(&m.as_str()) {
                                Some(m)
                            } else {
                                c.error(
                                    mnode,
                                    &join(&hpath, "method"),
                                    format!("`{m}` is not supported; use GET or HEAD"),
                                );
                                None
                            }
                        });
                        let hc_path = c.string(h, "path", &hpath, true).and_then(|(p, pnode)| {
                            match health_check_path_problem(&p) {
                                None => Some(p),
                                Some(why) => {
                                    c.error(pnode, &join(&hpath, "path"), why);
                                    None
                                }
                            }
                        });
                        Some(HealthCheck {
                            method: method?,
                            path: hc_path?,
                        })
                    }
                }
            }
        };
        match (name, topology, inet_port, health_check) {
            (Some((name, _)), Some(topology), Some(inet_port), Some(health_check)) => containers.push(Container {
                name,
                topology,
                inet_port,
                health_check,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(containers)
}

/// Why a health check path cannot be used, if it cannot. The path reaches
/// the boot script (quoted) and CloudFormation's `Fn::Sub`, so it is held
/// to a plain URL path and query: no spaces, quotes, `$`, backticks or
/// control characters, whatever the quoting does with them.
pub(crate) fn health_check_path_problem(p: &str) -> Option<String> {
    const MAX: usize = 512;
    let shown: String = p.chars().take(64).flat_map(char::escape_default).collect();
    if !p.starts_with('/') {
        return Some(format!("`{shown}` must start with `/`"));
    }
    if p.len() > MAX {
        return Some(format!(
            "is {} bytes long; a health check path may have at most {MAX}",
            p.len()
        ));
    }
    let allowed = |ch: char| ch.is_ascii_alphanumeric() || "/-._~%?=&+,:@".contains(ch);
    p.chars().find(|&ch| !allowed(ch)).map(|bad| {
        format!(
            "`{shown}` holds `{}`; a health check path may hold letters, digits and `/-._~%?=&+,:@` only",
            bad.escape_default()
        )
    })
}
