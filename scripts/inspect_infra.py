"""Creates infra/template.yaml (as plain CloudFormation, from
scripts/sam_to_cfn.py) in a moto server and checks what came out: the
functions, the state machine's definition, every role's rights, the bucket.

moto's CloudFormation creates most of the stack for real. What it cannot
create is checked in the template CloudFormation would get, and each check
says which it read ("moto:" or "template:"):
- AWS::CodePipeline::Pipeline and AWS::CodeBuild::Project have no moto
  CloudFormation support: they are left out of the copy sent to moto, and
  references to them are replaced by what CloudFormation returns for them
  (Ref: the name; CodeBuild Arn: the project ARN), computed from their Name.
- moto ignores DefinitionSubstitutions; the copy sent to moto applies them
  to the definition (an Fn::Join of its text and the substituted values),
  as CloudFormation does.
- moto's Lambda ignores Architectures, TracingConfig and LoggingConfig:
  the template is read for those.
- Read around, not changed: moto's IAM hands back inline role policies as
  Python reprs (read with literal_eval); its CloudFormation keeps an
  Fn::If's AWS::NoValue in a list as null (skipped); its KMS DescribeKey
  fails on keys CloudFormation made (not called).
- moto names an unnamed ECR repository STACK-LogicalId-SUFFIX, which its
  own ECR then refuses (upper case); the copy names it in lower case, as
  CloudFormation's generated names for ECR are.
- moto skips AWS::S3::BucketPolicy, AWS::SNS::TopicPolicy and
  AWS::SNS::Subscription, and a bucket's PublicAccessBlockConfiguration and
  VersioningConfiguration.

The stack is created twice: with its own deployment role in moto's default
account, then with DeploymentRoleArns in another (an account holds one
stack: the deployment role and the release boundary have fixed names).

usage: inspect_infra.py ENDPOINT TEMPLATE.json CODE_BUCKET CODE_KEY DEFINITION.asl.json
Runs every check, then exits 1 if any failed (at once if the stack cannot be created).
"""

import ast
import copy
import fnmatch
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile

import boto3
import yaml

STACK = "porter-serverless"
REGION = "us-east-1"
REGION_BUCKETS = ["hello-artifacts-us-west-2", "hello-artifacts-us-east-1"]
APPROVERS = "release-managers"
PARAMETERS = {
    "ServiceName": "hello",
    "ApproverRoleNames": APPROVERS,
    "RepositoryName": "hello-service",
    "RegionBucketNames": ",".join(REGION_BUCKETS),
}
PHASES = ["Pack", "Provision", "Promote", "Prune"]
FUNCTIONS = PHASES + ["Pipeline", "Trigger", "Lease", "Notify", "Hooks"]
JOB_WORKERS = PHASES + ["Pipeline"]  # each can be a CodePipeline action: its jobs are verified
STATES = PHASES + ["Lease", "Notify", "Hooks"]  # what the state machine invokes

# Where check-infra creates the stack with DeploymentRoleArns: not moto's
# default account, which holds the first stack.
OTHER_STACK_ACCOUNT = "111122223333"

failed = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failed.append(what)


# ------------------------------------------------------------ the moto copy

NOT_IN_MOTO = {
    "AWS::CodePipeline::Pipeline": None,
    "AWS::CodeBuild::Project": "arn:${AWS::Partition}:codebuild:${AWS::Region}:${AWS::AccountId}:project/",
}


def sub_string(expr):
    """The Fn::Sub template of a `Name: !Sub "..."` property."""
    if isinstance(expr, dict) and isinstance(expr.get("Fn::Sub"), str):
        return expr["Fn::Sub"]
    raise SystemExit(f"inspect_infra: expected a Name given as Fn::Sub, got {expr!r}")


def moto_copy(template, stack):
    t = copy.deepcopy(template)
    names = {}
    for lid, res in list(t["Resources"].items()):
        if res["Type"] in NOT_IN_MOTO:
            names[lid] = (sub_string(res["Properties"]["Name"]), NOT_IN_MOTO[res["Type"]])
            del t["Resources"][lid]

    def walk(node):
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if list(node) == ["Ref"] and node["Ref"] in names:
            return {"Fn::Sub": names[node["Ref"]][0]}
        if list(node) == ["Fn::GetAtt"] and node["Fn::GetAtt"][0] in names:
            name, arn_prefix = names[node["Fn::GetAtt"][0]]
            assert node["Fn::GetAtt"][1] == "Arn" and arn_prefix, node
            return {"Fn::Sub": arn_prefix + name}
        if list(node) == ["Fn::Sub"]:
            arg = node["Fn::Sub"]
            text, variables = (arg, None) if isinstance(arg, str) else (arg[0], arg[1])
            for lid, (name, _) in names.items():
                text = text.replace("${%s}" % lid, name)
            return {"Fn::Sub": text if variables is None else [text, walk(variables)]}
        return {k: walk(v) for k, v in node.items()}

    t = walk(t)
    for lid, res in t["Resources"].items():
        if res["Type"] == "AWS::ECR::Repository":
            res["Properties"].setdefault("RepositoryName", f"{stack}-{lid}".lower())
    for res in t["Resources"].values():
        if res["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        props = res["Properties"]
        text = props["DefinitionString"]
        if isinstance(text, dict):  # the translator's Fn::Join of the lines
            sep, parts = text["Fn::Join"]
            assert all(isinstance(p, str) for p in parts), "the definition holds an intrinsic"
            text = sep.join(parts)
        subs = props.pop("DefinitionSubstitutions", None) or {}
        # Fn::Join, not Fn::Sub: moto's Fn::Sub turns the definition's `$$`
        # into `$`. An unknown ${...} stays as it is, for the check to catch.
        pieces = re.split(r"(\$\{[A-Za-z0-9_]+\})", text)
        props["DefinitionString"] = {
            "Fn::Join": ["", [subs.get(p[2:-1], p) if p.startswith("${") else p for p in pieces]]
        }
    return t


def in_account(kw, account_id):
    """Client arguments for another account of the moto server: moto puts a
    session of a role assumed there in that account (the role need not
    exist)."""
    creds = boto3.client("sts", **kw).assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/porter-check", RoleSessionName="inspect")["Credentials"]
    return dict(kw, aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"])


def create(cfn, template, name, parameters):
    """Creates the stack in moto; its description and physical ids."""
    cfn.create_stack(
        StackName=name,
        TemplateBody=json.dumps(moto_copy(template, name)),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    deadline = time.time() + 60
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.time() > deadline:
            break
        time.sleep(0.5)
    check(stack["StackStatus"] == "CREATE_COMPLETE", f"moto: stack {name} is {stack['StackStatus']} {stack.get('StackStatusReason', '')}")
    physical = {
        r["LogicalResourceId"]: r.get("PhysicalResourceId")
        for r in cfn.describe_stack_resources(StackName=name)["StackResources"]
        if "LogicalResourceId" in r  # moto lists the resources it skipped without one
    }
    return stack, physical


# ---------------------------------------------------------------- policies


def as_list(v):
    return v if isinstance(v, list) else [v]


def document(doc):
    if isinstance(doc, dict):
        return doc
    try:
        return json.loads(doc)
    except ValueError:
        return ast.literal_eval(doc)


def managed_policy_document(iam, arn):
    """A managed policy's default version, as a document; with no
    statement when the policy does not exist."""
    try:
        pol = iam.get_policy(PolicyArn=arn)["Policy"]
    except iam.exceptions.NoSuchEntityException:
        return {"Statement": []}
    ver = iam.get_policy_version(PolicyArn=arn, VersionId=pol["DefaultVersionId"])
    return document(ver["PolicyVersion"]["Document"])


def statements(iam, role_name):
    """Every statement that applies to the role: inline and attached."""
    out = []
    for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        out += as_list(document(doc)["Statement"])
    for att in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]:
        out += as_list(managed_policy_document(iam, att["PolicyArn"])["Statement"])
    # moto keeps an Fn::If's AWS::NoValue in a list as null; CloudFormation drops it.
    return [s for s in out if s is not None]


def grants(stmts):
    """(action, resource, condition) for every Allow."""
    out = []
    for s in stmts:
        if s.get("Effect") != "Allow":
            continue
        for a in as_list(s["Action"]):
            for r in as_list(s["Resource"]):
                out.append((a, r, json.dumps(s.get("Condition", {}), sort_keys=True)))
    return out


def resources_of(g, action):
    return sorted({r for a, r, _ in g if a == action})


def job_rules(stack, production="production", branch_environments=""):
    """The variables a function that works CodePipeline jobs checks each
    job against (crates/lambda/src/origin.rs), for the stack's parameters."""
    return {"PIPELINE_NAME": f"{stack}-pipeline", "APPROVED_ENVIRONMENTS": production,
            "BRANCH_ENVIRONMENTS": branch_environments}


def verifies_jobs(g, pipelines_arn, who):
    """The role reads every job back (GetJobDetails: "*", a job has no
    resource type) and reads the declarations of the installation's
    pipelines only."""
    check(resources_of(g, "codepipeline:GetJobDetails") == ["*"], f"{who} reads its CodePipeline jobs back (GetJobDetails)")
    got = resources_of(g, "codepipeline:GetPipeline")
    check(got == [pipelines_arn], f"{who} reads the declarations of the installation's pipelines only {got}")


# The deploy's own service and environment, as the deployment role's
# conditions name them: its session's tags.
OWN = {k: f"${{aws:PrincipalTag/porter:{k}}}" for k in ("service", "environment")}
# promote's sessions of the deployment role (crates/core/src/target.rs names
# them porter-promote-SERVICE; a role session's aws:userid is ROLEID:SESSION).
PROMOTE_USERID = "*:porter-promote-*"
# What puts a group's instances behind a load balancer, or takes them out.
ATTACH_ACTIONS = [
    "autoscaling:AttachLoadBalancers", "autoscaling:DetachLoadBalancers",
    "autoscaling:AttachLoadBalancerTargetGroups", "autoscaling:DetachLoadBalancerTargetGroups",
    "autoscaling:AttachTrafficSources", "autoscaling:DetachTrafficSources",
    "elasticloadbalancing:RegisterInstancesWithLoadBalancer", "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
    "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets",
]
# ... and those of them promote uses (Classic ELBs, and ALB/NLB target
# groups); never VPC Lattice's traffic sources.
PROMOTE_ATTACHES = [a for a in ATTACH_ACTIONS if "TrafficSources" not in a]
# What promote does to a target group: each call names the target group, so
# IAM conditions it on the target group's own tags.
TARGET_GROUP_ACTIONS = ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets",
                        "elasticloadbalancing:AddTags"]


def reaches_target_group(resource):
    """The resource of a grant (an ARN, or a pattern of one) covers a target
    group: "*" and the like count, not only targetgroup/ ARNs."""
    r = re.sub(r"^arn:aws[a-z-]*:", "arn:aws:", resource)
    return fnmatch.fnmatchcase("arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef",
                               re.sub(r"\b\d{12}\b", "123456789012", r))


def own_tags(cond, key):
    """The condition (a grant's JSON text) holds StringEquals KEY/porter:service
    and KEY/porter:environment equal to the session's own tags."""
    eq = (json.loads(cond) if isinstance(cond, str) else cond).get("StringEquals", {})
    return all(eq.get(f"{key}/porter:{k}") == v for k, v in OWN.items())


def boundary_reads_own_secrets(bdoc, account, who):
    """The release boundary lets a role read secrets and parameters only
    under porter/SERVICE/ENVIRONMENT/ of the role's own tags."""
    own = "porter/${aws:PrincipalTag/porter:service}/${aws:PrincipalTag/porter:environment}/*"
    reads = ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "secretsmanager:GetSecretValue"]
    capped = {a: sorted(r for s in as_list(bdoc["Statement"]) if s["Effect"] == "Allow" and a in as_list(s["Action"])
                        for r in as_list(s["Resource"]))
              for a in reads}
    check(all(capped[a] == [f"arn:aws:ssm:*:{account}:parameter/{own}"] for a in reads if a.startswith("ssm:"))
          and capped["secretsmanager:GetSecretValue"] == [f"arn:aws:secretsmanager:*:{account}:secret:{own}"],
          f"{who}: release roles read secrets and parameters only under porter/SERVICE/ENVIRONMENT/ of their own tags {capped}")
    check(not any(s["Effect"] == "Allow" and a.startswith(("ssm:", "secretsmanager:")) and a not in reads
                  for s in as_list(bdoc["Statement"]) for a in as_list(s["Action"])),
          f"{who}: ... and nothing else of SSM or Secrets Manager")


