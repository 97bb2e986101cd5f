//! The loader against malformed and porter-style configs: every finding must
//! carry the right severity, line, column, key path and a message that says
//! what is expected.

use std::path::Path;

use crate::release::Steps;

use super::*;

/// A small config that is valid and deployable as it is; every malformed case
/// below is this text with one thing broken. Line numbers are noted because
/// the cases assert them.
const BASE: &str = "\
service_name: svc-api
environments:
- name: dev
  role_arn: arn:aws:iam::123456789012:role/porter-deployment
  instance_type: m5.large
  blackout_windows:
  - start_time: 2026-12-24T00:00:00Z
    end_time: 2026-12-26T00:00:00Z
  regions:
  - name: us-west-2
    vpc_id: vpc-0a1b2c3d
    s3_bucket: svc-builds
    elb: svc-dev
    instance_count: 2
    azs:
    - name: us-west-2a
      subnet_id: subnet-0a1b2c3d
    containers:
    - name: web
      topology: inet
      inet_port: 3000
      health_check:
        method: GET
        path: /health
";
// Lines of BASE:
//  1 service_name        9 regions            17 subnet_id
//  2 environments       10 - name: us-west-2  18 containers
//  3 - name: dev        11 vpc_id             19 - name: web
//  4 role_arn           12 s3_bucket          20 topology
//  5 instance_type      13 elb                21 inet_port
//  6 blackout_windows   14 instance_count     22 health_check
//  7 - start_time       15 azs                23 method
//  8 end_time           16 - name: us-west-2a 24 path

/// BASE with `from` (which must occur exactly once) replaced by `to`.
fn base_with(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "`{from}` must occur exactly once in BASE"
    );
    BASE.replacen(from, to, 1)
}

/// Answers `${VAR}` for the few variables the tests set; everything else is unset.
fn lookup(name: &str) -> Option<String> {
    match name {
        "REGION" => Some("us-west-2".into()),
        "ROLE" => Some("arn:aws:iam::123456789012:role/porter-deployment".into()),
        "SECRET" => Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY".into()),
        _ => None,
    }
}

fn load_in(text: &str, repo_root: &Path) -> Loaded {
    load_str(text, Path::new(".porter/config"), repo_root, &lookup)
}

fn load(text: &str) -> Loaded {
    // A repository root that does not exist: no case reads a file unless it
    // makes its own tempdir.
    load_in(text, Path::new("/nonexistent-porter-repo"))
}

fn dump(loaded: &Loaded) -> String {
    loaded.located().map(|l| l.to_string()).collect::<Vec<_>>().join("\n")
}

/// The base config with `section:` and its `body` added after the
/// service's name.
fn load_section(section: &str, body: &str) -> Loaded {
    load(&base_with(
        "service_name: svc-api\n",
        &format!("service_name: svc-api\n{section}:\n{body}"),
    ))
}

/// Asserts that `loaded` has no finding at all.
fn assert_clean(loaded: &Loaded) {
    assert_eq!(count(loaded, Severity::Error), 0, "{}", dump(loaded));
    assert_eq!(count(loaded, Severity::Warning), 0, "{}", dump(loaded));
}

/// Whether `loaded` has an error that `wanted` picks.
fn has_error(loaded: &Loaded, wanted: impl Fn(&Diagnostic) -> bool) -> bool {
    loaded
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error && wanted(d))
}

fn count(loaded: &Loaded, severity: Severity) -> usize {
    loaded.diagnostics.iter().filter(|d| d.severity == severity).count()
}

#[test]
fn base_config_is_clean_and_deployable() {
    let loaded = load(BASE);
    assert!(loaded.diagnostics.is_empty(), "{}", dump(&loaded));
    let config = loaded.deployable().expect("BASE is deployable");
    assert_eq!(config.service_name, "svc-api");
    let region = &config.environments[0].regions[0];
    assert_eq!(region.instance_count, 2);
    assert_eq!(region.elbs, vec![Elb::classic("svc-dev")]);
    assert_eq!(
        config.environments[0].blackout_windows,
        vec![BlackoutWindow {
            start_time: "2026-12-24T00:00:00Z".into(),
            end_time: "2026-12-26T00:00:00Z".into(),
        }]
    );
}

struct Case {
    name: &'static str,
    text: String,
    severity: Severity,
    line: usize,
    /// `None` where the column is not meaningful (a YAML syntax error).
    col: Option<usize>,
    path: &'static str,
    message: &'static str,
    /// How many errors the text has in all: a broken thing must not drag
    /// unrelated follow-on errors along.
    errors: usize,
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    text: impl Into<String>,
    severity: Severity,
    line: usize,
    col: Option<usize>,
    path: &'static str,
    message: &'static str,
    errors: usize,
) -> Case {
    Case {
        name,
        text: text.into(),
        severity,
        line,
        col,
        path,
        message,
        errors,
    }
}

