use super::*;
use crate::config;

const CONFIG: &str = "service_name: web\nenvironments:\n- name: prod\n  role_arn: arn:aws:iam::123456789012:role/d\n  instance_count: 3\n  regions:\n  - name: us-west-2\n    vpc_id: vpc-0a1b2c3d\n    azs:\n    - {name: us-west-2a, subnet_id: subnet-0a1b2c3d}\n    s3_bucket: web-bucket\n    elb: web-prod\n    key_pair_name: ops\n    containers:\n    - {name: api, inet_port: 3000, health_check: {method: GET, path: /ping}}\n  - name: us-east-1\n    azs:\n    - {name: us-east-1a}\n    - {name: us-east-1b}\n    s3_bucket: web-bucket-east\n    elb: none\n";

fn fixture() -> (Config, Release, PayloadLocation) {
    let loaded = config::load_str(CONFIG, std::path::Path::new("c"), std::path::Path::new("."), &|_| None);
    let cfg = loaded.deployable().unwrap();
    let release = Release::sample("web-bucket");
    let payload = PayloadLocation {
        bucket: "web-bucket".into(),
        key: "p.tar".into(),
        sha256: "f".repeat(64),
    };
    (cfg, release, payload)
}

/// The template of the config's first environment (prod) in its region
/// `region`.
fn render_region(
    cfg: &Config,
    region: usize,
    release: &Release,
    payload: &PayloadLocation,
    ctx: &RenderContext,
) -> Value {
    let env = &cfg.environments[0];
    render(cfg, env, &env.regions[region], release, payload, ctx)
}

#[test]
fn a_vpc_region_uses_its_subnets_and_the_elb_security_group() {
    let (cfg, release, payload) = fixture();
    let ctx = RenderContext {
        elb_security_groups: vec!["sg-elb".into()],
        live_capacity: None,
    };
    let t = render_region(&cfg, 0, &release, &payload, &ctx);
    let group = &t["Resources"]["AutoScalingGroup"];
    assert_eq!(group["Properties"]["VPCZoneIdentifier"], json!(["subnet-0a1b2c3d"]));
    assert_eq!(group["Properties"]["DesiredCapacity"], "3");
    assert_eq!(group["Properties"]["HealthCheckType"], "ELB");
    // A live fleet scaled out to 5 is replaced at 5; one scaled in
    // below the config's 3 starts at 3.
    for (live, want) in [(5, "5"), (1, "3")] {
        let ctx = RenderContext {
            live_capacity: Some(live),
            ..ctx.clone()
        };
        let t = render_region(&cfg, 0, &release, &payload, &ctx);
        let props = &t["Resources"]["AutoScalingGroup"]["Properties"];
        assert_eq!(
            (&props["MinSize"], &props["DesiredCapacity"], &props["MaxSize"]),
            (&json!("3"), &json!(want), &json!(want)),
            "live {live}"
        );
    }
    assert_eq!(group["CreationPolicy"]["ResourceSignal"]["Count"], 3);
    assert_eq!(
        t["Resources"]["InstanceSecurityGroup"]["Properties"]["VpcId"],
        "vpc-0a1b2c3d"
    );
    let ingress = &t["Resources"]["InstanceSecurityGroup"]["Properties"]["SecurityGroupIngress"][0];
    assert_eq!(ingress["SourceSecurityGroupId"], "sg-elb");
    assert_eq!(ingress["FromPort"], 3000);
    let data = &t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"];
    assert_eq!(data["KeyName"], "ops");
    let script = data["UserData"]["Fn::Base64"]["Fn::Sub"].as_str().unwrap();
    assert!(script.contains("s3://web-bucket/p.tar"));
    assert!(
        script.contains(&format!("{}  /tmp/payload.tar", "f".repeat(64))),
        "checks the sha256"
    );
    assert!(
        script.contains("http://127.0.0.1:3000/ping"),
        "waits for the configured health check"
    );
    assert!(script.contains("--resource AutoScalingGroup"));
}

/// The boot script as CloudFormation hands it to the instance.
fn boot_script(t: &Value) -> String {
    t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
        .as_str()
        .unwrap()
        .replace("${AWS::StackName}", "web-prod-abc123def456")
        .replace("${AWS::Region}", "us-west-2")
        .replace("${!", "${")
}