DATA_SERVICES = ("s3:", "dynamodb:", "sqs:", "sns:", "kinesis:", "firehose:")


def boundary_scopes_data(bdoc, account, who, stores=()):
    """The release boundary lets a role reach data only of its own service
    and environment (by its tags as principal tags) and the data stores an
    administrator lists (ServiceDataStores): no data action on "*"."""
    own = "${aws:PrincipalTag/porter:service}/${aws:PrincipalTag/porter:environment}"
    named = "${aws:PrincipalTag/porter:service}-${aws:PrincipalTag/porter:environment}-*"
    allowed = {
        f"arn:aws:s3:::*/porter-deployment/{own}/*",
        f"arn:aws:s3:::*/{own}/*",
        f"arn:aws:dynamodb:*:{account}:table/{named}",
        f"arn:aws:sqs:*:{account}:{named}",
        f"arn:aws:sns:*:{account}:{named}",
        f"arn:aws:kinesis:*:{account}:stream/{named}",
        f"arn:aws:firehose:*:{account}:deliverystream/{named}",
    } | set(stores)
    reached = set()
    for st in as_list(bdoc["Statement"]):
        if st["Effect"] != "Allow":
            continue
        data = [a for a in as_list(st["Action"]) if a.startswith(DATA_SERVICES)]
        if not data:
            continue
        for r in as_list(st["Resource"]):
            if data == ["s3:ListBucket"] and r == "arn:aws:s3:::*":
                prefix = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
                check(prefix == f"{own}/*", f"{who}: release roles list only their own prefix {prefix}")
                continue
            reached.add(r)
    check(reached <= allowed, f"{who}: release roles reach data of their own service and environment, and the listed stores, only {sorted(reached - allowed)}")
    check(set(stores) <= reached, f"{who}: ... and the data stores the installation lists {sorted(stores)}")


def runs_hooks(g, env, bucket, project, project_arn, table, who):
    """The hooks function (its grants `g`, its environment `env`) starts,
    reads and stops builds of the hooks project and reads the deploy lease
    (the fence); nothing else."""
    check(env == {"ARTIFACT_BUCKET": bucket, "HOOKS_PROJECT": project, "LEASE_TABLE": table},
          f"{who}: hooks start builds of {project} and read the lease in {table} {env}")
    check(all(resources_of(g, a) == [project_arn] for a in ["codebuild:StartBuild", "codebuild:BatchGetBuilds", "codebuild:StopBuild"]),
          f"{who}: the hooks function starts, reads and stops builds of the hooks project only")
    table_arn = [a for a in resources_of(g, "dynamodb:GetItem")]
    check(len(table_arn) == 1 and table_arn[0].endswith(f":table/{table}"),
          f"{who}: the hooks function reads the deploy lease (the fence) {table_arn}")
    actions = {a for a, _, _ in g}
    check(actions <= {"codebuild:StartBuild", "codebuild:BatchGetBuilds", "codebuild:StopBuild", "dynamodb:GetItem", "s3:GetObject",
                      "kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"},
          f"{who}: the hooks function has nothing else {sorted(actions)}")


def release_defences(stmts, boundary_arn, who):
    """What the deployment role holds against a release stack that reaches
    for other services' or environments' roles and secrets, or for a load
    balancer's traffic: roles created only with the boundary and the
    session's own tags, tagged only with those and passed only when they
    carry them; no group created or changed naming load balancers or target
    groups; attaching and registering only in promote's sessions."""
    g = grants(stmts)
    conds = [c for a, _, c in g if a == "iam:CreateRole"]
    check(conds and all(json.loads(c).get("StringEquals", {}).get("iam:PermissionsBoundary") == boundary_arn
                        and own_tags(c, "aws:RequestTag") for c in conds),
          f"{who} creates roles only with the release boundary, tagged with its session's service and environment {conds}")
    conds = [c for a, _, c in g if a == "iam:TagRole"]
    check(conds and all(own_tags(c, "aws:RequestTag") for c in conds),
          f"{who} tags roles only with its session's service and environment {conds}")
    conds = [c for a, _, c in g if fnmatch.fnmatchcase("iam:passrole", a.lower())]
    check(conds and all(own_tags(c, "iam:ResourceTag")
                        and json.loads(c).get("StringEqualsIfExists", {}).get("iam:PassedToService") == "ec2.amazonaws.com"
                        for c in conds),
          f"{who} passes only roles of its session's service and environment, to EC2 only {conds}")
    for key in ("autoscaling:LoadBalancerNames", "autoscaling:TargetGroupARNs"):
        check(any(s.get("Effect") == "Deny" and as_list(s.get("Resource")) == ["*"]
                  and {"autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup"} <= set(as_list(s.get("Action", [])))
                  and s.get("Condition") == {"Null": {key: "false"}} for s in stmts),
              f"{who} never creates or updates a group that names {key.split(':')[1]}")
    for action in ATTACH_ACTIONS:
        conds = [json.loads(c) for a, _, c in g if fnmatch.fnmatchcase(action.lower(), a.lower())]
        used = action in PROMOTE_ATTACHES
        check((conds or not used) and all(c.get("StringLike", {}).get("aws:userid") == PROMOTE_USERID for c in conds),
              f"{who} may {action} {'' if used else '(if at all) '}only in promote's sessions {conds}")
    # Target groups (ALB/NLB): promote attaches only the groups of its
    # session's own service and environment (IAM cannot condition the attach
    # on the target group's tags: promote checks them in code), and
    # registers, deregisters and tags only on target groups tagged with them.
    for action in ("autoscaling:AttachLoadBalancerTargetGroups", "autoscaling:DetachLoadBalancerTargetGroups"):
        found = [(r, c) for a, r, c in g if fnmatch.fnmatchcase(action.lower(), a.lower())]
        check(found and all(r.endswith(":autoScalingGroup:*:autoScalingGroupName/*") and own_tags(c, "aws:ResourceTag")
                            for r, c in found),
              f"{who} may {action} only on groups tagged with its session's service and environment {found}")
    for action in TARGET_GROUP_ACTIONS:
        found = [(r, c) for a, r, c in g if fnmatch.fnmatchcase(action.lower(), a.lower())]
        on_tgs = [(r, c) for r, c in found if reaches_target_group(r)]
        check(on_tgs and all(re.fullmatch(r"arn:aws[a-z-]*:elasticloadbalancing:\*:\d{12}:targetgroup/\*/\*", r)
                             and own_tags(c, "aws:ResourceTag")
                             and json.loads(c).get("StringLike", {}).get("aws:userid") == PROMOTE_USERID
                             for r, c in on_tgs),
              f"{who} may {action} on target groups, only those tagged with its session's service and environment, "
              f"only in promote's sessions {on_tgs}")
        if action != "elasticloadbalancing:AddTags":
            check(all(":targetgroup/" in r for r, _ in found), f"{who} may {action} on target groups only {found}")
    # ... and never changes the ownership tags of a load balancer or target
    # group (AddTags is allowed on both): a Deny on every resource.
    check(any(s.get("Effect") == "Deny" and as_list(s.get("Resource")) == ["*"]
              and {"elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"} <= set(as_list(s.get("Action", [])))
              and sorted(s.get("Condition", {}).get("ForAnyValue:StringEquals", {}).get("aws:TagKeys", []))
              == ["porter:environment", "porter:service"]
              for s in stmts),
          f"{who} never changes a load balancer's or target group's ownership tags")