fn malformed_cases() -> Vec<Case> {
    use Severity::{Error, Incomplete};
    vec![
        // --- the file as a whole -------------------------------------------
        case(
            "not YAML",
            base_with("service_name: svc-api", "service_name: svc: api"),
            Error,
            1,
            None,
            "",
            "not valid YAML",
            1,
        ),
        case("empty file", "", Error, 1, Some(1), "", "the file is empty", 1),
        // --- rollout -----------------------------------------------------------
        case(
            "a wave names a region the environment lacks",
            base_with("  instance_type: m5.large\n", "  instance_type: m5.large\n  rollout:\n    waves: [[us-west-2], [eu-west-1]]\n"),
            Error,
            7,
            Some(27),
            "environments[0].rollout.waves[1][0]",
            "`eu-west-1` is not a region of this environment (its regions: us-west-2)",
            1,
        ),
        case(
            "a region in two waves",
            base_with("  instance_type: m5.large\n", "  instance_type: m5.large\n  rollout:\n    waves: [[us-west-2], [us-west-2]]\n"),
            Error,
            7,
            Some(27),
            "environments[0].rollout.waves[1][0]",
            "region `us-west-2` is in two waves",
            1,
        ),
        case(
            "a bake longer than a day",
            base_with("  instance_type: m5.large\n", "  instance_type: m5.large\n  rollout:\n    bake_seconds: 90000\n"),
            Error,
            7,
            Some(19),
            "environments[0].rollout.bake_seconds",
            "from 0 to 86400, found `90000`",
            1,
        ),
        case(
            "more canaries than a region launches",
            base_with("  instance_type: m5.large\n", "  instance_type: m5.large\n  rollout:\n    canary_instances: 3\n"),
            Error,
            7,
            Some(23),
            "environments[0].rollout.canary_instances",
            "3 canaries, but us-west-2 launches 2 instance(s)",
            1,
        ),
        case(
            "a region's rollout with waves of its own",
            base_with("    instance_count: 2\n", "    instance_count: 2\n    rollout:\n      waves: [[us-west-2]]\n"),
            Error,
            16,
            Some(7),
            "environments[0].regions[0].rollout.waves",
            "`waves` spans regions",
            1,
        ),
        case(
            "a region's canary over its instance count",
            base_with("    instance_count: 2\n", "    instance_count: 2\n    rollout:\n      canary_instances: 5\n"),
            Error,
            16,
            Some(25),
            "environments[0].regions[0].rollout.canary_instances",
            "5 canaries, but this region launches 2 instance(s)",
            1,
        ),
        case(
            "an unknown rollout key",
            base_with("  instance_type: m5.large\n", "  instance_type: m5.large\n  rollout:\n    canary: 1\n"),
            Error,
            7,
            Some(5),
            "environments[0].rollout.canary",
            "unknown key `canary`",
            1,
        ),
        case(
            "stack names too long for the version",
            base_with("service_name: svc-api", &format!("service_name: s{}", "v".repeat(111))),
            Error,
            3,
            Some(9),
            "environments[0].name",
            "stack names here would be 129 characters",
            1,
        ),
        case(
            "only comments",
            "# to be written\n",
            Error,
            1,
            Some(1),
            "",
            "the file is empty",
            1,
        ),
        case(
            "root is a list",
            "- service_name: svc-api\n",
            Error,
            1,
            Some(1),
            "",
            "expected the config (a mapping of keys), found a list",
            1,
        ),
        case(
            "root is a scalar",
            "svc-api\n",
            Error,
            1,
            Some(1),
            "",
            "expected the config (a mapping of keys), found a scalar",
            1,
        ),
        // --- service_name ----------------------------------------------------
        case(
            "missing service_name",
            base_with("service_name: svc-api\n", ""),
            Error,
            1,
            Some(1),
            "service_name",
            "`service_name` is required",
            1,
        ),
        case(
            "empty service_name",
            base_with("service_name: svc-api\n", "service_name:\n"),
            Error,
            1,
            Some(1),
            "service_name",
            "`service_name` is empty",
            1,
        ),
        case(
            "service_name with an underscore",
            base_with("service_name: svc-api", "service_name: svc_api"),
            Error,
            1,
            Some(15),
            "service_name",
            "`svc_api` must start with a letter and hold only letters, digits and `-`",
            1,
        ),
        case(
            "service_name starting with a digit",
            base_with("service_name: svc-api", "service_name: 9svc"),
            Error,
            1,
            Some(15),
            "service_name",
            "`9svc` must start with a letter",
            1,
        ),
        // --- environments ----------------------------------------------------
        case(
            "missing environments",
            "service_name: svc-api\n",
            Error,
            1,
            Some(1),
            "environments",
            "`environments` is required",
            1,
        ),
        case(
            "environments is a mapping",
            "service_name: svc-api\nenvironments:\n  name: dev\n",
            Error,
            3,
            Some(3),
            "environments",
            "expected a list of environments (lines starting with `- `), found a mapping",
            1,
        ),
        case(
            "environments is empty",
            "service_name: svc-api\nenvironments: []\n",
            Error,
            2,
            Some(15),
            "environments",
            "needs at least one environment",
            1,
        ),
        case(
            "environment name with a dash",
            base_with("- name: dev", "- name: dev-1"),
            Error,
            3,
            Some(9),
            "environments[0].name",
            "`dev-1` must hold only letters and digits",
            1,
        ),
        case(
            "environment without a name",
            base_with("- name: dev\n  role_arn", "- role_arn"),
            Error,
            3,
            Some(3),
            "environments[0].name",
            "`name` is required",
            1,
        ),
        case(
            "environment defined twice",
            format!("{BASE}{}", SECOND_ENV.replace("name: stage", "name: dev")),
            Error,
            25,
            Some(9),
            "environments[1].name",
            "environment `dev` is defined twice",
            1,
        ),
        case(
            // The duplicate must be found even when that environment has
            // other problems of its own.
            "environment defined twice, the second one also broken",
            format!(
                "{BASE}{}",
                SECOND_ENV
                    .replace("name: stage", "name: dev")
                    .replace("m5.large", "large")
            ),
            Error,
            25,
            Some(9),
            "environments[1].name",
            "environment `dev` is defined twice",
            2,
        ),
        case(
            "typo in a key",
            base_with("  regions:", "  regoins:"),
            Error,
            9,
            Some(3),
            "environments[0].regoins",
            "unknown key `regoins`; did you mean `regions`?",
            // and, truthfully, `regions` is missing
            2,
        ),
        case(
            "unknown key at the root",
            base_with("service_name: svc-api\n", "service_name: svc-api\nowner: me\n"),
            Error,
            2,
            Some(1),
            "owner",
            "unknown key `owner`; expected one of: service_name, porter_version, environments",
            1,
        ),
        case(
            "key set twice",
            base_with(
                "  instance_type: m5.large\n",
                "  instance_type: m5.large\n  instance_type: m5.xlarge\n",
            ),
            Error,
            6,
            Some(3),
            "environments[0].instance_type",
            "`instance_type` is set twice; keep one",
            1,
        ),
        case(
            "instance_type not an EC2 type",
            base_with("instance_type: m5.large", "instance_type: large"),
            Error,
            5,
            Some(18),
            "environments[0].instance_type",
            "`large` is not an EC2 instance type like m5.large",
            1,
        ),
        // --- blackout windows ------------------------------------------------
        case(
            "blackout start not RFC3339",
            base_with(
                "start_time: 2026-12-24T00:00:00Z",
                "start_time: 2026-12-24 midnight",
            ),
            Error,
            7,
            Some(17),
            "environments[0].blackout_windows[0].start_time",
            "`2026-12-24 midnight` is not an RFC3339 time like 2026-12-24T00:00:00Z",
            1,
        ),
        case(
            "blackout ends before it starts",
            base_with(
                "end_time: 2026-12-26T00:00:00Z",
                "end_time: 2026-12-20T00:00:00Z",
            ),
            Error,
            8,
            Some(15),
            "environments[0].blackout_windows[0].end_time",
            "ends (2026-12-20T00:00:00Z) before it starts (2026-12-24T00:00:00Z)",
            1,
        ),
        case(
            "blackout without end_time",
            base_with("    end_time: 2026-12-26T00:00:00Z\n", ""),
            Error,
            7,
            Some(5),
            "environments[0].blackout_windows[0].end_time",
            "`end_time` is required",
            1,
        ),
        // --- regions ---------------------------------------------------------
        case(
            "missing regions",
            BASE.split("  regions:\n").next().unwrap(),
            Error,
            3,
            Some(3),
            "environments[0].regions",
            "`regions` is required: a list with at least one region",
            1,
        ),
        case(
            "regions is empty",
            format!("{}  regions: []\n", BASE.split("  regions:\n").next().unwrap()),
            Error,
            9,
            Some(12),
            "environments[0].regions",
            "needs at least one region",
            1,
        ),
        case(
            "region name not an AWS region",
            base_with("  - name: us-west-2\n", "  - name: uswest2\n"),
            Error,
            10,
            Some(11),
            "environments[0].regions[0].name",
            "`uswest2` is not an AWS region name like us-west-2",
            1,
        ),
        case(
            "region shaped right that AWS does not have",
            base_with("  - name: us-west-2\n", "  - name: us-wset-2\n"),
            Error,
            10,
            Some(11),
            "environments[0].regions[0].name",
            "`us-wset-2` is not an AWS region; did you mean `us-west-2`? (A region newer than this release: add it to PORTER_EXTRA_REGIONS)",
            1,
        ),
        case(
            "region listed twice",
            base_with("    containers:\n", &format!("{SECOND_REGION}    containers:\n"))
                .replace("us-east-1", "us-west-2"),
            Error,
            // spliced in before `containers` (line 18), as a new list item
            18,
            Some(11),
            "environments[0].regions[1].name",
            "region `us-west-2` is listed twice in this environment",
            1,
        ),
        case(
            "role_arn nowhere",
            base_with(
                "  role_arn: arn:aws:iam::123456789012:role/porter-deployment\n",
                "",
            ),
            Error,
            9,
            Some(5),
            "environments[0].regions[0].role_arn",
            "no `role_arn` for this region: set one here or on its environment",
            1,
        ),
        case(
            "region role_arn empty and none on the environment",
            base_with(
                "  role_arn: arn:aws:iam::123456789012:role/porter-deployment\n",
                "",
            )
            .replace("    vpc_id:", "    role_arn:\n    vpc_id:"),
            Error,
            9,
            Some(5),
            "environments[0].regions[0].role_arn",
            "no `role_arn` for this region: set one here or on its environment",
            1,
        ),
        case(
            // One error, on the environment: its regions must not each add
            // "no role_arn" as if none had been written.
            "environment role_arn malformed",
            base_with("123456789012:role", "1234:role"),
            Error,
            4,
            Some(13),
            "environments[0].role_arn",
            "`arn:aws:iam::1234:role/porter-deployment` is not an IAM role ARN like arn:aws:iam::123456789012:role/porter-deployment",
            1,
        ),
        case(
            "region role_arn malformed",
            base_with("    vpc_id:", "    role_arn: porter-deployment\n    vpc_id:"),
            Error,
            11,
            Some(15),
            "environments[0].regions[0].role_arn",
            "`porter-deployment` is not an IAM role ARN",
            1,
        ),
        case(
            "missing azs",
            base_with(
                "    azs:\n    - name: us-west-2a\n      subnet_id: subnet-0a1b2c3d\n",
                "",
            ),
            Error,
            10,
            Some(5),
            "environments[0].regions[0].azs",
            "`azs` is required",
            1,
        ),
        case(
            "az of another region",
            base_with("- name: us-west-2a", "- name: us-east-1a"),
            Error,
            16,
            Some(13),
            "environments[0].regions[0].azs[0].name",
            "`us-east-1a` is not an availability zone of us-west-2 (like us-west-2a)",
            1,
        ),
        case(
            "az listed twice",
            base_with(
                "      subnet_id: subnet-0a1b2c3d\n",
                "      subnet_id: subnet-0a1b2c3d\n    - name: us-west-2a\n      subnet_id: subnet-0e1f2a3b\n",
            ),
            Error,
            18,
            Some(13),
            "environments[0].regions[0].azs[1].name",
            "`us-west-2a` is listed twice",
            1,
        ),
        case(
            "vpc_id set, az without subnet_id",
            base_with("      subnet_id: subnet-0a1b2c3d\n", ""),
            Error,
            16,
            Some(7),
            "environments[0].regions[0].azs[0].subnet_id",
            "the region sets `vpc_id`, so every availability zone needs a `subnet_id`",
            1,
        ),
        case(
            "sse_kms_key_id that is not a key ARN",
            base_with("    s3_bucket: svc-builds\n", "    s3_bucket: svc-builds\n    sse_kms_key_id: \"*\"\n"),
            Error,
            13,
            Some(21),
            "environments[0].regions[0].sse_kms_key_id",
            "`*` is not a KMS key ARN",
            1,
        ),
        case(
            "subnets without vpc_id",
            base_with("    vpc_id: vpc-0a1b2c3d\n", ""),
            Error,
            15,
            Some(7),
            "environments[0].regions[0].azs[0].subnet_id",
            "a subnet needs the region's `vpc_id`",
            1,
        ),
        case(
            "vpc_id set, az with an empty subnet_id",
            base_with("subnet_id: subnet-0a1b2c3d", "subnet_id:"),
            Error,
            16,
            Some(7),
            "environments[0].regions[0].azs[0].subnet_id",
            "the region sets `vpc_id`, so every availability zone needs a `subnet_id`",
            1,
        ),
        case(
            "missing s3_bucket",
            base_with("    s3_bucket: svc-builds\n", ""),
            Error,
            10,
            Some(5),
            "environments[0].regions[0].s3_bucket",
            "`s3_bucket` is required",
            1,
        ),
        case(
            "empty s3_bucket",
            base_with("s3_bucket: svc-builds", "s3_bucket:"),
            Error,
            12,
            Some(5),
            "environments[0].regions[0].s3_bucket",
            "`s3_bucket` is empty",
            1,
        ),
        case(
            "s3_bucket placeholder",
            base_with("s3_bucket: svc-builds", "s3_bucket: TODO"),
            Incomplete,
            12,
            Some(16),
            "environments[0].regions[0].s3_bucket",
            "`TODO` is not a valid S3 bucket name",
            0,
        ),
        case(
            "elb and elbs both",
            base_with(
                "    elb: svc-dev\n",
                "    elb: svc-dev\n    elbs:\n    - name: svc-dev-2\n",
            ),
            Error,
            13,
            Some(10),
            "environments[0].regions[0].elb",
            "set either `elb` or `elbs`, not both",
            1,
        ),
        case(
            "elb name with an underscore",
            base_with("elb: svc-dev", "elb: svc_dev"),
            Error,
            13,
            Some(10),
            "environments[0].regions[0].elb",
            "`svc_dev` is not a load balancer name (1-32 letters, digits and `-`",
            1,
        ),
        case(
            "elbs listed twice",
            base_with(
                "    elb: svc-dev\n",
                "    elbs:\n    - name: svc-dev\n      tag: blue\n    - name: svc-dev\n      tag: green\n",
            ),
            Error,
            16,
            Some(13),
            "environments[0].regions[0].elbs[1].name",
            "`svc-dev` is listed twice",
            1,
        ),
        case(
            "target_group and target_groups both",
            base_with(
                "    elb: svc-dev\n",
                "    elb: svc-dev\n    target_group: web\n    target_groups:\n    - name: web-2\n",
            ),
            Error,
            14,
            Some(19),
            "environments[0].regions[0].target_group",
            "set either `target_group` or `target_groups`, not both",
            1,
        ),
        case(
            "target group name ending in a dash",
            base_with("    elb: svc-dev\n", "    elb: svc-dev\n    target_group: web-\n"),
            Error,
            14,
            Some(19),
            "environments[0].regions[0].target_group",
            "`web-` is not a target group name (1-32 letters, digits and `-`",
            1,
        ),
        case(
            "target_groups listed twice",
            base_with(
                "    elb: svc-dev\n",
                "    target_groups:\n    - name: web\n    - {name: web}\n",
            ),
            Error,
            15,
            Some(14),
            "environments[0].regions[0].target_groups[1].name",
            "`web` is listed twice",
            1,
        ),
        case(
            "instance_count zero",
            base_with("instance_count: 2", "instance_count: 0"),
            Error,
            14,
            Some(21),
            "environments[0].regions[0].instance_count",
            "expected a whole number from 1 to 500, found `0`",
            1,
        ),
        case(
            "instance_count lots",
            base_with("instance_count: 2", "instance_count: lots"),
            Error,
            14,
            Some(21),
            "environments[0].regions[0].instance_count",
            "expected a whole number from 1 to 500, found `lots`",
            1,
        ),
        // --- containers ------------------------------------------------------
        case(
            "bad topology",
            base_with("topology: inet", "topology: web"),
            Error,
            20,
            Some(17),
            "environments[0].regions[0].containers[0].topology",
            "`web` is not a topology; expected `inet` or `worker`",
            1,
        ),
        case(
            "inet_port too big",
            base_with("inet_port: 3000", "inet_port: 70000"),
            Error,
            21,
            Some(18),
            "environments[0].regions[0].containers[0].inet_port",
            "`70000` is not a port number from 1 to 65535",
            1,
        ),
        case(
            "inet_port not a number",
            base_with("inet_port: 3000", "inet_port: http"),
            Error,
            21,
            Some(18),
            "environments[0].regions[0].containers[0].inet_port",
            "`http` is not a port number",
            1,
        ),
        case(
            "health_check path without slash",
            base_with("path: /health", "path: health"),
            Error,
            24,
            Some(15),
            "environments[0].regions[0].containers[0].health_check.path",
            "`health` must start with `/`",
            1,
        ),
        case(
            "health_check path with a line of shell",
            base_with("path: /health", "path: \"/health\\ntouch /tmp/x\""),
            Error,
            24,
            Some(15),
            "environments[0].regions[0].containers[0].health_check.path",
            "holds `\\n`; a health check path may hold letters, digits and `/-._~%?=&+,:@` only",
            1,
        ),
        case(
            "health_check path with a shell variable and a quote",
            base_with("path: /health", "path: \"/h$HOME'\""),
            Error,
            24,
            Some(15),
            "environments[0].regions[0].containers[0].health_check.path",
            "holds `$`",
            1,
        ),
        case(
            "health_check method",
            base_with("method: GET", "method: POST"),
            Error,
            23,
            Some(17),
            "environments[0].regions[0].containers[0].health_check.method",
            "`POST` is not supported; use GET or HEAD",
            1,
        ),
        case(
            "container name twice",
            format!("{BASE}    - name: web\n      topology: worker\n"),
            Error,
            25,
            Some(13),
            "environments[0].regions[0].containers[1].name",
            "container `web` is defined twice in this region",
            1,
        ),
        case(
            "typo in a container key",
            base_with("inet_port: 3000", "inet_prot: 3000"),
            Error,
            21,
            Some(7),
            "environments[0].regions[0].containers[0].inet_prot",
            "unknown key `inet_prot`; did you mean `inet_port`?",
            1,
        ),
        // --- anchors and merge keys -------------------------------------------
        case(
            "merge key without the `*`",
            base_with("    - name: web\n", "    - <<: container_base\n      name: web\n"),
            Error,
            19,
            Some(11),
            "environments[0].regions[0].containers[0].<<",
            "a merge key takes an alias to a mapping, like `<<: *base`",
            1,
        ),
        case(
            "alias to an undefined anchor",
            base_with("elb: svc-dev", "elb: *dev_elb"),
            Error,
            13,
            Some(10),
            "environments[0].regions[0].elb",
            "this alias `*dev_elb` refers to an anchor that is not defined above it; define it first with `&dev_elb`",
            1,
        ),
        // --- ${VAR} ----------------------------------------------------------
        case(
            "unset variable",
            base_with("s3_bucket: svc-builds", "s3_bucket: ${PORTER_BUCKET}"),
            Error,
            12,
            Some(16),
            "environments[0].regions[0].s3_bucket",
            "the variable `PORTER_BUCKET` is not set",
            1,
        ),
        case(
            "unclosed variable",
            base_with("s3_bucket: svc-builds", "s3_bucket: ${PORTER_BUCKET"),
            Error,
            12,
            Some(16),
            "environments[0].regions[0].s3_bucket",
            "opens `${` without a closing `}`",
            1,
        ),
    ]
}

