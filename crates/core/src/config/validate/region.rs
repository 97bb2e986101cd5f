//! A region's keys: its availability zones, load balancers and
//! containers.

use super::*;

pattern!(region_re, r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$");
pattern!(vpc_re, r"^vpc-[0-9a-f]{8}([0-9a-f]{9})?$");
// EC2 takes any ASCII in a key pair's name; these are the characters
// names are made of, without quotes, `$`, braces or backslashes (the name
// is written into the template as it is).
pattern!(key_pair_re, r"^[A-Za-z0-9][A-Za-z0-9 ._+=@,:/()#-]{0,254}$");
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
    let sse_kms_key_id = c.matching(
        region,
        "sse_kms_key_id",
        path,
        false,
        kms_key_arn_re(),
        "is not a KMS key ARN like arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    );
    let elbs = check_elbs(c, region, path);
    let instance_count = c
        .count(region, "instance_count", path)
        .unwrap_or(inherited.instance_count);
    let key_pair_name = c.matching(
        region,
        "key_pair_name",
        path,
        false,
        key_pair_re(),
        "is not an EC2 key pair name: a letter or digit, then at most 254 letters, digits, spaces and `._+=@,:/()#-`",
    );
    let auto_scaling_group = check_auto_scaling_group(c, region, path, instance_count);
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
        auto_scaling_group: auto_scaling_group?,
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
    let (mappings, mut ok) = c.mappings(items, &apath, "an availability zone", &["name", "subnet_id"]);
    for (az, zpath) in mappings {
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
    let (mappings, mut ok) = c.mappings(items, &epath, &format!("a {noun}"), &["name", "tag"]);
    for (item, ipath) in mappings {
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
    let (mappings, mut ok) = c.mappings(items, &cpath, "a container", CONTAINER_KEYS);
    for (item, ipath) in mappings {
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

/// The most seconds a new instance may boot before its load balancer's
/// health counts: Auto Scaling's own upper bound is far longer, but a
/// grace past two hours hides a broken fleet.
const MOST_GRACE_SECONDS: u32 = 7_200;

/// `auto_scaling_group:` of a region: size bounds around `instance_count`,
/// the boot grace, the instances' outbound rules. porter's
/// `secrets_exec_name`/`secrets_exec_args` are warned about as before.
pub(super) fn check_auto_scaling_group(
    c: &mut Checker<'_>,
    region: &Node,
    path: &str,
    instance_count: u32,
) -> Option<AutoScalingGroup> {
    let what =
        "auto_scaling_group, with `min_size`, `max_size`, `health_check_grace_period` or `security_group_egress`";
    let Some((node, entries, gpath)) = c.section(region, path, "auto_scaling_group", what)? else {
        return Some(AutoScalingGroup::default());
    };
    c.keys(
        entries,
        &gpath,
        &[
            "min_size",
            "max_size",
            "health_check_grace_period",
            "security_group_egress",
            "secrets_exec_name",
            "secrets_exec_args",
        ],
        false,
    );
    let mut ok = true;
    let min_size = c.count(node, "min_size", &gpath);
    let max_size = c.count(node, "max_size", &gpath);
    ok &= node.get("min_size").is_none_or(|_| min_size.is_some());
    ok &= node.get("max_size").is_none_or(|_| max_size.is_some());
    if let Some(min) = min_size.filter(|m| *m > instance_count) {
        let n = node.get("min_size").unwrap_or(node);
        c.error(
            n,
            &join(&gpath, "min_size"),
            format!("{min} is above instance_count ({instance_count}), which a release starts at; raise instance_count or lower min_size"),
        );
        ok = false;
    }
    if let Some(max) = max_size.filter(|m| *m < instance_count.max(min_size.unwrap_or(0))) {
        let n = node.get("max_size").unwrap_or(node);
        c.error(
            n,
            &join(&gpath, "max_size"),
            format!(
                "{max} is below instance_count ({instance_count}){}; the group could not start",
                min_size.map(|m| format!(" or min_size ({m})")).unwrap_or_default()
            ),
        );
        ok = false;
    }
    let grace = c
        .number_in(
            node,
            "health_check_grace_period",
            &gpath,
            0..=MOST_GRACE_SECONDS,
            "whole seconds",
        )
        .unwrap_or_else(|()| {
            ok = false;
            None
        });
    let egress = match node.get("security_group_egress").filter(|n| !n.is_null()) {
        None => Some(None),
        Some(list) => check_egress(c, list, &join(&gpath, "security_group_egress")).map(|rules| {
            // The boot script reads the release from S3, its secrets, and
            // signals CloudFormation, all over HTTPS.
            let https = rules.iter().any(|r| match r.ip_protocol.as_str() {
                "-1" => true,
                "tcp" | "6" => r.from_port <= 443 && 443 <= r.to_port,
                _ => false,
            });
            if !https {
                c.report(
                    Severity::Warning,
                    list,
                    &join(&gpath, "security_group_egress"),
                    "no rule lets the instances out on tcp 443: they read the release from S3 and their secrets, and signal CloudFormation, over HTTPS, so they cannot boot unless a VPC endpoint or proxy serves them",
                );
            }
            Some(rules)
        }),
    };
    ok &= egress.is_some();
    ok.then(|| AutoScalingGroup {
        min_size,
        max_size,
        health_check_grace_period: grace,
        security_group_egress: egress.flatten(),
    })
}

/// `security_group_egress:` rules as porter wrote them: `cidr_ip`,
/// `ip_protocol`, `from_port`, `to_port`.
fn check_egress(c: &mut Checker<'_>, list: &Node, path: &str) -> Option<Vec<EgressRule>> {
    let items = c.list(
        list,
        path,
        "egress rules (`cidr_ip`, `ip_protocol`, `from_port`, `to_port`)",
    )?;
    let mut rules = Vec::new();
    let (mappings, mut ok) = c.mappings(
        items,
        path,
        "an egress rule",
        &["cidr_ip", "ip_protocol", "from_port", "to_port"],
    );
    for (item, ipath) in mappings {
        let cidr = c.parsed(
            item,
            "cidr_ip",
            &ipath,
            true,
            |t| is_cidr(t).then(|| t.to_owned()),
            "is not a CIDR like 10.0.0.0/8 or ::/0",
        );
        let protocol = c.parsed(
            item,
            "ip_protocol",
            &ipath,
            true,
            |t| {
                let lower = t.to_ascii_lowercase();
                let named = matches!(lower.as_str(), "tcp" | "udp" | "icmp" | "icmpv6" | "-1");
                (named || lower.parse::<u8>().is_ok()).then_some(lower)
            },
            "is not a protocol: tcp, udp, icmp, icmpv6, -1 (all) or a protocol number",
        );
        let mut port = |key: &str| match c.number_in(item, key, &ipath, -1..=65_535, "a port (or -1)") {
            Ok(p) => Some(p.unwrap_or(-1)),
            Err(()) => None,
        };
        let (from, to) = (port("from_port"), port("to_port"));
        match (cidr, protocol, from, to) {
            (Some(cidr_ip), Some(ip_protocol), Some(from_port), Some(to_port)) => {
                let ported = matches!(ip_protocol.as_str(), "tcp" | "udp" | "6" | "17");
                if ported && (from_port < 0 || to_port < from_port) {
                    c.error(
                        item,
                        &ipath,
                        format!("{ip_protocol} needs from_port and to_port, from_port at most to_port (found {from_port} to {to_port})"),
                    );
                    ok = false;
                } else {
                    rules.push(EgressRule {
                        cidr_ip,
                        ip_protocol,
                        from_port,
                        to_port,
                    });
                }
            }
            _ => ok = false,
        }
    }
    ok.then_some(rules)
}

/// Whether `text` is an IPv4 or IPv6 CIDR block.
fn is_cidr(text: &str) -> bool {
    let Some((ip, bits)) = text.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}