# An abort (crates/lambda/src/abort.rs): promote reads, and stops, an
# execution of the deploy state machine, reads what it deployed from its
# history, and gives back its lease (as the pipeline function does).
ABORT_ACTIONS = ["states:DescribeExecution", "states:GetExecutionHistory", "states:StopExecution"]
GIVE_BACK_ACTIONS = ["dynamodb:DeleteItem", "dynamodb:GetItem"]


def aborts_deploys(g, events, resources, physical, promote_lid, promote_arn, sm_arn, table_arn, project_arn, who):
    """promote (its grants `g`) may read and stop only the deploy state
    machine's executions, give back only their lease and stop only hook
    builds, nothing else of Step Functions, DynamoDB or CodeBuild; one
    EventBridge rule, and only it, hands it
    the state machine's aborted and timed-out executions (an aborted
    execution runs no Catch). `resources` and `physical` are keyed by the
    template's logical ids, which name the promote function `promote_lid`."""
    execs = sm_arn.replace(":stateMachine:", ":execution:", 1) + ":*"
    got = {a: resources_of(g, a) for a in sorted({a for a, _, _ in g if a.startswith("states:")})}
    check(got == {a: [execs] for a in ABORT_ACTIONS},
          f"{who}: promote reads and stops the deploy state machine's executions only, nothing else of Step Functions {got}")
    got = {a: resources_of(g, a) for a in sorted({a for a, _, _ in g if a.startswith("dynamodb:")})}
    check(got == {a: [table_arn] for a in GIVE_BACK_ACTIONS},
          f"{who}: promote gives back leases of the lease table only, and takes none {got}")
    got = {a: resources_of(g, a) for a in sorted({a for a, _, _ in g if a.startswith("codebuild:")})}
    check(got == {"codebuild:StopBuild": [project_arn]},
          f"{who}: promote stops an aborted deploy's hook builds, and starts none {got}")
    rules = {r["Name"]: r for r in events.list_rules()["Rules"]}
    to_promote = [n for n in rules if any(t["Arn"] == promote_arn for t in events.list_targets_by_rule(Rule=n)["Targets"])]
    patterns = [json.loads(rules[n].get("EventPattern") or "{}") for n in to_promote]
    detail = patterns[0].get("detail", {}) if patterns else {}
    check(len(patterns) == 1 and sorted(patterns[0]) == ["detail", "detail-type", "source"]
          and patterns[0]["source"] == ["aws.states"] and patterns[0]["detail-type"] == ["Step Functions Execution Status Change"]
          and sorted(detail) == ["stateMachineArn", "status"] and sorted(detail["status"]) == ["ABORTED", "TIMED_OUT"]
          and detail["stateMachineArn"] == [sm_arn],
          f"{who}: one rule sends the deploy state machine's aborted and timed-out executions to promote {patterns}")
    perms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"
             and r["Properties"].get("FunctionName") in ({"Ref": promote_lid}, {"Fn::GetAtt": [promote_lid, "Arn"]})]
    rule_lid = (perms[0].get("SourceArn") or {}).get("Fn::GetAtt", [None])[0] if len(perms) == 1 else None
    check(len(perms) == 1 and perms[0]["Principal"] == "events.amazonaws.com" and perms[0]["Action"] == "lambda:InvokeFunction"
          and perms[0]["SourceArn"] == {"Fn::GetAtt": [rule_lid, "Arn"]} and len(to_promote) == 1
          and physical.get(rule_lid) in (to_promote[0], rules[to_promote[0]]["Arn"]),
          f"{who} and its template: only that rule may invoke promote, from EventBridge {perms}")


# The session names each phase's role may give its deployment-role
# sessions (sts:RoleSessionName): its own, and for promote also prune's
# (its abort deletes an aborted release's stacks in a prune session).
SESSION_NAMES = {
    "Provision": ["porter-provision-*"],
    "Promote": ["porter-promote-*", "porter-prune-*"],
    "Prune": ["porter-prune-*"],
}