/// A second environment, appended after BASE (it starts on line 25).
const SECOND_ENV: &str = "\
- name: stage
  role_arn: arn:aws:iam::123456789012:role/porter-deployment
  instance_type: m5.large
  regions:
  - name: us-west-2
    s3_bucket: svc-builds
    elb: none
    azs:
    - name: us-west-2a
";

/// A second region, spliced into BASE's region list in place of its
/// containers (so it starts on line 18).
const SECOND_REGION: &str = concat!(
    "  - name: us-east-1\n",
    "    s3_bucket: svc-builds-east\n",
    "    elb: none\n",
    "    azs:\n",
    "    - name: us-east-1a\n",
);

#[test]
fn malformed_configs_are_reported_where_they_are_wrong() {
    let cases = malformed_cases();
    assert!(cases.len() >= 24, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let loaded = load(&c.text);
        let found = loaded
            .diagnostics
            .iter()
            .find(|d| d.severity == c.severity && d.path == c.path && d.message.contains(c.message));
        let problem = match found {
            None => Some("no such diagnostic".to_owned()),
            Some(d) if d.line != c.line => Some(format!("line {} (want {})", d.line, c.line)),
            Some(d) if c.col.is_some_and(|col| col != d.col) => Some(format!("column {} (want {:?})", d.col, c.col)),
            Some(_) if count(&loaded, Severity::Error) != c.errors => Some(format!(
                "{} errors (want {})",
                count(&loaded, Severity::Error),
                c.errors
            )),
            Some(_) if c.errors > 0 && loaded.config.is_some() => {
                Some("a config was returned despite errors".to_owned())
            }
            Some(_) if c.errors == 0 && loaded.config.is_none() => Some("no config returned without errors".to_owned()),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "case `{}`: {problem}; want {:?} {}:{:?} `{}` ~ {:?}; got:\n{}",
                c.name,
                c.severity,
                c.line,
                c.col,
                c.path,
                c.message,
                dump(&loaded)
            ));
        }
        // Nothing that stops a deploy may slip through `deployable`.
        if c.severity != Severity::Warning && load(&c.text).deployable().is_ok() {
            failures.push(format!("case `{}`: deployable() accepted it", c.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_error_is_reported_in_one_run() {
    let text = base_with("service_name: svc-api", "service_name: svc_api")
        .replace("instance_type: m5.large", "instance_type: large")
        .replace("inet_port: 3000", "inet_port: 0");
    let loaded = load(&text);
    let errors: Vec<_> = loaded.errors().collect();
    assert_eq!(errors.len(), 3, "{}", dump(&loaded));
    // In file order.
    assert_eq!(
        errors.iter().map(|d| (d.line, d.path.as_str())).collect::<Vec<_>>(),
        vec![
            (1, "service_name"),
            (5, "environments[0].instance_type"),
            (21, "environments[0].regions[0].containers[0].inet_port"),
        ]
    );
    assert!(loaded.config.is_none());
}

#[test]
fn every_unset_variable_is_reported_in_one_run() {
    let text = base_with("s3_bucket: svc-builds", "s3_bucket: ${PORTER_BUCKET}")
        .replace("vpc_id: vpc-0a1b2c3d", "vpc_id: ${PORTER_VPC}")
        .replace("- name: us-west-2a", "- name: ${REGION}a");
    let loaded = load(&text);
    let errors: Vec<_> = loaded.errors().collect();
    assert_eq!(errors.len(), 2, "{}", dump(&loaded));
    assert!(errors[0].message.contains("PORTER_VPC"));
    assert_eq!(errors[0].path, "environments[0].regions[0].vpc_id");
    assert!(errors[1].message.contains("PORTER_BUCKET"));
}

#[test]
fn set_variables_are_expanded() {
    let text = base_with("- name: us-west-2a", "- name: ${REGION}a").replace(
        "role_arn: arn:aws:iam::123456789012:role/porter-deployment",
        "role_arn: ${ROLE}",
    );
    let loaded = load(&text);
    assert!(loaded.diagnostics.is_empty(), "{}", dump(&loaded));
    let config = loaded.deployable().unwrap();
    let region = &config.environments[0].regions[0];
    assert_eq!(region.azs[0].name, "us-west-2a");
    assert_eq!(region.role_arn, "arn:aws:iam::123456789012:role/porter-deployment");
}

#[test]
fn located_diagnostics_print_file_line_column_and_path() {
    let loaded = load(&base_with("inet_port: 3000", "inet_port: 0"));
    let printed = dump(&loaded);
    assert_eq!(
        printed,
        ".porter/config:21:18: error: environments[0].regions[0].containers[0].inet_port: \
         `0` is not a port number from 1 to 65535"
    );
}

/// A config in the style of porter's own samples: anchors, merge keys,
/// anchor-holder keys, porter keys this product does not act on, and TODO
/// placeholders.
const PORTER_STYLE: &str = r#"service_name: svc-api
porter_version: v5.3.0

_container_base_inet: &container_base_inet
  topology: inet
  inet_port: 3000
  dockerfile: Dockerfile
  dockerfile_build: Dockerfile.build
  uid: 601
  read_only: true
  src_env_file:
    s3_bucket: svc-secrets
    s3_key: dev.env
  health_check:
    method: GET
    path: /custom_health

_container_base_worker: &container_base_worker
  <<: *container_base_inet
  topology: worker
  inet_port: ~
  health_check: &health_head
    method: HEAD
    path: /ping

_region_base: &region_base
  s3_bucket: TODO
  elb: none

hooks:
  pre_pack:
  - repo: git@github.com:example/porter-hooks.git
    ref: v1.0.0
  post_provision:
  - dockerfile: .porter/hooks/notify

slack:
  pack_failure_webhook_url: https://hooks.slack.com/services/T000/B000/XXXX

environments:
- name: dev
  role_arn: arn:aws:iam::123456789012:role/porter-deployment
  stack_definition_path: .porter/dev-stack.json
  hot_swap: true
  haproxy:
    compression: true
    request_headers:
    - X-Request-Id
  regions:
  - <<: *region_base
    name: us-west-2
    vpc_id: vpc-TODO
    azs:
    - name: us-west-2a
      subnet_id: subnet-TODO
    - name: us-west-2b
      subnet_id: subnet-TODO
    containers:
    - <<: *container_base_inet
      name: web
    - <<: *container_base_worker
      name: jobs

- name: prod
  role_arn: arn:aws:iam::123456789012:role/porter-deployment
  hot_swap: true
  haproxy:
    compression: false
  instance_type: c5.xlarge
  regions:
  - <<: [*region_base]
    name: us-east-1
    s3_bucket: svc-builds-prod
    elb: svc-prod
    instance_count: 4
    azs:
    - {name: us-east-1a}
    - {name: us-east-1b}
    containers:
    - <<: *container_base_inet
      name: web
      dockerfile: Dockerfile.prod
"#;

#[test]
fn porter_style_config_passes_with_warnings_only() {
    let loaded = load(PORTER_STYLE);
    assert_eq!(count(&loaded, Severity::Error), 0, "{}", dump(&loaded));

    // Each not-acted-on key is warned about once, however often it appears.
    let mut warned: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.path.rsplit('.').next().unwrap().to_owned())
        .collect();
    warned.sort();
    assert_eq!(
        warned,
        [
            "dockerfile",
            "dockerfile_build",
            "haproxy",
            "hot_swap",
            "pack_failure_webhook_url",
            "read_only",
            "src_env_file",
            "uid",
        ],
        "{}",
        dump(&loaded)
    );
    // porter refuses a porter_version that is not vX.Y.Z; so does validate.
    let placeholder = load(&PORTER_STYLE.replace("v5.3.0", "vBCOOK"));
    let version = placeholder
        .diagnostics
        .iter()
        .find(|d| d.path == "porter_version")
        .unwrap();
    assert_eq!((version.severity, version.line, version.col), (Severity::Error, 2, 17));
    assert!(version.message.contains("`vBCOOK` is not a porter release like v5.3.0"));
    let hot_swap = loaded
        .diagnostics
        .iter()
        .find(|d| d.path.ends_with("hot_swap"))
        .unwrap();
    assert_eq!(hot_swap.path, "environments[0].hot_swap");
    assert!(hot_swap.message.contains("accepted but not acted on"));

    // The placeholders and the missing stack definition make it not
    // deployable, each named where it is.
    let incomplete: Vec<(usize, &str)> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Incomplete)
        .map(|d| (d.line, d.path.as_str()))
        .collect();
    assert_eq!(
        incomplete,
        vec![
            (27, "environments[0].regions[0].s3_bucket"),
            (43, "environments[0].stack_definition_path"),
            (52, "environments[0].regions[0].vpc_id"),
            (55, "environments[0].regions[0].azs[0].subnet_id"),
            (57, "environments[0].regions[0].azs[1].subnet_id"),
        ],
        "{}",
        dump(&loaded)
    );
    let missing = loaded
        .diagnostics
        .iter()
        .find(|d| d.path == "environments[0].stack_definition_path")
        .unwrap();
    assert!(missing.message.contains("dev-stack.json"), "{}", missing.message);
    assert!(missing.message.contains("relative to the repository root"));

    // The config itself is there (validate passes) ...
    let config = loaded.config.clone().expect("no errors, so a config");
    assert_eq!(config.porter_version.as_deref(), Some("v5.3.0"));
    let dev = config.environment("dev").unwrap();
    let west = dev.region("us-west-2").unwrap();
    assert_eq!(west.s3_bucket, "TODO");
    assert!(west.elbs.is_empty(), "elb: none means no ELB");
    assert_eq!(west.azs.len(), 2);
    assert_eq!(
        west.containers,
        vec![
            Container {
                name: "web".into(),
                topology: Topology::Inet,
                inet_port: Some(3000),
                health_check: HealthCheck {
                    method: "GET".into(),
                    path: "/custom_health".into(),
                },
            },
            Container {
                name: "jobs".into(),
                topology: Topology::Worker,
                inet_port: None,
                health_check: HealthCheck {
                    method: "HEAD".into(),
                    path: "/ping".into(),
                },
            },
        ]
    );
    let prod = config.environment("prod").unwrap();
    assert_eq!(prod.instance_type, "c5.xlarge");
    let east = prod.region("us-east-1").unwrap();
    // Explicit keys win over the merged ones.
    assert_eq!(east.s3_bucket, "svc-builds-prod");
    assert_eq!(east.elbs, vec![Elb::classic("svc-prod")]);
    assert_eq!(east.instance_count, 4);
    assert_eq!(east.vpc_id, None);
    assert_eq!(east.azs[1].name, "us-east-1b");

    // ... but deploying refuses it, naming every blocking finding.
    let err = loaded.deployable().unwrap_err();
    assert!(
        matches!(&err, ConfigError::NotDeployable { findings, .. } if findings.len() >= 3),
        "{err}"
    );
    let err = err.to_string();
    assert!(err.contains("cannot be deployed"), "{err}");
    assert!(
        err.contains(".porter/config:27:14: not deployable: environments[0].regions[0].s3_bucket"),
        "{err}"
    );
    assert!(err.contains("vpc-TODO"), "{err}");
    assert!(err.contains("subnet-TODO"), "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn warnings_alone_leave_the_config_deployable() {
    let text = base_with(
        "service_name: svc-api\n",
        "service_name: svc-api\nslack: {promote_failure_webhook_url: 'https://hooks.slack.com/services/T0/B0/SECRET'}\n",
    )
        .replace("    elb: svc-dev\n", "")
        .replace(
            "  instance_type: m5.large\n",
            "  instance_type: m5.large\n  hot_swap: true\n",
        );
    let loaded = load(&text);
    assert_eq!(count(&loaded, Severity::Warning), 3, "{}", dump(&loaded));
    assert!(loaded
        .diagnostics
        .iter()
        .any(|d| d.path == "environments[0].regions[0].elb" && d.message.contains("`elb: none`")));
    let config = loaded.deployable().expect("warnings do not block a deploy");
    assert!(config.environments[0].regions[0].elbs.is_empty());
}

#[test]
fn target_groups_sit_beside_classic_elbs() {
    // One target group, several, and a region moving from a classic ELB to
    // an ALB with both.
    let text = BASE.replace(
        "    elb: svc-dev\n",
        "    elb: svc-dev\n    target_groups:\n    - name: web-blue\n    - name: web-green\n",
    );
    let loaded = load(&text);
    let diagnostics = dump(&loaded);
    let config = loaded.deployable().unwrap_or_else(|_| panic!("{diagnostics}"));
    assert_eq!(
        config.environments[0].regions[0].elbs,
        vec![
            Elb::classic("svc-dev"),
            Elb::target_group("web-blue"),
            Elb::target_group("web-green")
        ]
    );
    let text = BASE.replace("    elb: svc-dev\n", "    target_group: web\n");
    let loaded = load(&text);
    let diagnostics = dump(&loaded);
    assert!(
        !loaded.diagnostics.iter().any(|d| d.message.contains("`elb: none`")),
        "a target group alone is a load balancer: {diagnostics}"
    );
    let config = loaded.deployable().unwrap_or_else(|_| panic!("{diagnostics}"));
    assert_eq!(config.environments[0].regions[0].elbs, vec![Elb::target_group("web")]);
    // A release written before target groups reads as classic ELBs.
    let old: Elb = serde_json::from_str(r#"{"name": "svc-dev", "tag": null}"#).unwrap();
    assert_eq!(old, Elb::classic("svc-dev"));
    assert_eq!(
        serde_json::to_value(Elb::target_group("web")).unwrap()["kind"],
        "target_group"
    );
}

// --- stack_definition_path ---------------------------------------------------

fn write(root: &Path, rel: &str, text: &str) {
    let file = root.join(rel);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

#[test]
fn stack_definition_resolves_from_repo_root_and_region_wins() {
    let repo = tempfile::tempdir().unwrap();
    write(
        repo.path(),
        ".porter/env-stack.json",
        r#"{"Resources": {"Env": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "env"}}}}"#,
    );
    write(
        repo.path(),
        ".porter/region-stack.json",
        r#"{"Resources": {"Region": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "region"}}}}"#,
    );
    let text = format!(
        "{}{}",
        base_with(
            "  instance_type: m5.large\n",
            "  instance_type: m5.large\n  stack_definition_path: .porter/env-stack.json\n",
        )
        .replace(
            "    vpc_id: vpc-0a1b2c3d\n",
            "    vpc_id: vpc-0a1b2c3d\n    stack_definition_path: .porter/region-stack.json\n",
        ),
        // a second region without its own: the environment's applies
        SECOND_REGION,
    );
    // The config file's own location and the working directory play no part.
    let loaded = load_in(&text, repo.path());
    assert!(loaded.diagnostics.is_empty(), "{}", dump(&loaded));
    let config = loaded.deployable().unwrap();
    let env = &config.environments[0];
    let west = env.region("us-west-2").unwrap();
    let west_def = west.stack_definition.as_ref().unwrap();
    assert_eq!(west_def.path, ".porter/region-stack.json");
    assert_eq!(
        west_def.template["Resources"]["Region"]["Properties"]["GroupDescription"],
        "region"
    );
    let east = env.region("us-east-1").unwrap();
    let east_def = east.stack_definition.as_ref().unwrap();
    assert_eq!(east_def.path, ".porter/env-stack.json");
    assert_eq!(
        east_def.template["Resources"]["Env"]["Properties"]["GroupDescription"],
        "env"
    );

    // Relative to the repository root, not to anything else.
    let elsewhere = tempfile::tempdir().unwrap();
    let loaded = load_in(&text, elsewhere.path());
    assert_eq!(count(&loaded, Severity::Incomplete), 2, "{}", dump(&loaded));
    assert_eq!(count(&loaded, Severity::Error), 0, "{}", dump(&loaded));
    assert!(loaded.deployable().is_err());
}

/// An overlay is checked by its allow-list where the config names it: a
/// refusal names the file and the JSON path, and porter's own overlays
/// pass.
#[test]
fn overlay_outside_its_stack_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    write(
        repo.path(),
        ".porter/stack.json",
        r#"{"Resources": {"AutoScalingGroup": {"Properties": {"LoadBalancerNames": ["production-web"]}}}}"#,
    );
    let text = base_with(
        "  instance_type: m5.large\n",
        "  instance_type: m5.large\n  stack_definition_path: .porter/stack.json\n",
    );
    let loaded = load_in(&text, repo.path());
    let errors: Vec<&Diagnostic> = loaded.errors().collect();
    assert_eq!(errors.len(), 1, "{}", dump(&loaded));
    assert_eq!(errors[0].path, "environments[0].stack_definition_path");
    assert!(
        errors[0].message.contains(".porter/stack.json")
            && errors[0]
                .message
                .contains("Resources.AutoScalingGroup.Properties.LoadBalancerNames")
            && errors[0].message.contains("promote"),
        "{}",
        errors[0].message
    );
    assert!(loaded.deployable().is_err());

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/overlays");
    for name in ["porter-sample-project.json", "porter-cis-ami.json", "porter-vpc.json"] {
        let text_of = std::fs::read_to_string(fixtures.join(name)).unwrap();
        write(repo.path(), ".porter/stack.json", &text_of);
        let loaded = load_in(&text, repo.path());
        assert!(loaded.diagnostics.is_empty(), "{name}: {}", dump(&loaded));
    }
}

/// A stack definition that is not JSON is an error naming the file.
#[test]
fn stack_definition_not_json_names_the_file() {
    let repo = tempfile::tempdir().unwrap();
    write(repo.path(), "stack.json", "{\"Resources\": {\n  \"A\": }\n}\n");
    write(repo.path(), "list.json", "[1, 2]");
    let text = base_with(
        "  instance_type: m5.large\n",
        "  instance_type: m5.large\n  stack_definition_path: stack.json\n",
    )
    .replace(
        "    vpc_id: vpc-0a1b2c3d\n",
        "    vpc_id: vpc-0a1b2c3d\n    stack_definition_path: list.json\n",
    );
    let loaded = load_in(&text, repo.path());
    let errors: Vec<_> = loaded.errors().collect();
    assert_eq!(errors.len(), 2, "{}", dump(&loaded));
    assert_eq!(errors[0].path, "environments[0].stack_definition_path");
    assert_eq!((errors[0].line, errors[0].col), (6, 26));
    assert!(
        errors[0].message.contains("`stack.json` is not valid JSON: line 2"),
        "{}",
        errors[0].message
    );
    assert_eq!(errors[1].path, "environments[0].regions[0].stack_definition_path");
    assert!(
        errors[1].message.contains("`list.json` must hold a JSON object"),
        "{}",
        errors[1].message
    );
    assert!(loaded.config.is_none());
}

/// An overlay is merged into a stack that runs with deployment rights, so
/// it may only come from inside the repository: not by an absolute path,
/// not through `..`, not through a link.
#[test]
fn stack_definition_outside_the_repository_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "evil.json", "{\"Resources\": {}}");
    let repo = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path().join("evil.json"), repo.path().join("link.json")).unwrap();
    let absolute = outside.path().join("evil.json").display().to_string();
    let mut cases = vec![
        (absolute.clone(), "leaves the repository"),
        ("../evil.json".to_owned(), "leaves the repository"),
        ("sub/../../evil.json".to_owned(), "leaves the repository"),
    ];
    if cfg!(unix) {
        cases.push(("link.json".to_owned(), "is a link to a file outside the repository"));
    }
    for (rel, expected) in cases {
        let text = base_with(
            "  instance_type: m5.large\n",
            &format!("  instance_type: m5.large\n  stack_definition_path: {rel}\n"),
        );
        let loaded = load_in(&text, repo.path());
        let errors: Vec<_> = loaded.errors().collect();
        assert_eq!(errors.len(), 1, "{rel}: {}", dump(&loaded));
        assert_eq!(errors[0].path, "environments[0].stack_definition_path");
        assert!(errors[0].message.contains(expected), "{rel}: {}", errors[0].message);
        assert!(loaded.config.is_none(), "{rel}: not deployable");
    }
}