/// Asserts that each of `lines` is in `script`, in this order.
fn in_order(script: &str, lines: &[&str]) {
    let at: Vec<usize> = lines
        .iter()
        .map(|line| script.find(line).unwrap_or_else(|| panic!("no `{line}` in:\n{script}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in this order: {at:?}\n{script}");
}

fn bash_accepts(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user-data.sh");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn image_mode_starts_docker_logs_in_to_ecr_and_may_pull_only_its_repository() {
    let (cfg, mut release, payload) = fixture();
    release.image = Some("123456789012.dkr.ecr.us-west-2.amazonaws.com/team/web:1f2e3d4".into());
    let ctx = RenderContext {
        elb_security_groups: vec!["sg-elb".into()],
        live_capacity: None,
    };
    let t = render_region(&cfg, 0, &release, &payload, &ctx);
    let script = boot_script(&t);
    bash_accepts(&script);
    in_order(
        &script,
        &[
            "export PORTER_SERVICE_NAME=web PORTER_SERVICE_VERSION=",
            "systemctl enable --now docker",
            "aws ecr get-login-password --region us-west-2 | docker login --username AWS --password-stdin 123456789012.dkr.ecr.us-west-2.amazonaws.com",
            "docker pull 123456789012.dkr.ecr.us-west-2.amazonaws.com/team/web:1f2e3d4",
            "docker run -d --restart=always --read-only --name web -p 3000:3000 -e PORTER_SERVICE_NAME -e PORTER_SERVICE_VERSION -e PORTER_ENVIRONMENT -e PORTER_REGION -e AWS_REGION -e AWS_DEFAULT_REGION 123456789012.dkr.ecr.us-west-2.amazonaws.com/team/web:1f2e3d4",
            "\nwait_healthy \"\" 'http://127.0.0.1:3000/ping'",
            "\nsignal 0",
        ],
    );
    let policy = t["Resources"]["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].to_string();
    assert!(policy.contains("ecr:GetAuthorizationToken"), "{policy}");
    assert!(
        policy.contains("ecr:us-west-2:123456789012:repository/team/web"),
        "pulls from its own repository only: {policy}"
    );

    // Another registry: no ECR login, no ECR rights.
    release.image = Some("registry.example.com/web:1".into());
    let t = render_region(&cfg, 0, &release, &payload, &ctx);
    let script = boot_script(&t);
    bash_accepts(&script);
    assert!(script.contains("docker pull registry.example.com/web:1") && !script.contains("ecr"));
    assert!(!t["Resources"]["InstanceRole"].to_string().contains("ecr:"));

    // A record changed after pack to smuggle a command: it never
    // reaches the script.
    release.image = Some("r.example.com/web:1;$(reboot)".into());
    let t = render_region(&cfg, 0, &release, &payload, &ctx);
    let script = boot_script(&t);
    bash_accepts(&script);
    assert!(!script.contains("reboot") && script.contains("not a container image reference"));
}

#[test]
fn an_instance_may_read_exactly_its_secrets_and_hands_them_to_the_service_alone() {
    let (mut cfg, mut release, payload) = fixture();
    let secret = |variable: &str, store, name: &str| Secret {
        variable: variable.into(),
        store,
        name: name.into(),
    };
    cfg.environments[0].regions[0].secrets = vec![
        secret("DATABASE_URL", SecretStore::SecretsManager, "porter/web/prod/db"),
        secret("API_KEY", SecretStore::Ssm, "/porter/web/prod/api-key"),
    ];
    let ctx = RenderContext::default();
    let t = render_region(&cfg, 0, &release, &payload, &ctx);
    let statements = &t["Resources"]["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
    let granted: Vec<&Value> = statements
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Action"] != "s3:GetObject")
        .collect();
    assert_eq!(
        granted,
        [
            &json!({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": [
                {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:porter/web/prod/db-??????"}
            ]}),
            &json!({"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": [
                {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/porter/web/prod/api-key"}
            ]}),
        ],
        "one statement per store, naming only the references"
    );
    let script = boot_script(&t);
    bash_accepts(&script);
    in_order(
        &script,
        &[
            "tar -xf /tmp/payload.tar",
            // porter's names for who and where the service is.
            "export PORTER_SERVICE_NAME=web PORTER_SERVICE_VERSION=abc123def456 PORTER_ENVIRONMENT=prod PORTER_REGION=us-west-2 AWS_REGION=us-west-2 AWS_DEFAULT_REGION=us-west-2",
            // Read into the script's own variables, never exported...
            "porter_secret_0=$(aws secretsmanager get-secret-value --secret-id porter/web/prod/db --query SecretString --output text --region us-west-2 2>/tmp/porter-secret.err) || fail \"cannot read secret DATABASE_URL (secretsmanager:porter/web/prod/db)",
            "porter_secret_1=$(aws ssm get-parameter --name /porter/web/prod/api-key --with-decryption",
            // ...and handed, under the service's names, to its process alone.
            "(export DATABASE_URL=\"${porter_secret_0}\" API_KEY=\"${porter_secret_1}\"; exec setsid ./start) > /var/log/web.log",
            "service_pid=$!",
            "unset porter_secret_0 porter_secret_1",
        ],
    );
    for line in script
        .lines()
        .filter(|l| l.contains("DATABASE_URL") || l.contains("API_KEY"))
    {
        assert!(
            line.starts_with("(export ") || line.contains("|| fail \"cannot read secret"),
            "a secret reaches the boot's shell or tools: {line}"
        );
    }

    // A container gets them by name from its client's environment, never
    // on its command line.
    release.image = Some("registry.example.com/web:1".into());
    let script = boot_script(&render_region(&cfg, 0, &release, &payload, &ctx));
    bash_accepts(&script);
    assert!(
        script.contains("(export DATABASE_URL=\"${porter_secret_0}\" API_KEY=\"${porter_secret_1}\"; exec docker run -d --restart=always --read-only --name web -p 3000:3000 -e PORTER_SERVICE_NAME -e PORTER_SERVICE_VERSION -e PORTER_ENVIRONMENT -e PORTER_REGION -e AWS_REGION -e AWS_DEFAULT_REGION -e DATABASE_URL -e API_KEY registry.example.com/web:1)"),
        "{script}"
    );

    // Without secrets, no statement and no read.
    cfg.environments[0].regions[0].secrets.clear();
    let t = render_region(&cfg, 0, &release, &payload, &ctx);
    let text = t.to_string();
    assert!(!text.contains("secretsmanager") && !text.contains("ssm:GetParameter"));
}

/// EC2 takes 16 KB of UserData: the bound `validate` uses is never
/// below what provision renders, and both refuse a boot script over it.
#[test]
fn user_data_is_measured_against_ec2s_limit() {
    let (mut cfg, release, payload) = fixture();
    let env = cfg.environments[0].clone();
    let region = &env.regions[0];
    let stack = stack_name(&cfg.service_name, &env.name, &release.version);
    let t = render(&cfg, &env, region, &release, &payload, &RenderContext::default());
    let actual = user_data_bytes(super::boot_script(&t).unwrap(), &stack, &region.name);
    let bound = user_data_upper_bound(&cfg, &env, region).unwrap();
    assert!(actual <= bound && bound < USER_DATA_LIMIT, "{actual} <= {bound}");
    assert!(check_user_data(&t, &stack, &region.name).is_ok());

    // Each command is base64-encoded into the script: 4,000 characters
    // take a third more room there, and four of them pass 16 KB.
    let command = HookRun::Command(format!("echo {}", "x".repeat(4000)));
    let hook = config::Hook {
        run: command,
        repo: None,
        git_ref: None,
        environment: Default::default(),
        concurrent: false,
        run_condition: config::RunCondition::Pass,
    };
    cfg.hooks.insert("ec2_bootstrap".into(), vec![hook; 4]);
    let t = render(&cfg, &env, region, &release, &payload, &RenderContext::default());
    let why = check_user_data(&t, &stack, &region.name).unwrap_err();
    assert!(why.contains("UserData") && why.contains("16384"), "{why}");
    let why = user_data_upper_bound(&cfg, &env, region).unwrap_err();
    assert!(why.contains("UserData") && why.contains("can be"), "{why}");
}

#[test]
fn ec2_bootstrap_hooks_run_before_the_service_starts_and_a_failure_names_the_hook() {
    let (mut cfg, release, payload) = fixture();
    let hook = |run| config::Hook {
        run,
        repo: None,
        git_ref: None,
        environment: [("MODE".to_owned(), Some("it's \"quoted\" ${X}".to_owned()))].into(),
        concurrent: false,
        run_condition: config::RunCondition::Pass,
    };
    cfg.hooks.insert(
        "ec2_bootstrap".into(),
        vec![
            hook(HookRun::Command("echo ${HOME} $(whoami) 'x'".into())),
            hook(HookRun::Dockerfile("hooks/agent/Dockerfile".into())),
        ],
    );
    let t = render_region(&cfg, 0, &release, &payload, &RenderContext::default());
    let raw = t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
        .as_str()
        .unwrap()
        .to_owned();
    // What the repository wrote reaches the script only in base64:
    // nothing for CloudFormation to substitute, no quoting to break.
    assert!(
        !raw.contains("whoami") && !raw.contains("quoted") && !raw.contains("hooks/agent"),
        "{raw}"
    );
    let script = boot_script(&t);
    bash_accepts(&script);
    in_order(
        &script,
        &[
            "tar -xf /tmp/payload.tar",
            "(cd /srv/web && env PORTER_SERVICE=web PORTER_ENVIRONMENT=prod PORTER_VERSION=abc123def456 PORTER_REGION=us-west-2 PORTER_STACK=web-prod-abc123def456 PORTER_HOOK=ec2_bootstrap MODE=",
            "fail \"ec2_bootstrap[0] failed; its output ends:",
            "if command -v docker",
            "ec2_bootstrap[1] builds a Dockerfile and this instance has no Docker engine: skipped",
            "setsid ./start",
        ],
    );
}

#[test]
fn the_payload_boot_script_is_valid_bash() {
    let (cfg, release, payload) = fixture();
    let ctx = RenderContext {
        elb_security_groups: vec![],
        live_capacity: None,
    };
    bash_accepts(&boot_script(&render_region(&cfg, 0, &release, &payload, &ctx)));
}

#[test]
fn a_region_without_vpc_is_placed_by_zone_and_overrides_merge_in() {
    let (mut cfg, release, payload) = fixture();
    cfg.environments[0].regions[1].stack_definition = Some(config::StackDefinition {
        path: "x.json".into(),
        template: json!({"Resources": {"AutoScalingGroup": {"Properties": {"MaxSize": "9"}}, "Extra": {"Type": "AWS::SNS::Topic"}}}),
    });
    let t = render_region(&cfg, 1, &release, &payload, &RenderContext::default());
    let props = &t["Resources"]["AutoScalingGroup"]["Properties"];
    assert_eq!(props["AvailabilityZones"], json!(["us-east-1a", "us-east-1b"]));
    assert!(props.get("VPCZoneIdentifier").is_none());
    assert_eq!(props["MaxSize"], "9", "the override wins");
    assert_eq!(props["MinSize"], "3", "siblings stay");
    assert_eq!(t["Resources"]["Extra"]["Type"], "AWS::SNS::Topic");
    assert!(t["Resources"]["InstanceSecurityGroup"]["Properties"]
        .get("VpcId")
        .is_none());
    assert_eq!(
        t["Resources"]["InstanceSecurityGroup"]["Properties"]["SecurityGroupIngress"],
        json!([])
    );
}

/// No overlay can drop the boundary or move a role off porter's path,
/// for the generated role or one it adds.
#[test]
fn every_role_carries_the_boundary_whatever_the_overlay_says() {
    let (cfg, release, payload) = fixture();
    let env = cfg.environment("prod").unwrap();
    let mut region = env.regions[0].clone();
    region.stack_definition = Some(config::StackDefinition {
        path: "stack.json".into(),
        template: json!({"Resources": {
            "InstanceRole": {"Properties": {"PermissionsBoundary": null, "Path": "/",
                "Tags": [{"Key": "porter:service", "Value": "other"}, {"Key": "team", "Value": "web"}]}},
            "AdminRole": {"Type": "AWS::IAM::Role", "Properties": {
                "AssumeRolePolicyDocument": {},
                "Policies": [{"PolicyName": "all", "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}}]
            }},
            "BareRole": {"Type": "AWS::IAM::Role"}
        }}),
    });
    let t = render(&cfg, env, &region, &release, &payload, &RenderContext::default());
    let boundary =
        json!({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/porter/porter-release-boundary"});
    for role in ["InstanceRole", "AdminRole", "BareRole"] {
        let props = &t["Resources"][role]["Properties"];
        assert_eq!(props["PermissionsBoundary"], boundary, "{role}");
        assert_eq!(props["Path"], "/porter/", "{role}");
        // Tagged as the release's, whatever the overlay said.
        let tags = props["Tags"].as_array().unwrap();
        let tag = |k: &str| {
            tags.iter()
                .filter(|t| t["Key"] == k)
                .map(|t| t["Value"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(tag("porter:service"), [json!(cfg.service_name)], "{role}");
        assert_eq!(tag("porter:environment"), [json!("prod")], "{role}");
    }
    let own = t["Resources"]["InstanceRole"]["Properties"]["Tags"].as_array().unwrap();
    assert!(own.contains(&json!({"Key": "team", "Value": "web"})), "other tags stay");
    assert_eq!(t["Resources"]["InstanceProfile"]["Properties"]["Path"], "/porter/");
}

/// `auto_scaling_group:` sets the group's bounds and boot grace around
/// the release's start, and its egress rules replace AWS's allow-all;
/// `stack_creation:` gives the instances' signals the stack's time.
#[test]
fn the_groups_bounds_grace_and_egress_come_from_the_config() {
    let text = CONFIG.replacen(
        "    key_pair_name: ops\n",
        "    key_pair_name: ops\n    auto_scaling_group:\n      min_size: 2\n      max_size: 8\n      health_check_grace_period: 900\n      security_group_egress:\n      - {cidr_ip: 0.0.0.0/0, ip_protocol: tcp, from_port: 443, to_port: 443}\n      - {cidr_ip: '::/0', ip_protocol: '-1'}\n",
        1,
    ) + "  stack_creation: {timeout_minutes: 45, on_failure: DO_NOTHING}\n";
    let loaded = config::load_str(&text, std::path::Path::new("c"), std::path::Path::new("."), &|_| None);
    let cfg = loaded.deployable().unwrap();
    let (_, release, payload) = fixture();
    let env = &cfg.environments[0];
    assert_eq!(env.stack_creation.timeout_minutes, 45);
    assert_eq!(env.stack_creation.on_failure, config::StackOnFailure::DoNothing);
    for (live, want) in [
        (None, ("2", "3", "8")),
        (Some(5), ("2", "5", "8")),
        (Some(12), ("2", "12", "12")),
    ] {
        let ctx = RenderContext {
            live_capacity: live,
            ..RenderContext::default()
        };
        let t = render_region(&cfg, 0, &release, &payload, &ctx);
        let props = &t["Resources"]["AutoScalingGroup"]["Properties"];
        assert_eq!(
            (&props["MinSize"], &props["DesiredCapacity"], &props["MaxSize"]),
            (&json!(want.0), &json!(want.1), &json!(want.2)),
            "live {live:?}: the ceiling is raised to a larger live fleet"
        );
        assert_eq!(props["HealthCheckGracePeriod"], 900);
        assert_eq!(
            t["Resources"]["AutoScalingGroup"]["CreationPolicy"]["ResourceSignal"]["Timeout"],
            "PT45M"
        );
        assert_eq!(
            t["Resources"]["InstanceSecurityGroup"]["Properties"]["SecurityGroupEgress"],
            json!([
                {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"},
                {"IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "CidrIpv6": "::/0"}
            ])
        );
    }
    // Unset: AWS's default egress (no rules written); empty: none at all.
    let (cfg, ..) = fixture();
    let t = render_region(&cfg, 0, &release, &payload, &RenderContext::default());
    assert!(t["Resources"]["InstanceSecurityGroup"]["Properties"]
        .get("SecurityGroupEgress")
        .is_none());
    let mut cfg = cfg.clone();
    cfg.environments[0].regions[0].auto_scaling_group.security_group_egress = Some(Vec::new());
    let t = render_region(&cfg, 0, &release, &payload, &RenderContext::default());
    assert_eq!(
        t["Resources"]["InstanceSecurityGroup"]["Properties"]["SecurityGroupEgress"][0]["CidrIp"],
        "127.0.0.1/32"
    );
}