def sessions_named_per_phase(iam, role_name, phase_role_arns, label):
    """Each phase role's trust statement allows exactly its own session
    names: a provision or prune session named porter-promote-* would get
    the attach and register rights that only promote's sessions have."""
    doc = document(iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"])
    seen = {}
    for st in as_list(doc["Statement"]):
        principals = as_list(st.get("Principal", {}).get("AWS", []))
        names = sorted(as_list(st.get("Condition", {}).get("StringLike", {}).get("sts:RoleSessionName", [])))
        check(len(principals) == 1, f"{label}: one phase role per trust statement, so each is held to its session names {principals}")
        for principal in principals:
            seen[principal] = names
    for phase, arn in phase_role_arns.items():
        check(seen.get(arn) == sorted(SESSION_NAMES[phase]),
              f"{label}: {phase}'s role may name its sessions only {SESSION_NAMES[phase]} (found {seen.get(arn)})")


def trust(iam, role_name):
    doc = document(iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"])
    principals = set()
    for s in as_list(doc["Statement"]):
        for kind, v in s["Principal"].items():
            principals |= {f"{kind}:{p}" for p in as_list(v)}
    return principals


# ------------------------------------------------------------------- checks


def main(endpoint, template_path, code_bucket, code_key, definition_path):
    with open(template_path) as f:
        template = json.load(f)
    kw = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    s3, cfn, iam = boto3.client("s3", **kw), boto3.client("cloudformation", **kw), boto3.client("iam", **kw)
    lam, sfn, kms = boto3.client("lambda", **kw), boto3.client("stepfunctions", **kw), boto3.client("kms", **kw)
    events, sns = boto3.client("events", **kw), boto3.client("sns", **kw)
    account = boto3.client("sts", **kw).get_caller_identity()["Account"]
    arn = lambda service, rest, region=REGION: f"arn:aws:{service}:{region}:{account}:{rest}"  # noqa: E731

    s3.create_bucket(Bucket=code_bucket)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    s3.put_object(Bucket=code_bucket, Key=code_key, Body=buf.getvalue())

    # The approvers' role exists before the stack, as it would in an account.
    iam.create_role(RoleName=APPROVERS, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "sts:AssumeRole"}]}))
    stack, physical = create(cfn, template, STACK, PARAMETERS)
    if failed:
        return
    res = template["Resources"]

    # --- the functions
    bucket = physical["ArtifactBucket"]
    sm_arn = arn("states", f"stateMachine:{STACK}-deploy")
    pipeline_name = f"{STACK}-pipeline"
    expected_env = {p: {"ARTIFACT_BUCKET": bucket, "PORTER_SERVICE": "hello",
                        "PORTER_ENVIRONMENTS_PATH": "/porter/environments/"} for p in PHASES}
    expected_env["Pipeline"] = {"STATE_MACHINE_ARN": sm_arn, "ARTIFACT_BUCKET": bucket, "LEASE_TABLE": physical["LeaseTable"]}
    for f in JOB_WORKERS:
        expected_env[f].update(job_rules(STACK))
    # promote's abort: executions of this stack's state machine, and their lease.
    expected_env["Promote"].update({"STATE_MACHINE_ARN": sm_arn, "LEASE_TABLE": physical["LeaseTable"]})
    # The fence: provision and prune read the lease before they act.
    expected_env["Provision"]["LEASE_TABLE"] = physical["LeaseTable"]
    expected_env["Prune"]["LEASE_TABLE"] = physical["LeaseTable"]
    # AllowedExternalReferences left at its default: overlays name nothing outside their stack.
    expected_env["Pack"] = dict(expected_env["Pack"], PORTER_IMAGE_PARAMETER="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
                                PORTER_ALLOWED_REFERENCES="")
    expected_env["Lease"] = {"LEASE_TABLE": physical["LeaseTable"]}
    expected_env["Notify"] = {"ARTIFACT_BUCKET": bucket, "NOTIFICATION_TOPIC_ARN": physical["NotificationTopic"],
                              "PORTER_SERVICE": "hello", "PORTER_WEBHOOK_HOSTS": "hooks.slack.com"}
    # The hooks project is not in moto (NOT_IN_MOTO): its Ref is its name.
    # The fence: the hooks after pack read the lease too.
    expected_env["Hooks"] = {"ARTIFACT_BUCKET": bucket, "HOOKS_PROJECT": f"{STACK}-hooks", "LEASE_TABLE": physical["LeaseTable"]}
    expected_env["Trigger"] = {
        "PIPELINE_NAME": pipeline_name,
        "BRANCH_PATTERN": "^(feature|release)/.+$",
        "BRANCH_ENVIRONMENTS": "",
        "SCHEDULED_PIPELINES": pipeline_name,
        "REPOSITORY_NAME": "hello-service",
        "BRANCH_NAME": "main",
    }
    fn_arn, role_of = {}, {}
    for f in FUNCTIONS:
        lid = f + "Function"
        conf = lam.get_function(FunctionName=physical[lid])["Configuration"]
        fn_arn[f] = conf["FunctionArn"]
        role_of[f] = conf["Role"].rsplit("/", 1)[1]
        check(conf["FunctionName"] == f"{STACK}-{f.lower()}", f"moto: {lid} is named {conf['FunctionName']}")
        check(conf["Runtime"] == "provided.al2023" and conf["Handler"] == "bootstrap", f"moto: {lid} runs provided.al2023 bootstrap")
        props = res[lid]["Properties"]
        check(props.get("Architectures") == [{"Ref": "Architecture"}], f"template: {lid} architecture is the Architecture parameter")
        check(props.get("TracingConfig", {}).get("Mode") == "Active", f"template: {lid} tracing is Active")
        want_timeout = {"Pipeline": 60, "Trigger": 60, "Lease": 60, "Notify": 30, "Hooks": 60}.get(f, 300)
        check(conf["Timeout"] == want_timeout, f"moto: {lid} timeout {conf['Timeout']} s (want {want_timeout})")
        env = conf.get("Environment", {}).get("Variables", {})
        check(env == expected_env[f], f"moto: {lid} environment {env}")
        check(props.get("LoggingConfig", {}).get("LogFormat") == "JSON", f"template: {lid} logs JSON")
        check(res[lid]["Metadata"].get("BuildMethod") == "rust-cargolambda"
              and res[lid]["Metadata"].get("BuildProperties", {}).get("Binary") == f.lower(),
              f"template: {lid} is built by cargo-lambda from the {f.lower()} crate")
    arch = template["Parameters"]["Architecture"]
    check(arch.get("Default") == "arm64" and sorted(arch.get("AllowedValues", [])) == ["arm64", "x86_64"],
          "template: Architecture defaults to arm64, allows arm64 and x86_64")
    check(len(set(role_of.values())) == len(FUNCTIONS), f"moto: one role per function {sorted(role_of.values())}")

    # --- the state machine
    sm = sfn.describe_state_machine(stateMachineArn=sm_arn)
    definition = sm["definition"]
    check("${" not in definition, "moto: the deployed definition has no ${...} left")
    with open(definition_path) as f:
        shipped = f.read()
    for p in STATES:
        shipped = shipped.replace("${%sFunctionArn}" % p, fn_arn[p])
    check(json.loads(definition) == json.loads(shipped),
          "moto: the deployed definition is statemachines/deploy.asl.json with each phase's own function ARN")
    subs = res["DeployStateMachine"]["Properties"].get("DefinitionSubstitutions", {})
    check(subs == {f"{p}FunctionArn": {"Fn::GetAtt": [f"{p}Function", "Arn"]} for p in STATES},
          "template: DefinitionSubstitutions map exactly the four phase functions, the lease, notify and hooks")
    check(res["DeployStateMachine"]["Properties"].get("StateMachineType") == "STANDARD", "template: the state machine is STANDARD")
    sm_role = sm["roleArn"].rsplit("/", 1)[1]
    g = grants(statements(iam, sm_role))
    check(resources_of(g, "lambda:InvokeFunction") == sorted(fn_arn[p] for p in STATES),
          "moto: the state machine role invokes exactly the four phase functions, the lease, notify and hooks")
    other = {a for a, _, _ in g if a != "lambda:InvokeFunction"}
    delivery = {"logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
                "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
                "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"}
    check(other <= delivery, f"moto: besides invoking, the state machine role only delivers logs and traces {sorted(other - delivery)}")
    check(trust(iam, sm_role) == {"Service:states.amazonaws.com"}, "moto: only Step Functions assumes the state machine role")

    # --- the phase functions' roles
    # (not DescribeKey: moto's fails on keys CloudFormation made)
    key_arn = arn("kms", f"key/{physical['ArtifactKey']}")
    bucket_arn = f"arn:aws:s3:::{bucket}"
    deployment_role_arn = f"arn:aws:iam::{account}:role/porter-deployment"
    forbidden = ("cloudformation:", "ec2:", "elasticloadbalancing:", "autoscaling:", "iam:", "lambda:", "states:")
    star_ok = {"codepipeline:PutJobSuccessResult", "codepipeline:PutJobFailureResult", "codepipeline:GetJobDetails",
               "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    pipelines_arn = arn("codepipeline", f"{STACK}-pipeline*")
    pins_arn = arn("ssm", "parameter/porter/environments/*")
    regional_role_arns = set()
    phase_role_arns = {}
    for p in PHASES:
        role = role_of[p]
        if p != "Pack":
            regional_role_arns.add(iam.get_role(RoleName=role)["Role"]["Arn"])
            phase_role_arns[p] = iam.get_role(RoleName=role)["Role"]["Arn"]
        g = grants(statements(iam, role))
        actions = {a for a, _, _ in g}
        # (promote's Step Functions rights, for an abort, are checked below: aborts_deploys)
        own_forbidden = tuple(f for f in forbidden if not (p == "Promote" and f == "states:"))
        check(not any(a.startswith(own_forbidden) for a in actions), f"moto: {role} has no CloudFormation/EC2/ELB/AutoScaling/IAM rights {sorted(actions)}")
        if p in ("Provision", "Prune"):
            # The fence: it reads the lease, nothing more.
            lease_arn = arn("dynamodb", f"table/{physical['LeaseTable']}")
            check({a for a in actions if a.startswith("dynamodb:")} == {"dynamodb:GetItem"}
                  and resources_of(g, "dynamodb:GetItem") == [lease_arn],
                  f"moto: {role} only reads the deploy lease (the fence) {sorted(actions)}")
        elif p != "Promote":
            check(not any(a.startswith("dynamodb:") for a in actions), f"moto: {role} has no DynamoDB rights {sorted(actions)}")
        check(not any(a == "*" or a.endswith(":*") for a in actions), f"moto: {role} has no wildcard action")
        # Only the phases that act in regions assume the deployment role,
        # and only with the pinned service as a session tag.
        if p == "Pack":
            check(not any(a.startswith("sts:") for a in actions), f"moto: {role} assumes no role {sorted(actions)}")
        else:
            for a in ["sts:AssumeRole", "sts:TagSession"]:
                check(resources_of(g, a) == [deployment_role_arn], f"moto: {role} may {a} only on {deployment_role_arn}")
                check(all('"aws:RequestTag/porter:service": "hello"' in c for act, _, c in g if act == a),
                      f"moto: {role} may {a} only tagged with the pinned service")
        image = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
        image_arns = [f"arn:aws:ssm:*::parameter{image}", f"arn:aws:ssm:*:{account}:parameter{image}"] if p == "Pack" else []
        check(resources_of(g, "ssm:GetParameter") == sorted([pins_arn] + image_arns) and {a for a in actions if a.startswith("ssm:")} == {"ssm:GetParameter"},
              f"moto: {role} reads the environment pins{' and the machine image parameter' if image_arns else ''}, no other parameter")
        s3_res = {r for a, r, _ in g if a.startswith("s3:")}
        check(s3_res <= {bucket_arn, bucket_arn + "/*", bucket_arn + "/porter-deployment/*", bucket_arn + "/porter-continuations/*"},
              f"moto: {role} reaches only the artifact bucket {sorted(s3_res)}")
        writes = resources_of(g, "s3:PutObject")
        want = [bucket_arn + "/porter-continuations/*"] + ([bucket_arn + "/porter-deployment/*"] if p == "Pack" else [])
        check(writes == sorted(want), f"moto: {role} writes only {sorted(want)} (not {writes})")
        reads = resources_of(g, "s3:GetObject")
        if p != "Pack":
            check(reads == [bucket_arn + "/porter-continuations/*", bucket_arn + "/porter-deployment/*"],
                  f"moto: {role} reads only releases and continuations {reads}")
        kms_res = {r for a, r, _ in g if a.startswith("kms:")}
        check(kms_res == {key_arn}, f"moto: {role} uses only the artifact key")
        star = {a for a, r, _ in g if r == "*"}
        check(star <= star_ok, f"moto: {role} has \"*\" only for reading jobs back, job results and traces {sorted(star)}")
        check({"codepipeline:PutJobSuccessResult", "codepipeline:PutJobFailureResult"} <= actions, f"moto: {role} reports CodePipeline jobs")
        verifies_jobs(g, pipelines_arn, f"moto: {role}")
        check({a for a in actions if a.startswith("codepipeline:")}
              == {"codepipeline:PutJobSuccessResult", "codepipeline:PutJobFailureResult", "codepipeline:GetJobDetails", "codepipeline:GetPipeline"},
              f"moto: {role} has no other CodePipeline right {sorted(a for a in actions if a.startswith('codepipeline:'))}")
        log_res = {r for a, r, _ in g if a.startswith("logs:")}
        check(len(log_res) == 1 and f"/aws/lambda/{STACK}-{p.lower()}" in log_res.pop(), f"moto: {role} writes only its own log group")

    # --- the deployment role
    check(trust(iam, "porter-deployment") == {f"AWS:{a}" for a in regional_role_arns},
          "moto: the deployment role trusts exactly provision, promote and prune")
    sessions_named_per_phase(iam, "porter-deployment", phase_role_arns, "moto: the deployment role")
    tdoc = document(iam.get_role(RoleName="porter-deployment")["Role"]["AssumeRolePolicyDocument"])
    for st in as_list(tdoc["Statement"]):
        cond = st.get("Condition", {})
        check(sorted(as_list(st["Action"])) == ["sts:AssumeRole", "sts:TagSession"]
              and cond.get("StringEquals", {}).get("aws:RequestTag/porter:service") == "hello"
              and "aws:RequestTag/porter:environment" in cond.get("StringLike", {}),
              f"moto: the deployment role is assumed only with the pinned service and an environment as session tags {st}")
    g = grants(statements(iam, "porter-deployment"))
    actions = {a for a, _, _ in g}
    check(not any(a == "*" or a.endswith(":*") for a in actions), "moto: the deployment role has no wildcard action")
    for need in ["cloudformation:CreateStack", "cloudformation:DeleteStack", "cloudformation:DescribeStacks",
                 "ec2:CreateSecurityGroup", "ec2:CreateLaunchTemplate", "ec2:RunInstances",
                 "autoscaling:CreateAutoScalingGroup", "autoscaling:DeleteAutoScalingGroup",
                 "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
                 "elasticloadbalancing:DeregisterInstancesFromLoadBalancer", "elasticloadbalancing:AddTags",
                 "elasticloadbalancing:DescribeInstanceHealth", "elasticloadbalancing:DescribeTags",
                 "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets",
                 "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth",
                 "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeTargetGroupAttributes",
                 "autoscaling:AttachLoadBalancerTargetGroups", "autoscaling:DetachLoadBalancerTargetGroups",
                 "iam:CreateRole", "iam:PutRolePolicy", "iam:PassRole", "iam:CreateInstanceProfile",
                 "iam:AddRoleToInstanceProfile", "ssm:GetParameters", "s3:PutObject", "s3:GetObject"]:
        check(any(fnmatch.fnmatchcase(need.lower(), a.lower()) for a in actions), f"moto: the deployment role may {need}")
    # Stacks and load balancers only of the session's own service and
    # environment (its principal tags).
    def scoped(cond, kind):
        eq = json.loads(cond).get("StringEquals", {})
        return all(eq.get(f"aws:{kind}/porter:{k}") == f"${{aws:PrincipalTag/porter:{k}}}" for k in ("service", "environment"))
    for a, kind in [("cloudformation:CreateStack", "RequestTag"), ("cloudformation:DeleteStack", "ResourceTag"),
                    ("elasticloadbalancing:RegisterInstancesWithLoadBalancer", "ResourceTag"),
                    ("elasticloadbalancing:DeregisterInstancesFromLoadBalancer", "ResourceTag"),
                    ("elasticloadbalancing:AddTags", "ResourceTag"),
                    ("autoscaling:AttachLoadBalancers", "ResourceTag"), ("autoscaling:DetachLoadBalancers", "ResourceTag"),
                    ("elasticloadbalancing:RegisterTargets", "ResourceTag"), ("elasticloadbalancing:DeregisterTargets", "ResourceTag"),
                    ("autoscaling:AttachLoadBalancerTargetGroups", "ResourceTag"),
                    ("autoscaling:DetachLoadBalancerTargetGroups", "ResourceTag"),
                    # what an overlay adds to or sets on the release's own group
                    ("autoscaling:PutScheduledUpdateGroupAction", "ResourceTag"), ("autoscaling:DeleteScheduledAction", "ResourceTag"),
                    ("autoscaling:EnableMetricsCollection", "ResourceTag")]:
        conds = [c for act, _, c in g if act == a]
        check(conds and all(scoped(c, kind) for c in conds), f"moto: the deployment role may {a} only with {kind} equal to its session's tags {conds}")
    check(any(s.get("Effect") == "Deny" and "elasticloadbalancing:AddTags" in as_list(s["Action"])
              and "elasticloadbalancing:RemoveTags" in as_list(s["Action"])
              and sorted(s.get("Condition", {}).get("ForAnyValue:StringEquals", {}).get("aws:TagKeys", [])) == ["porter:environment", "porter:service"]
              for s in statements(iam, "porter-deployment")),
          "moto: the deployment role never changes a load balancer's ownership tags")
    iam_res = {r for a, r, _ in g if a.startswith("iam:")}
    check(all(r in (f"arn:aws:iam::{account}:role/porter/*", f"arn:aws:iam::{account}:instance-profile/porter/*")
              or r.endswith(":role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling") for r in iam_res),
          f"moto: the deployment role's IAM rights are scoped to porter's path {sorted(iam_res)}")
    # Release stacks cannot escalate: roles are made and given policies only
    # with the boundary, and the boundary is the one release templates name.
    boundary_arn = f"arn:aws:iam::{account}:policy/porter/porter-release-boundary"
    rust = open(os.path.join(os.path.dirname(__file__), "..", "crates", "core", "src", "template.rs")).read()
    check('ROLE_PATH: &str = "/porter/"' in rust and 'BOUNDARY_POLICY: &str = "porter-release-boundary"' in rust,
          "template.rs names the boundary the infra makes")
    bounded = ["iam:CreateRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy",
               "iam:DetachRolePolicy", "iam:PutRolePermissionsBoundary"]
    for a in bounded:
        conds = [json.loads(c) for act, _, c in g if act == a]
        check(conds and all(c.get("StringEquals", {}).get("iam:PermissionsBoundary") == boundary_arn for c in conds),
              f"moto: the deployment role may {a} only with the release boundary {conds}")
    denies = [s for s in statements(iam, "porter-deployment") if s.get("Effect") == "Deny"]
    check(any("iam:DeleteRolePermissionsBoundary" in as_list(s["Action"]) for s in denies),
          "moto: the deployment role may never take a boundary off")
    bdoc = managed_policy_document(iam, boundary_arn)
    ballowed = {a for s in as_list(bdoc["Statement"]) if s["Effect"] == "Allow" for a in as_list(s["Action"])}
    check(not any(a.startswith(("iam:", "sts:AssumeRole", "organizations:")) or a.endswith(":*") or a == "*" for a in ballowed),
          f"moto: the release boundary allows no IAM, no role assumption, no wildcard {sorted(ballowed)}")
    check(any(s["Effect"] == "Deny" and bucket_arn + "/*" in as_list(s["Resource"]) for s in as_list(bdoc["Statement"])),
          "moto: the release boundary keeps release roles out of the artifact bucket")
    boundary_reads_own_secrets(bdoc, account, "moto")
    boundary_scopes_data(bdoc, account, "moto")
    # Roles made, tagged and passed only for the session's own service and
    # environment; no group names a load balancer; only promote attaches.
    release_defences(statements(iam, "porter-deployment"), boundary_arn, "moto: the deployment role")
    # The session names those conditions rely on are the ones the code
    # gives: promote's match, provision's (CloudFormation creates release
    # stacks with it) and prune's do not.
    src = os.path.join(os.path.dirname(__file__), "..", "crates", "core", "src")
    target_rs, promote_rs = (open(os.path.join(src, f)).read() for f in ("target.rs", "promote.rs"))
    check(re.search(r'format!\("porter-\{phase\}-\{\}", self\.release\.service\)', target_rs) is not None
          and re.search(r'\.clients\(aws, region, "promote"\)', promote_rs) is not None
          and fnmatch.fnmatchcase("AROAEXAMPLEID:porter-promote-hello", PROMOTE_USERID)
          and not any(fnmatch.fnmatchcase(f"AROAEXAMPLEID:porter-{p}-hello", PROMOTE_USERID) for p in ("provision", "prune", "pack")),
          f"target.rs names promote's sessions porter-promote-SERVICE, which {PROMOTE_USERID} matches and no other phase's does")
    # (arn:*: the template cannot name the partition in ARNs made of a list parameter)
    check(resources_of(g, "s3:PutObject") == sorted(f"arn:*:s3:::{b}/*" for b in REGION_BUCKETS),
          "moto: the deployment role writes exactly the region buckets")
    check(resources_of(g, "s3:ListBucket") == sorted(f"arn:*:s3:::{b}" for b in REGION_BUCKETS),
          "moto: the deployment role lists exactly the region buckets")
    check(resources_of(g, "s3:GetObject") == sorted([f"{bucket_arn}/porter-deployment/*"] + [f"arn:*:s3:::{b}/*" for b in REGION_BUCKETS]),
          "moto: the deployment role reads payloads and the region buckets, nothing else")
    star = {a for a, r, _ in g if r == "*"}
    check(all(a.split(":")[1].startswith("Describe") or a == "ec2:Get*" for a in star),
          f"moto: the deployment role has \"*\" only for Describe calls and EC2's Get calls {sorted(star)}")
    # Every ARN the template writes is right in any partition: it names
    # ${AWS::Partition}, or matches any (arn:*:) where CloudFormation cannot
    # name it. (The state machine's definition is the shipped file's.)
    written = [json.dumps({k: v for k, v in r.get("Properties", {}).items()
                           if not (r["Type"] == "AWS::StepFunctions::StateMachine" and k.startswith("Definition"))})
               for r in res.values()]
    literal = sorted({m for text in written for m in re.findall(r"arn:aws[a-z-]*:[^\"\s,]*", text)})
    check(not literal, f"template: no ARN names its partition literally {literal}")

    # --- the pipeline and trigger functions' roles
    g = grants(statements(iam, role_of["Pipeline"]))
    check(resources_of(g, "states:StartExecution") == [sm_arn], "moto: the pipeline function starts only the deploy state machine")
    execs = arn("states", f"execution:{STACK}-deploy:*")
    check(resources_of(g, "states:DescribeExecution") == [execs] and resources_of(g, "states:GetExecutionHistory") == [execs],
          "moto: the pipeline function reads only the deploy state machine's executions")
    check(resources_of(g, "states:StopExecution") == [execs], "moto: ... and stops only those")
    check(resources_of(g, "codepipeline:ListActionExecutions") == [arn("codepipeline", f"{STACK}-pipeline*")],
          "moto: the pipeline function lists the actions of this stack's pipelines only")
    check(resources_of(g, "codepipeline:GetPipelineExecution") == [arn("codepipeline", f"{STACK}-pipeline*")],
          "moto: ... and confirms their executions' end there only")
    lease_arn = arn("dynamodb", f"table/{physical['LeaseTable']}")
    check(resources_of(g, "dynamodb:DeleteItem") == [lease_arn] and resources_of(g, "dynamodb:PutItem") == [],
          "moto: the pipeline function can give a lease back, never take one")
    actions = {a for a, _, _ in g}
    check(not any(a.startswith(("sts:", "cloudformation:", "ec2:", "iam:", "lambda:")) for a in actions), f"moto: the pipeline function has nothing else {sorted(actions)}")
    check({r for a, r, _ in g if a.startswith("s3:")} == {bucket_arn, bucket_arn + "/*"}, "moto: the pipeline function reaches only the artifact bucket")
    check({"codepipeline:PutJobSuccessResult", "codepipeline:PutJobFailureResult"} <= actions, "moto: the pipeline function reports CodePipeline jobs")
    check(not actions & {"codepipeline:PollForJobs", "codepipeline:AcknowledgeJob"},
          "moto: with the invoke action (the default), the pipeline function polls for no jobs")
    verifies_jobs(g, pipelines_arn, "moto: with the invoke action, the pipeline function")

    g = grants(statements(iam, role_of["Trigger"]))
    pipeline_arn = arn("codepipeline", pipeline_name)
    for a in ["codepipeline:GetPipeline", "codepipeline:CreatePipeline", "codepipeline:UpdatePipeline",
              "codepipeline:DeletePipeline", "codepipeline:StartPipelineExecution"]:
        check(resources_of(g, a) == [pipeline_arn, pipeline_arn + "-*"], f"moto: the trigger may {a} on this stack's pipelines only")
    pipeline_role_arn = iam.get_role(RoleName=physical["PipelineRole"])["Role"]["Arn"]
    check(resources_of(g, "iam:PassRole") == [pipeline_role_arn], "moto: the trigger passes the pipeline role only")
    check(all("codepipeline.amazonaws.com" in c for a, _, c in g if a == "iam:PassRole"), "moto: ... and only to CodePipeline")
    actions = {a for a, _, _ in g}
    check(actions <= {"codepipeline:GetPipeline", "codepipeline:CreatePipeline", "codepipeline:UpdatePipeline",
                      "codepipeline:DeletePipeline", "codepipeline:StartPipelineExecution", "iam:PassRole",
                      "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"},
          f"moto: the trigger has nothing else {sorted(actions)}")

    g = grants(statements(iam, physical["PipelineRole"]))
    check(resources_of(g, "lambda:InvokeFunction") == [fn_arn["Pipeline"]], "moto: CodePipeline invokes only the pipeline function")
    check(trust(iam, physical["PipelineRole"]) == {"Service:codepipeline.amazonaws.com"}, "moto: only CodePipeline assumes the pipeline role")

    perm = res["TriggerFromRepository"]["Properties"]
    check(perm["Principal"] == "codecommit.amazonaws.com" and perm["FunctionName"] == {"Ref": "TriggerFunction"}
          and "${RepositoryName}" in perm["SourceArn"]["Fn::Sub"],
          "template: CodeCommit may invoke the trigger for this repository only")

    # --- the deploy lease
    g = grants(statements(iam, role_of["Lease"]))
    table_arn = arn("dynamodb", f"table/{physical['LeaseTable']}")
    for a in ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"]:
        check(resources_of(g, a) == [table_arn], f"moto: the lease function may {a} on the lease table only")
    check(resources_of(g, "states:DescribeExecution") == [arn("states", f"execution:{STACK}-deploy:*")],
          "moto: the lease function sees only the deploy state machine's executions")
    actions = {a for a, _, _ in g}
    check(actions <= {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem", "states:DescribeExecution",
                      "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"},
          f"moto: the lease function has nothing else {sorted(actions)}")
    # --- deploy notices
    g = grants(statements(iam, role_of["Notify"]))
    check(resources_of(g, "sns:Publish") == [physical["NotificationTopic"]], "moto: the notify function publishes to the notification topic only")
    check(resources_of(g, "s3:GetObject") == [f"{bucket_arn}/porter-deployment/*"], "moto: the notify function reads releases only")
    check(resources_of(g, "secretsmanager:GetSecretValue") == [arn("secretsmanager", "secret:porter/hello/notifications/*")]
          and resources_of(g, "ssm:GetParameter") == [arn("ssm", "parameter/aws/reference/secretsmanager/porter/hello/notifications/*")],
          "moto: the notify function reads webhook URLs only under porter/SERVICE/notifications/")
    actions = {a for a, _, _ in g}
    check(actions <= {"sns:Publish", "kms:GenerateDataKey", "kms:Decrypt", "s3:GetObject", "ssm:GetParameter", "secretsmanager:GetSecretValue",
                      "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"},
          f"moto: the notify function has nothing else {sorted(actions)}")
    for name in ["NotifyStarted", "NotifyProvisioned", "NotifyPromoted", "NotifyDeployed", "NotifyFailed"]:
        st = json.loads(shipped)["States"][name]
        check(st.get("ResultPath", "x") is None and st.get("Catch", [{}])[0].get("ErrorEquals") == ["States.ALL"]
              and st["Catch"][0]["Next"] == st["Next"] and "Retry" not in st,
              f"definition: {name} keeps nothing, and any error of it goes on to {st['Next']}")

    # --- hooks: the function starts builds; the builds' role can do nothing else
    project_arn = arn("codebuild", f"project/{STACK}-hooks")
    runs_hooks(grants(statements(iam, role_of["Hooks"])), expected_env["Hooks"], bucket, f"{STACK}-hooks", project_arn,
               physical["LeaseTable"], "moto")
    hook_role = res["HooksProject"]["Properties"]["ServiceRole"]
    check(hook_role == {"Fn::GetAtt": ["HookRole", "Arn"]}, "template: hooks run as HookRole")
    hook_statements = statements(iam, physical["HookRole"])
    hg = grants(hook_statements)
    hook_actions = {a for a, _, _ in hg}
    check(hook_actions <= {"logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:GetObjectVersion", "kms:Decrypt"},
          f"moto: a hook can read its source and write its logs, nothing else (no deploy, IAM or artifact writes) {sorted(hook_actions)}")
    # Repository code runs in two CodeBuild projects: the hooks, and the
    # image build (the repository's Dockerfile). Neither may read releases
    # or the continuation state, where the token key lives.
    for who, role in [("a hook", physical["HookRole"]), ("the image build", physical["BuildRole"])]:
        denies = [s for s in statements(iam, role) if s.get("Effect") == "Deny"]
        check(any(f"{bucket_arn}/porter-continuations/*" in as_list(s["Resource"]) and f"{bucket_arn}/porter-deployment/*" in as_list(s["Resource"])
                  for s in denies),
              f"moto: {who} cannot read releases or continuation state (the token key)")
    for name in ["HooksBeforePack", "HooksAfterPack", "HooksAfterProvision", "HooksAfterPromote", "HooksAfterPrune", "HooksAfterFailure"]:
        st = json.loads(shipped)["States"][name]
        check(st["Parameters"]["FunctionName"] == fn_arn["Hooks"] and st["Next"] == name + "Pending?"
              and json.loads(shipped)["States"][name + "Resume"]["Parameters"]["Payload"].get("state.$") == "$.hooks.result.state",
              f"definition: {name} resumes until its builds end")

    lt = res["LeaseTable"]["Properties"]
    check(lt.get("KeySchema") == [{"AttributeName": "lease", "KeyType": "HASH"}] and "TimeToLiveSpecification" not in lt,
          "template: the lease table is keyed by lease, with no TTL (the expiry is in the write's condition)")
    asl = json.loads(shipped)["States"]
    check(asl["Pack"]["Next"] == "TakeLease" and asl["TakeLease"]["Next"] == "LeaseTaken?"
          and asl["LeaseTaken?"]["Default"] == "NotifyStarted" and asl["HooksAfterPackPending?"]["Default"] == "NotifyStarted"
          and asl["NotifyStarted"]["Next"] == "Provision" and asl["WaitForLease"]["Next"] == "TakeLease",
          "definition: the lease is taken (or waited for) after pack, before anything in a region changes")
    # The optional steps: each entered only on the release's own flag for
    # it, and every way through them ends at the next phase.
    def flag_routes(choice):
        return {c["Variable"]: c["Next"] for c in asl[choice]["Choices"] if "BooleanEquals" in c}
    steps = "$.packed.release.steps."
    check(flag_routes("LeaseTaken?") == {steps + "hooks_after_pack": "HooksAfterPack"},
          "definition: post_pack and pre_provision hooks are entered only when the release has them")
    for phase, after, notice, notice_flag in [("Provision", "Promote", "NotifyProvisioned", "notify_provisioned"),
                                              ("Promote", "Prune", "NotifyPromoted", "notify_promoted"),
                                              ("Prune", "GiveLease", None, None)]:
        hooks, choice, flag = f"HooksAfter{phase}", f"After{phase}?", phase.lower()
        want = {steps + f"hooks_after_{flag}": hooks}
        if notice:
            want[steps + notice_flag] = notice
        check(asl[phase]["Next"] == choice and asl[choice]["Default"] == after and flag_routes(choice) == want
              and asl[f"{hooks}Pending?"]["Default"] == after
              and (notice is None or (asl[notice]["Next"] == f"HooksAfter{phase}?" and asl[f"HooksAfter{phase}?"]["Default"] == after
                                      and flag_routes(f"HooksAfter{phase}?") == {steps + f"hooks_after_{flag}": hooks})),
              f"definition: after {phase}, only the steps the release asks for, then {after}")
    # A failed phase's post_ hooks asked for failures run first
    # (HooksAfterFailure), and whatever they do, the lease goes back.
    check(asl["HooksAfterFailurePending?"]["Default"] == "GiveLeaseAfterFailure"
          and [c["Next"] for c in asl["HooksAfterFailure"]["Catch"]] == ["GiveLeaseAfterFailure"]
          and [c["Next"] for c in asl["HooksAfterFailureResume"]["Catch"]] == ["GiveLeaseAfterFailure"],
          "definition: the failure path's hooks always end at giving the lease back")
    for st in ["Provision", "Prune"]:
        check([c["Next"] for c in asl[st]["Catch"]] == [f"{st}Failed"] and [c["Next"] for c in asl[f"{st}Resume"]["Catch"]] == [f"{st}Failed"]
              and asl[f"{st}Failed"]["Next"] == "HooksAfterFailure",
              f"definition: a {st} failure gives the lease back")
    # Each regional phase (each wave of promote) is one call for all its
    # regions; while a region is pending, its Choice waits as long as the
    # phase asks and calls again with the state it left.
    promote = asl["Promote"]["ItemProcessor"]["States"]
    for key, states, first, choice, wait, resume in [
            ("provision", asl, "Provision", "AfterProvision?", "ProvisionWait", "ProvisionResume"),
            ("promote", promote, "PromoteWave", "WavePromoted?", "PromoteWait", "PromoteResume"),
            ("undo", asl, "RollBack", "UndoPending?", "UndoWait", "UndoResume"),
            ("prune", asl, "Prune", "AfterPrune?", "PruneWait", "PruneResume")]:
        loop = states[choice]["Choices"][0]
        check(states[first]["Type"] == "Task" and states[first]["Next"] == choice and states[resume]["Next"] == choice
              and states[first]["Parameters"]["FunctionName"] == states[resume]["Parameters"]["FunctionName"]
              and "state.$" not in states[first]["Parameters"]["Payload"]
              and states[resume]["Parameters"]["Payload"] == dict(states[first]["Parameters"]["Payload"], **{"state.$": f"$.{key}.result.state"})
              and "regions.$" in states[first]["Parameters"]["Payload"] and "region.$" not in states[first]["Parameters"]["Payload"]
              and loop == {"Variable": f"$.{key}.result.status", "StringEquals": "pending", "Next": wait}
              and states[wait] == {"Type": "Wait", "SecondsPath": f"$.{key}.result.wait_seconds", "Next": resume},
              f"definition: {first} is one call for all its regions, resumed after the wait it asks for until none is pending")
    for st in ["HooksAfterPack", "HooksAfterProvision", "HooksAfterPrune"]:
        check([c["Next"] for c in asl[st]["Catch"]] == ["GiveLeaseAfterFailure"], f"definition: a failing hook in {st} gives the lease back")
    # post_promote and pre_prune hooks run after the cutover: a failing one
    # puts every region back first, as the alarm gate does.
    check([c["Next"] for c in asl["HooksAfterPromote"]["Catch"]] == ["RollBack"] == [c["Next"] for c in asl["HooksAfterPromoteResume"]["Catch"]],
          "definition: a failing hook in HooksAfterPromote puts every region back (then the lease goes back)")
    check([c["Next"] for c in asl["Promote"]["Catch"]] == ["RollBack"]
          and asl["UndoPending?"]["Default"] == "RolledBack" and asl["RolledBack"]["Next"] == "HooksAfterFailure"
          and [c["Next"] for c in asl["RollBack"]["Catch"]] == ["RollBackIncomplete"] == [c["Next"] for c in asl["UndoResume"]["Catch"]]
          and asl["RollBack"]["Parameters"]["Payload"]["regions.$"] == "$.packed.release.regions"
          and asl["RollBackIncomplete"]["Next"] == "HooksAfterFailure",
          "definition: a failure while promoting puts every region back, then gives the lease back (also when putting back fails)")
    check(asl["Promote"]["MaxConcurrency"] == 1 and asl["Promote"]["ItemsPath"] == "$.packed.release.rollout.waves",
          "definition: waves go one after the other")
    check(asl["GiveLease"]["Next"] == "NotifyDeployed" and asl["NotifyDeployed"]["Next"] == "Deployed",
          "definition: success gives the lease back, then tells of it")
    check(asl["GiveLeaseAfterFailure"]["Next"] == "NotifyFailed" and asl["NotifyFailed"]["Next"] == "DeployFailed"
          and asl["PackFailed"]["Next"] == "NotifyFailed" and asl["LeaseRefused"]["Next"] == "NotifyFailed",
          "definition: every failure is told of before the deploy fails")

    # --- who approves production
    g = grants(statements(iam, APPROVERS))
    approve = arn("codepipeline", f"{pipeline_name}/Approve/Approve")
    check(resources_of(g, "codepipeline:PutApprovalResult") == [approve],
          f"moto: {APPROVERS} may approve exactly the pipeline's Approve action {resources_of(g, 'codepipeline:PutApprovalResult')}")
    check({a for a, _, _ in g} <= {"codepipeline:PutApprovalResult", "codepipeline:GetPipeline", "codepipeline:GetPipelineState",
                                    "codepipeline:GetPipelineExecution", "codepipeline:ListPipelineExecutions"},
          f"moto: {APPROVERS} get nothing else from this stack")
    stages = [st["Name"] for st in res["Pipeline"]["Properties"]["Stages"]]
    check(stages.index("Approve") < stages.index("DeployProduction"), "template: production is deployed only after the Approve stage")
    for rn in [role_of[p] for p in FUNCTIONS] + [physical["PipelineRole"]]:
        check("codepipeline:PutApprovalResult" not in {a for a, _, _ in grants(statements(iam, rn))}, f"moto: {rn} cannot approve")

    # --- the artifact bucket and its key
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    check(enc.get("SSEAlgorithm") == "aws:kms" and enc.get("KMSMasterKeyID") == key_arn,
          f"moto: the artifact bucket defaults to SSE-KMS with its own key {enc}")
    check(kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"], "moto: the artifact key rotates")
    bprops = res["ArtifactBucket"]["Properties"]
    pab = bprops.get("PublicAccessBlockConfiguration", {})
    check(all(pab.get(k) is True for k in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"]),
          "template: the artifact bucket blocks all public access")
    check(bprops.get("VersioningConfiguration", {}).get("Status") == "Enabled", "template: the artifact bucket is versioned")
    pol = [s for s in res["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"] if isinstance(s, dict) and "Effect" in s]
    check(any(s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
              and as_list(s["Action"]) == ["s3:*"] for s in pol), "template: the bucket policy denies non-TLS access")
    check(any(s["Effect"] == "Deny" and "s3:PutObject" in as_list(s["Action"])
              and s.get("Condition", {}).get("StringNotEquals", {}).get("s3:x-amz-server-side-encryption") == "aws:kms" for s in pol),
          "template: the bucket policy denies uploads without SSE-KMS")

    # --- events and notifications
    rules = {r["Name"]: r for r in events.list_rules()["Rules"]}
    targets = {n: events.list_targets_by_rule(Rule=n)["Targets"] for n in rules}
    by_target = lambda a: [n for n, ts in targets.items() if any(t["Arn"] == a for t in ts)]  # noqa: E731
    trig = by_target(fn_arn["Trigger"])
    patterns = [json.loads(rules[n]["EventPattern"]) for n in trig if rules[n].get("EventPattern")]
    check(any(p.get("detail-type") == ["CodeCommit Repository State Change"]
              and sorted(p["detail"]["event"]) == ["referenceCreated", "referenceDeleted", "referenceUpdated"] for p in patterns),
          "moto: CodeCommit branch created/updated/deleted events go to the trigger")
    check(any(rules[n].get("ScheduleExpression") == "cron(0 6 ? * MON *)" for n in trig), "moto: the weekly schedule goes to the trigger")
    main_rules = by_target(pipeline_arn)
    check(len(main_rules) == 1 and json.loads(rules[main_rules[0]]["EventPattern"])["detail"]["referenceName"] == ["main"],
          "moto: changes to main start the main pipeline")
    ended = [json.loads(rules[n]["EventPattern"]) for n in by_target(fn_arn["Pipeline"])]
    check(len(ended) == 1 and ended[0]["detail-type"] == ["CodePipeline Pipeline Execution State Change"]
          and sorted(ended[0]["detail"]["state"]) == ["FAILED", "STOPPED", "SUPERSEDED"]
          and ended[0]["resources"] == [{"prefix": pipeline_arn}],
          "moto: stopped, superseded and failed executions of this stack's pipelines go to the pipeline function")
    check(res["PipelineEndedPermission"]["Properties"]["Principal"] == "events.amazonaws.com"
          and res["PipelineEndedPermission"]["Properties"]["SourceArn"] == {"Fn::GetAtt": ["PipelineEndedRule", "Arn"]},
          "template: only that rule may invoke the pipeline function from EventBridge")
    aborts_deploys(grants(statements(iam, role_of["Promote"])), events, res, physical, "PromoteFunction", fn_arn["Promote"], sm_arn,
                   arn("dynamodb", f"table/{physical['LeaseTable']}"), arn("codebuild", f"project/{STACK}-hooks"), "moto")
    topic = physical["NotificationTopic"]
    notify = [json.loads(rules[n]["EventPattern"]) for n in by_target(topic)]
    check(any(set(p["detail-type"]) == {"CodePipeline Pipeline Execution State Change", "CodePipeline Action Execution State Change"}
              for p in notify), "moto: pipeline and action state changes go to the topic")
    check(bool(sns.get_topic_attributes(TopicArn=topic)["Attributes"].get("KmsMasterKeyId")), "moto: the topic is encrypted")
    tpol = res["NotificationTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    check({p for s in tpol for p in as_list(s["Principal"].get("Service", []))} == {"events.amazonaws.com", "codestar-notifications.amazonaws.com"},
          "template: the topic policy lets EventBridge and CodeStar notifications publish")

    # --- the pipeline (no moto CloudFormation support: the template)
    pipe = res["Pipeline"]["Properties"]
    stages = pipe["Stages"]
    check([s["Name"] for s in stages] == ["Source", "Build", "DeployStaging", "Approve", "DeployProduction"],
          "template: Source → Build → DeployStaging → Approve → DeployProduction")
    src = stages[0]["Actions"][0]
    check(src["ActionTypeId"]["Provider"] == "CodeCommit" and src["Configuration"]["PollForSourceChanges"] in (False, "false"),
          "template: CodeCommit source without polling")
    check(stages[1]["Actions"][0]["ActionTypeId"]["Provider"] == "CodeBuild"
          and "version: 0.2" in res["BuildProject"]["Properties"]["Source"]["BuildSpec"],
          "template: CodeBuild with an inline buildspec")
    build = yaml.safe_load(res["BuildProject"]["Properties"]["Source"]["BuildSpec"])["phases"]["build"]["commands"][0]
    check(subprocess.run(["bash", "-n"], input=build, text=True).returncode == 0, "template: the build's script is valid bash")
    check('tag="${CODEBUILD_RESOLVED_SOURCE_VERSION:0:12}-${digest}"' in build,
          "template: image tags name the commit and the base image's digest (the weekly build refreshes a patched base)")
    custom_type = res["PorterActionType"]["Properties"]
    for stage, env in [(stages[2], "staging"), (stages[4], "production")]:
        choice = stage["Actions"][0].get("Fn::If", [])
        check(len(choice) == 3 and choice[0] == "UseCustomAction",
              f"template: {stage['Name']} is the custom action or the invoke action, as DeployAction says")
        custom, act = choice[1], choice[2]
        up = act["Configuration"]["UserParameters"]
        text = up["Fn::Sub"] if isinstance(up, dict) else up
        text = re.sub(r"\$\{[^}]+\}", "x", text)
        check(act["ActionTypeId"]["Provider"] == "Lambda" and act["Configuration"]["FunctionName"] == {"Ref": "PipelineFunction"},
              f"template: {stage['Name']} invokes the pipeline function")
        check(json.loads(text).get("environment") == "x" and "${%sEnvironment}" % env.capitalize() in (up["Fn::Sub"] if isinstance(up, dict) else ""),
              f"template: {stage['Name']} UserParameters are JSON naming the {env} environment parameter")
        # The custom action names exactly the registered type, with only
        # its properties, the required ones set, and the same facts the
        # invoke action's UserParameters carry.
        t = custom["ActionTypeId"]
        check((t["Category"], t["Owner"], t["Provider"], t["Version"])
              == (custom_type["Category"], "Custom", custom_type["Provider"], custom_type["Version"]),
              f"template: {stage['Name']}'s custom action is the registered type {t}")
        conf = custom["Configuration"]
        registered = {p["Name"]: p for p in custom_type["ConfigurationProperties"]}
        check(set(conf) <= set(registered) and all(n in conf for n, p in registered.items() if p["Required"]),
              f"template: {stage['Name']}'s custom action sets registered properties only, the required ones all {sorted(conf)}")
        check(conf.get("Environment") == {"Ref": f"{env.capitalize()}Environment"}
              and conf.get("SseKmsKeyId") == {"Fn::GetAtt": ["ArtifactKey", "Arn"]},
              f"template: {stage['Name']}'s custom action deploys the {env} environment under the stack's key")
    # The registered properties are the ones the worker reads (PROPERTIES
    # in crates/lambda/src/job_worker.rs), with the same types and flags.
    worker = open(os.path.join(os.path.dirname(__file__), "../crates/lambda/src/job_worker.rs")).read()
    kinds = {"Text": "String", "Number": "Number", "Boolean": "Boolean", "Object": "String"}
    read = [(n, kinds[k], r == "true") for n, k, r in re.findall(
        r'name: "(\w+)",\s*key: "\w+",\s*kind: Kind::(\w+),\s*required: (true|false)', worker)]
    declared = [(p["Name"], p["Type"], p["Required"]) for p in custom_type["ConfigurationProperties"]]
    check(read and read == declared, f"template: the custom action type's properties are the worker's {declared}")
    check(all(p["Secret"] is False and isinstance(p.get("Description"), str) for p in custom_type["ConfigurationProperties"]),
          "template: no property is secret, each is described")
    check(sum(1 for p in custom_type["ConfigurationProperties"] if p["Key"]) == 1
          and next(p for p in custom_type["ConfigurationProperties"] if p["Key"])["Name"] == "Environment",
          "template: the environment is the action's key property")
    check(custom_type["InputArtifactDetails"] == {"MinimumCount": 1, "MaximumCount": 1}
          and custom_type["OutputArtifactDetails"] == {"MinimumCount": 0, "MaximumCount": 0},
          "template: the custom action takes the source artifact and makes none")
    urls = custom_type["Settings"]
    check("${DeployStateMachine}" in urls["EntityUrlTemplate"]["Fn::Sub"]
          and "{ExternalExecutionId}" in urls["ExecutionUrlTemplate"]["Fn::Sub"],
          "template: the custom action links the state machine and each deploy's execution")
    appr = stages[3]["Actions"][0]
    check(appr["ActionTypeId"]["Category"] == "Approval" and appr["Configuration"]["NotificationArn"] == {"Ref": "NotificationTopic"},
          "template: the manual approval notifies the topic")
    check(pipe["ArtifactStore"]["Location"] == {"Ref": "ArtifactBucket"}
          and pipe["ArtifactStore"]["EncryptionKey"]["Id"] == {"Fn::GetAtt": ["ArtifactKey", "Arn"]},
          "template: the pipeline's artifacts go to the artifact bucket under its key")

    key_policy = document(kms.get_key_policy(KeyId=physical["ArtifactKey"], PolicyName="default")["Policy"])
    check([s["Sid"] for s in key_policy["Statement"] if s] == ["AccountIamPolicies"],
          "moto: with its own deployment role, the artifact key trusts nothing outside the account")

    # --- a deployment role in another account (DeploymentRoleArns); the
    # stack in an account of its own, as each account holds one (the
    # deployment role's and the release boundary's names are fixed). The
    # clients from here on are that account's.
    other = "arn:aws:iam::210987654321:role/porter-deployment"
    params = dict(PARAMETERS, DeploymentRoleArns=other, DeploymentRoleName="porter-deployment-other", DeployAction="Custom",
                  ProductionEnvironment="live", BranchEnvironments="dev,qa")
    kw2 = in_account(kw, OTHER_STACK_ACCOUNT)
    cfn, iam, lam = boto3.client("cloudformation", **kw2), boto3.client("iam", **kw2), boto3.client("lambda", **kw2)
    events, kms = boto3.client("events", **kw2), boto3.client("kms", **kw2)
    arn = lambda service, rest, region=REGION: f"arn:aws:{service}:{region}:{OTHER_STACK_ACCOUNT}:{rest}"  # noqa: E731
    iam.create_role(RoleName=APPROVERS, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER_STACK_ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}))
    _, other_physical = create(cfn, template, "porter-other", params)
    if not failed:
        # The release boundary all the same: a deployment role of this
        # account (listed in DeploymentRoleArns or not) creates release
        # roles only with it.
        other_boundary = f"arn:aws:iam::{OTHER_STACK_ACCOUNT}:policy/porter/porter-release-boundary"
        odoc = managed_policy_document(iam, other_boundary)
        sids = lambda d: {s["Sid"]: sorted(as_list(s["Action"])) for s in as_list(d["Statement"])}  # noqa: E731
        check(bool(odoc["Statement"]) and sids(odoc) == sids(bdoc),
              f"moto: with DeploymentRoleArns, the stack makes the release boundary {other_boundary} too, the same statements")
        g = grants(statements(iam, "porter-deployment-other"))
        check(all(json.loads(c).get("StringEquals", {}).get("iam:PermissionsBoundary") == other_boundary
                  for a, _, c in g if a == "iam:CreateRole") and any(a == "iam:CreateRole" for a, _, _ in g),
              "moto: ... the one its deployment role creates release roles with")
        if odoc["Statement"]:
            boundary_reads_own_secrets(odoc, OTHER_STACK_ACCOUNT, "moto: porter-other")
            boundary_scopes_data(odoc, OTHER_STACK_ACCOUNT, "moto: porter-other")
        release_defences(statements(iam, "porter-deployment-other"), other_boundary, "moto: porter-other's deployment role")
        # ... and with the custom action: the pipeline function polls for
        # the Porter type's jobs only, and is woken for them.
        g = grants(statements(iam, other_physical["PipelineFunctionRole"]))
        check(resources_of(g, "codepipeline:PollForJobs") == [arn("codepipeline", "actiontype:Custom/Deploy/Porter/1")],
              "moto: with DeployAction=Custom, the pipeline function polls for the Porter action's jobs only")
        check(resources_of(g, "codepipeline:AcknowledgeJob") == ["*"], "moto: ... and acknowledges them (a job has no resource type)")
        verifies_jobs(g, arn("codepipeline", "porter-other-pipeline*"), "moto: with DeployAction=Custom, the pipeline function")
        # The job rules follow the stack's name and parameters.
        for f in JOB_WORKERS:
            env = lam.get_function(FunctionName=other_physical[f + "Function"])["Configuration"].get("Environment", {}).get("Variables", {})
            want = job_rules("porter-other", "live", "dev,qa")
            got = {k: env.get(k) for k in want}
            check(got == want, f"moto: with ProductionEnvironment and BranchEnvironments set, {f}Function checks jobs against {got}")
            if f != "Pipeline":  # (just above)
                verifies_jobs(grants(statements(iam, other_physical[f + "FunctionRole"])), arn("codepipeline", "porter-other-pipeline*"),
                              f"moto: porter-other's {f}Function")
        other_fn = lam.get_function(FunctionName=other_physical["PipelineFunction"])["Configuration"]["FunctionArn"]
        rules = {r["Name"]: r for r in events.list_rules()["Rules"]}
        woken = [rules[n] for n in rules if any(t["Arn"] == other_fn for t in events.list_targets_by_rule(Rule=n)["Targets"])]
        started = [json.loads(r["EventPattern"]) for r in woken if r.get("EventPattern")
                   and json.loads(r["EventPattern"])["detail-type"] == ["CodePipeline Action Execution State Change"]]
        check(len(started) == 1 and started[0]["detail"] == {"state": ["STARTED"], "type": {
                  "owner": ["Custom"], "category": ["Deploy"], "provider": ["Porter"], "version": ["1"]}},
              "moto: ... woken when a Porter action starts")
        check(any(r.get("ScheduleExpression") == "rate(1 minute)" for r in woken), "moto: ... and once a minute")
        g = grants(statements(iam, other_physical["ProvisionFunctionRole"]))
        check(resources_of(g, "sts:AssumeRole") == [other], "moto: with DeploymentRoleArns, the phases assume exactly those roles")
        key_policy = document(kms.get_key_policy(KeyId=other_physical["ArtifactKey"], PolicyName="default")["Policy"])
        granted = [s for s in key_policy["Statement"] if s and s.get("Principal", {}).get("AWS") in (other, [other])]
        check(len(granted) == 1 and set(as_list(granted[0]["Action"])) == {"kms:Decrypt", "kms:DescribeKey"}
              and "kms:ViaService" in json.dumps(granted[0].get("Condition")),
              "moto: ... and the artifact key lets them decrypt through S3, nothing more")

    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    check(outputs.get("StateMachineArn") == sm_arn and outputs.get("ArtifactBucketName") == bucket
          and outputs.get("NotificationTopicArn") == topic and outputs.get("PipelineName") == pipeline_name,
          f"moto: outputs {sorted(outputs)}")


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(*sys.argv[1:])
    if failed:
        print(f"inspect_infra: {len(failed)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("inspect_infra: all checks passed")