// --- defaults ------------------------------------------------------------------

#[test]
fn defaults_are_filled_in() {
    let text = "\
service_name: svc-api
environments:
- name: dev
  role_arn: arn:aws:iam::123456789012:role/porter-deployment
  regions:
  - name: us-west-2
    s3_bucket: svc-builds
    elb: none
    azs:
    - name: us-west-2a
";
    let loaded = load(text);
    assert!(loaded.diagnostics.is_empty(), "{}", dump(&loaded));
    let config = loaded.deployable().unwrap();
    assert_eq!(config.porter_version, None);
    let env = &config.environments[0];
    assert_eq!(env.instance_type, "m3.medium");
    assert!(env.blackout_windows.is_empty());
    let region = &env.regions[0];
    assert_eq!(region.instance_count, 1);
    assert_eq!(
        region.role_arn, "arn:aws:iam::123456789012:role/porter-deployment",
        "inherited from the environment"
    );
    assert_eq!(region.vpc_id, None);
    assert_eq!(region.azs[0].subnet_id, None);
    assert!(region.elbs.is_empty());
    assert_eq!(region.stack_definition, None);
    assert_eq!(
        region.containers,
        vec![Container {
            name: "primary".into(),
            topology: Topology::Inet,
            inet_port: None,
            health_check: HealthCheck {
                method: "GET".into(),
                path: "/health".into(),
            },
        }]
    );
}

#[test]
fn region_settings_override_the_environment() {
    let text = "\
service_name: svc-api
environments:
- name: dev
  role_arn: arn:aws:iam::123456789012:role/porter-deployment
  instance_count: 3
  regions:
  - name: us-west-2
    s3_bucket: svc-builds
    elb: none
    azs:
    - name: us-west-2a
  - name: eu-west-1
    role_arn: arn:aws:iam::210987654321:role/porter-eu
    instance_count: 5
    s3_bucket: svc-builds-eu
    elb: none
    azs:
    - name: eu-west-1a
";
    let loaded = load(text);
    assert!(loaded.diagnostics.is_empty(), "{}", dump(&loaded));
    let config = loaded.deployable().unwrap();
    let env = &config.environments[0];
    assert_eq!(env.regions[0].instance_count, 3, "the environment's count");
    assert_eq!(
        env.regions[0].role_arn,
        "arn:aws:iam::123456789012:role/porter-deployment"
    );
    assert_eq!(env.regions[1].instance_count, 5);
    assert_eq!(env.regions[1].role_arn, "arn:aws:iam::210987654321:role/porter-eu");
}

/// A variable's value may be a secret: a finding about the value it
/// produced names the variable instead, in the message and the path.
#[test]
fn findings_never_repeat_an_expanded_value() {
    let secret = lookup("SECRET").unwrap();
    for (from, to) in [
        ("s3_bucket: svc-builds", "s3_bucket: ${SECRET}"),
        ("  - name: us-west-2\n", "  - name: x${SECRET}\n"),
        ("instance_type: m5.large", "instance_type: m5.large\n  ${SECRET}: 1"),
    ] {
        let loaded = load(&base_with(from, to));
        let printed = dump(&loaded);
        assert!(!printed.is_empty(), "{to}: the value is refused");
        assert!(!printed.contains(&secret), "{to}: the value is echoed: {printed}");
        assert!(printed.contains("${SECRET}"), "{to}: names the variable: {printed}");
    }
}

#[test]
fn a_deploys_rollout_override_is_checked_like_the_config() {
    let cfg = load(&base_with(
        "  instance_type: m5.large\n",
        "  instance_type: m5.large\n  rollout:\n    bake_seconds: 60\n    alarms: [errors]\n",
    ))
    .config
    .unwrap();
    let env = &cfg.environments[0];
    let plan = env.rollout_plan(None).unwrap();
    assert_eq!(
        plan.waves,
        vec![vec!["us-west-2".to_owned()]],
        "one wave of every region"
    );
    assert!(plan.gated && plan.bake_seconds == 60 && plan.alarms == ["errors"]);
    let over = |json: &str| env.rollout_plan(Some(&serde_json::from_str(json).unwrap()));
    assert!(!over(r#"{"bake_seconds": 0, "alarms": []}"#).unwrap().gated);
    // The key at fault, and what is wrong with it.
    let refused = |json: &str| match over(json).unwrap_err() {
        ConfigError::Rollout { key, problem } => (key, problem),
        other => panic!("{json}: not a rollout error: {other}"),
    };
    let (key, problem) = refused(r#"{"waves": [["us-west-2"], ["us-west-2"]]}"#);
    assert!(key == "waves" && problem.contains("in two waves"), "{problem}");
    let (key, problem) = refused(r#"{"waves": [["eu-west-1"]]}"#);
    assert!(key == "waves" && problem.contains("not a region of dev"), "{problem}");
    let (key, problem) = refused(r#"{"waves": [[]]}"#);
    assert!(key == "waves" && problem.contains("at least one region"), "{problem}");
    let (key, problem) = refused(r#"{"bake_seconds": 100000}"#);
    assert!(key == "bake_seconds" && problem.contains("at most 86400"), "{problem}");
    let (key, problem) = refused("{\"alarms\": [\"a\\nb\"]}");
    assert!(
        key == "alarms" && problem.contains("not a CloudWatch alarm name"),
        "{problem}"
    );
    assert_eq!(
        over(r#"{"waves": [[]]}"#).unwrap_err().to_string(),
        "rollout.waves: a wave needs at least one region"
    );
    let canary = over(r#"{"canary_instances": 1}"#).unwrap();
    assert!(canary.canary && canary.canary_in("us-west-2") == 1);
    assert_eq!(plan.baking_seconds(), 60, "one wave of 60 s");
    assert_eq!(canary.baking_seconds(), 120, "the canaries bake too");
    let (key, problem) = refused(r#"{"canary_instances": 3}"#);
    assert!(
        key == "canary_instances" && problem.contains("us-west-2, which launches 2 instance(s)"),
        "{problem}"
    );
    assert!(serde_json::from_str::<RolloutOverride>(r#"{"canaries": 1}"#).is_err());
}

/// A region sets its own canary and alarms, and a deploy can set them for
/// all regions.
#[test]
fn region_canary_and_alarms_and_deploy_override() {
    let cfg = load(&base_with(
        "    instance_count: 2\n",
        "    instance_count: 2\n    rollout:\n      canary_instances: 1\n      alarms: [west-errors]\n",
    ))
    .config
    .unwrap();
    let env = &cfg.environments[0];
    let plan = env.rollout_plan(None).unwrap();
    assert_eq!(plan.canary_in("us-west-2"), 1);
    assert_eq!(plan.alarms_in("us-west-2"), ["west-errors"]);
    assert!(plan.canary && plan.gated, "the region's own canary and alarms count");
    let plan = env
        .rollout_plan(Some(
            &serde_json::from_str(r#"{"canary_instances": 0, "alarms": []}"#).unwrap(),
        ))
        .unwrap();
    assert_eq!(plan.canary_in("us-west-2"), 0, "a deploy's canary is every region's");
    assert!(plan.alarms_in("us-west-2").is_empty() && !plan.canary && !plan.gated);
}

/// Secrets are references under the service's own environment, and a
/// region adds to them or replaces them.
#[test]
fn secrets_are_references_regions_add_or_replace() {
    let text = base_with(
        "  instance_type: m5.large\n",
        "  instance_type: m5.large\n  secrets:\n    DATABASE_URL: secretsmanager:porter/svc-api/dev/database-url\n    API_KEY: ssm:/porter/svc-api/dev/api-key\n",
    )
    .replace(
        "    instance_count: 2\n",
        "    instance_count: 2\n    secrets:\n      API_KEY: ssm:/porter/svc-api/dev/us-west-2/api-key\n      REGION_ONLY: secretsmanager:porter/svc-api/dev/west\n",
    );
    let loaded = load(&text);
    assert_eq!(count(&loaded, Severity::Error), 0, "{}", dump(&loaded));
    let config = loaded.config.unwrap();
    let region = &config.environments[0].regions[0];
    let got: Vec<String> = region.secrets.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        got,
        [
            "DATABASE_URL=secretsmanager:porter/svc-api/dev/database-url",
            "API_KEY=ssm:/porter/svc-api/dev/us-west-2/api-key",
            "REGION_ONLY=secretsmanager:porter/svc-api/dev/west",
        ]
    );
}

/// A secret outside its prefix, a value in clear or a reserved variable is
/// refused where it is written.
#[test]
fn bad_secrets_are_refused_where_written() {
    let with = |secrets: &str| {
        load(&base_with(
            "  instance_type: m5.large\n",
            &format!("  instance_type: m5.large\n  secrets:\n{secrets}"),
        ))
    };
    let cases = [
        (
            "    DB: secretsmanager:porter/svc-api/prod/database-url\n",
            "environments[0].secrets.DB",
            "is not under `porter/svc-api/dev/`",
        ),
        (
            "    DB: ssm:/other-service/db\n",
            "environments[0].secrets.DB",
            "is not under `/porter/svc-api/dev/`",
        ),
        (
            "    DB: hunter2-the-password\n",
            "environments[0].secrets.DB",
            "never the value itself",
        ),
        (
            "    DB: secretsmanager:arn:aws:secretsmanager:us-west-2:123456789012:secret:x\n",
            "environments[0].secrets.DB",
            "a name, not an ARN",
        ),
        (
            "    PATH: ssm:/porter/svc-api/dev/path\n",
            "environments[0].secrets.PATH",
            "would change how the instance boots",
        ),
        (
            "    AWS_SECRET_ACCESS_KEY: ssm:/porter/svc-api/dev/k\n",
            "environments[0].secrets.AWS_SECRET_ACCESS_KEY",
            "would change how the instance boots",
        ),
        (
            "    PYTHONPATH: ssm:/porter/svc-api/dev/k\n",
            "environments[0].secrets.PYTHONPATH",
            "would change how the instance boots",
        ),
        (
            "    https_proxy: ssm:/porter/svc-api/dev/k\n",
            "environments[0].secrets.https_proxy",
            "would change how the instance boots",
        ),
        (
            "    service_pid: ssm:/porter/svc-api/dev/k\n",
            "environments[0].secrets.service_pid",
            "would change how the instance boots",
        ),
        (
            "    2FA: ssm:/porter/svc-api/dev/k\n",
            "environments[0].secrets.2FA",
            "not an environment variable name",
        ),
        (
            "    DB: ssm:/porter/svc-api/dev/\n",
            "environments[0].secrets.DB",
            "is not under",
        ),
        ("    - DB\n", "environments[0].secrets", "expected secrets"),
    ];
    for (secrets, path, message) in cases {
        let loaded = with(secrets);
        let found = loaded
            .diagnostics
            .iter()
            .find(|d| d.severity == Severity::Error && d.path == path);
        assert!(
            found.is_some_and(|d| d.message.contains(message) && d.line == 7),
            "{secrets:?}: {}",
            dump(&loaded)
        );
        assert!(loaded.config.is_none());
        // A value written in clear is never echoed back.
        assert!(!dump(&loaded).contains("hunter2"), "{}", dump(&loaded));
    }
}

/// porter's `env_file` and `secrets_command` say, once, what replaces them.
#[test]
fn env_file_and_secrets_command_name_successor() {
    let text = base_with(
        "    instance_count: 2\n",
        "    instance_count: 2\n    secrets_exec_name: /usr/bin/fetch-secrets\n    secrets_exec_args: [--env, dev]\n",
    )
    .replace(
        "      inet_port: 3000\n",
        "      inet_port: 3000\n      src_env_file: {s3_bucket: b, s3_key: k}\n",
    );
    let loaded = load(&text);
    assert_eq!(count(&loaded, Severity::Error), 0, "{}", dump(&loaded));
    let warnings: Vec<&Diagnostic> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    for key in ["secrets_exec_name", "secrets_exec_args", "src_env_file"] {
        let found: Vec<_> = warnings.iter().filter(|d| d.path.ends_with(key)).collect();
        assert_eq!(found.len(), 1, "{key}: {}", dump(&loaded));
        assert!(found[0].message.contains("`secrets:`"), "{}", found[0].message);
    }
}

/// Slack webhooks are secrets of the service's own; a URL in clear is
/// neither used nor repeated.
#[test]
fn slack_webhooks_are_the_services_secrets() {
    let with = |slack: &str| load_section("slack", slack);
    let loaded = with(
        "  pack_success_webhook_url: secretsmanager:porter/svc-api/notifications/team\n  deploy_webhook_url: secretsmanager:porter/svc-api/notifications/oncall\n",
    );
    assert_clean(&loaded);
    let slack = loaded.config.unwrap().slack;
    assert_eq!(slack["pack_success_webhook_url"], "porter/svc-api/notifications/team");
    assert_eq!(slack["deploy_webhook_url"], "porter/svc-api/notifications/oncall");

    let loaded = with("  promote_success_webhook_url: https://hooks.slack.com/services/T0/B0/SECRETTOKEN\n  pack_failure_webhook_url: https://hooks.slack.com/services/T0/B0/SECRETTOKEN\n");
    assert_eq!(count(&loaded, Severity::Warning), 1, "said once: {}", dump(&loaded));
    let warning = loaded
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Warning)
        .unwrap();
    assert_eq!(warning.path, "slack.promote_success_webhook_url");
    assert!(
        warning.message.starts_with(
            "promote_success_webhook_url, pack_failure_webhook_url are webhook URLs written in clear, so not used"
        ) && warning.message.contains("porter/svc-api/notifications/"),
        "{}",
        warning.message
    );
    assert!(!dump(&loaded).contains("SECRETTOKEN"));
    assert!(loaded.config.unwrap().slack.is_empty());

    for (slack, message) in [
        (
            "  pack_success_webhook_url: secretsmanager:porter/other/notifications/x\n",
            "is not a secret under `porter/svc-api/notifications/`",
        ),
        (
            "  pack_success_webhook_url: team-channel\n",
            "expected `secretsmanager:porter/svc-api/notifications/NAME`",
        ),
        (
            "  pack_sucess_webhook_url: secretsmanager:porter/svc-api/notifications/x\n",
            "did you mean `pack_success_webhook_url`?",
        ),
    ] {
        let loaded = with(slack);
        assert!(
            has_error(&loaded, |d| d.line == 3 && d.message.contains(message)),
            "{slack}: {}",
            dump(&loaded)
        );
    }
}

/// Hooks take porter's `dockerfile` or a `command`, and say where they are
/// wrong.
#[test]
fn hooks_take_dockerfile_or_command() {
    let with = |hooks: &str| load_section("hooks", hooks);
    let loaded = with(
        "  pre_provision:\n  - command: scripts/migrate --check\n    environment: {DB: staging, TOKEN: }\n    concurrent: true\n  - {dockerfile: hooks/Dockerfile, concurrent: true}\n  post_promote:\n  - {repo: 'https://example.com/plugins.git', ref: v1, run_condition: always}\n",
    );
    assert_clean(&loaded);
    let hooks = loaded.config.unwrap().hooks;
    let pre = &hooks["pre_provision"];
    assert_eq!(pre[0].run, HookRun::Command("scripts/migrate --check".into()));
    assert_eq!(pre[0].environment["DB"], Some("staging".into()));
    assert_eq!(
        pre[0].environment["TOKEN"], None,
        "a name alone passes the deploy's variable on"
    );
    assert!(pre[0].concurrent && pre[1].concurrent);
    assert_eq!(pre[1].run, HookRun::Dockerfile("hooks/Dockerfile".into()));
    let plugin = &hooks["post_promote"][0];
    assert_eq!(
        plugin.run,
        HookRun::Dockerfile("Dockerfile".into()),
        "a plugin builds its own Dockerfile"
    );
    assert_eq!(
        (plugin.git_ref.as_deref(), plugin.run_condition),
        (Some("v1"), RunCondition::Always)
    );

    for (hooks, path, message) in [
        (
            "  pre_pack:\n  - {environment: {A: b}}\n",
            "hooks.pre_pack[0]",
            "needs `dockerfile:`",
        ),
        (
            "  pre_pack:\n  - {command: make, dockerfile: D}\n",
            "hooks.pre_pack[0].dockerfile",
            "not both",
        ),
        (
            "  pre_pack:\n  - {dockerfile: ../outside/Dockerfile}\n",
            "hooks.pre_pack[0].dockerfile",
            "inside the repository",
        ),
        (
            "  pre_pack:\n  - {command: make, ref: main}\n",
            "hooks.pre_pack[0].ref",
            "give the repo too",
        ),
        (
            "  post_pack:\n  - {command: make, run_condition: sometimes}\n",
            "hooks.post_pack[0].run_condition",
            "expected pass, fail or always",
        ),
        (
            "  post_pack:\n  - {command: make, concurrent: maybe}\n",
            "hooks.post_pack[0].concurrent",
            "expected true or false",
        ),
        (
            "  post_pack:\n  - {command: make, environment: {PORTER_VERSION: x}}\n",
            "hooks.post_pack[0].environment.PORTER_VERSION",
            "which porter sets",
        ),
        (
            "  post_pack:\n  - {command: make, colour: red}\n",
            "hooks.post_pack[0].colour",
            "unknown key `colour`",
        ),
        (
            "  post_pack:\n  - command: echo ${X:-none}\n",
            "hooks.post_pack[0].command",
            "write $NAME without braces",
        ),
        (
            "  Pre-Pack:\n  - {command: make}\n",
            "hooks.Pre-Pack",
            "not a hook name",
        ),
    ] {
        let loaded = with(hooks);
        assert!(
            has_error(&loaded, |d| d.path == path && d.message.contains(message)),
            "{hooks:?}: {}",
            dump(&loaded)
        );
        assert!(loaded.config.is_none());
    }

    // Hooks a deploy never runs are said once each.
    let loaded = with("  pre_pack:\n  - {command: make, run_condition: fail}\n  smoke_tests:\n  - {command: make smoke}\n  post_promte:\n  - {command: make}\n");
    let warnings: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].starts_with("hooks.pre_pack[0].run_condition: this hook never runs"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("smoke_tests") && warnings[1].contains("a hook of the service's own"),
        "{warnings:?}"
    );
    assert!(warnings[2].contains("did you mean `post_promote`?"), "{warnings:?}");
}

/// Findings clip and escape what they quote; a variable's value is hidden
/// all the same, whole, escaped or as a clipped start.
#[test]
fn a_value_is_redacted_clipped_escaped_or_whole() {
    let used = [("API_TOKEN".to_owned(), "ghp_Zq8Lm2Nx7Rv4Tw9Y'b3Kc6".to_owned())];
    let clipped = "`/ghp_Zq8Lm2Nx7Rv4…` holds `!`";
    assert_eq!(redact(clipped, &used), "`/${API_TOKEN}…` holds `!`");
    let escaped = r"`ghp_Zq8Lm2Nx7Rv4Tw9Y\'b3Kc6` is not a path";
    assert_eq!(redact(escaped, &used), "`${API_TOKEN}` is not a path");
    assert_eq!(redact("x ghp_Zq8Lm2Nx7Rv4Tw9Y'b3Kc6 y", &used), "x ${API_TOKEN} y");
    // Fewer bytes than a clip shows are not taken for the value.
    assert_eq!(redact("ghp_Zq8 and more", &used), "ghp_Zq8 and more");
    // A short value is hidden only whole.
    let short = [("STAGE".to_owned(), "prod".to_owned())];
    assert_eq!(redact("prod and pro", &short), "${STAGE} and pro");
}

/// A secret-like variable may go to a hook's `environment:` alone: not an
/// `ec2_bootstrap` hook's (the boot script is part of the template), not
/// an alarm's name, not a dynamic reference's.
#[test]
fn secrets_go_only_to_a_hooks_environment() {
    let lookup = |name: &str| Some(format!("value-of-{name}-0123456789"));
    let with_hooks = |hooks: &str| {
        let text = format!("{BASE}hooks:\n{hooks}");
        load_str(&text, Path::new(".porter/config"), Path::new("."), &lookup)
    };
    let ok = with_hooks("  pre_provision:\n  - command: ./publish\n    environment: {NPM_TOKEN: \"${NPM_TOKEN}\"}\n");
    assert!(ok.config.is_some(), "{:?}", ok.diagnostics);
    // BASE is 24 lines: `hooks:` is line 25, the hook's point 26.
    for (hooks, line, why) in [
        (
            "  ec2_bootstrap:\n  - command: ./agent\n    environment: {LICENSE_TOKEN: \"${LICENSE_TOKEN}\"}\n",
            28,
            "boot script",
        ),
        (
            "  ec2_bootstrap:\n  - command: ./agent --key ${AGENT_KEY}\n",
            27,
            "boot script",
        ),
        (
            "  pre_provision:\n  - command: ./publish ${NPM_TOKEN}\n",
            27,
            "only a hook's `environment:`",
        ),
    ] {
        let loaded = with_hooks(hooks);
        assert!(loaded.config.is_none(), "{hooks}");
        let messages: Vec<String> = loaded.located().map(|l| l.to_string()).collect();
        assert!(
            messages.iter().any(|m| m.contains(&format!("config:{line}:1:"))
                && m.contains("a secret by its name")
                && m.contains(why)),
            "{messages:?}"
        );
        assert!(!messages.iter().any(|m| m.contains("0123456789")), "{messages:?}");
    }
}

/// `auto_scaling_group:` and `stack_creation:` are checked where they are
/// written: bounds around instance_count, porter's 15 to 60 minutes, the
/// three failure modes, egress rules as porter wrote them.
#[test]
fn group_bounds_egress_and_stack_knobs_are_checked() {
    let region = |asg: &str| {
        BASE.replacen(
            "    instance_count: 2\n",
            &format!("    instance_count: 2\n    auto_scaling_group:\n{asg}"),
            1,
        )
    };
    let cases = [
        (region("      min_size: 3\n"), "auto_scaling_group.min_size", "above instance_count (2)"),
        (region("      max_size: 1\n"), "auto_scaling_group.max_size", "below instance_count (2)"),
        (region("      health_check_grace_period: 9000\n"), "health_check_grace_period", "from 0 to 7200"),
        (region("      security_group_egress:\n      - {cidr_ip: 10.0.0.0/33, ip_protocol: tcp, from_port: 443, to_port: 443}\n"), "security_group_egress[0].cidr_ip", "not a CIDR"),
        (region("      security_group_egress:\n      - {cidr_ip: 10.0.0.0/8, ip_protocol: tcp, from_port: 8080, to_port: 80}\n"), "security_group_egress[0]", "from_port at most to_port"),
        (region("      security_group_egress:\n      - {cidr_ip: 10.0.0.0/8, ip_protocol: gre}\n"), "ip_protocol", "not a protocol"),
        (format!("{BASE}  stack_creation: {{timeout_minutes: 90}}\n"), "stack_creation.timeout_minutes", "from 15 to 60"),
        (format!("{BASE}  stack_creation: {{on_failure: KEEP}}\n"), "stack_creation.on_failure", "DO_NOTHING"),
    ];
    for (text, path, says) in cases {
        let loaded = load(&text);
        let messages: Vec<String> = loaded.located().map(|l| l.to_string()).collect();
        assert!(loaded.config.is_none(), "{path}: {messages:?}");
        assert!(
            messages.iter().any(|m| m.contains(path) && m.contains(says)),
            "{path}: {messages:?}"
        );
    }
    // Egress without HTTPS is allowed, with a warning saying what breaks.
    let loaded = load(&region(
        "      security_group_egress:\n      - {cidr_ip: 10.0.0.0/8, ip_protocol: udp, from_port: 53, to_port: 53}\n",
    ));
    assert!(loaded.config.is_some());
    assert!(loaded.located().any(|l| l.to_string().contains("tcp 443")));
    // porter's own secrets_exec keys under it still only warn.
    let loaded = load(&region("      secrets_exec_name: echo\n"));
    assert!(loaded.config.is_some());
    assert!(loaded.located().any(|l| l.to_string().contains("not acted on")));
}

/// A release's steps (kept in the release record) follow its config.
#[test]
fn a_release_asks_for_the_steps_its_config_has_something_for() {
    let config = |extra: &str| {
        let text = format!(
            "service_name: web\nenvironments:\n- name: prod\n  role_arn: arn:aws:iam::123456789012:role/d\n  regions:\n  - name: us-west-2\n    azs:\n    - {{name: us-west-2a}}\n    s3_bucket: web-bucket\n{extra}"
        );
        load(&text).deployable().unwrap()
    };
    assert_eq!(Steps::of(&config("")), Steps::none());
    let steps = Steps::of(&config(
        "hooks:\n  pre_provision:\n  - command: make check\n  \
         post_promote:\n  - command: ./page-on-failure\n    run_condition: fail\n  \
         post_prune:\n  - command: ./report\n    run_condition: always\n\
         slack:\n  provision_success_webhook_url: secretsmanager:porter/web/notifications/deploys\n",
    ));
    assert_eq!(
        steps,
        Steps {
            hooks_after_pack: true,
            // A hook only for failures has nothing to do after a success.
            hooks_after_promote: false,
            hooks_after_prune: true,
            notify_provisioned: true,
            ..Steps::none()
        }
    );
}
