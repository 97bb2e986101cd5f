// Assertions on the construct's template: what the SAM template enforces
// holds here too, the props change what they say and nothing else, and
// synth never builds anything. Offline: stand-in bootstraps, no account.

import { after, test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import { App, Stack } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import { Porter, PorterEnvironmentPins, PorterProps, PORTER_FUNCTIONS } from "../lib";
import { CASES, propsOf, standInBootstraps, synth } from "./cases";

const bootstrapDir = standInBootstraps();
after(() => fs.rmSync(bootstrapDir, { recursive: true }));
const base: PorterProps = { ...propsOf(CASES.default.parameters), bootstrapDir };
const template = (props: Partial<PorterProps> = {}) => Template.fromStack(synth({ ...base, ...props }).stack);
// What the state machine invokes.
const STATES = ["Pack", "Provision", "Promote", "Prune", "Lease", "Notify", "Hooks"];
const SHIPPED = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "..", "..", "statemachines", "deploy.asl.json"), "utf8"));

test("nine functions on provided.al2023, arm64 unless asked, each with a role and log group of its own", () => {
  const t = template();
  const fns = t.findResources("AWS::Lambda::Function");
  assert.equal(Object.keys(fns).length, PORTER_FUNCTIONS.length);
  const roles = new Set<string>();
  for (const fn of Object.values(fns)) {
    const p = fn.Properties;
    assert.equal(p.Runtime, "provided.al2023");
    assert.equal(p.Handler, "bootstrap");
    assert.deepEqual(p.Architectures, ["arm64"]);
    assert.deepEqual(p.TracingConfig, { Mode: "Active" });
    assert.equal(p.LoggingConfig.LogFormat, "JSON");
    roles.add(JSON.stringify(p.Role));
  }
  assert.equal(roles.size, PORTER_FUNCTIONS.length);
  t.resourcePropertiesCountIs("AWS::Lambda::Function", { Architectures: ["x86_64"] }, 0);
  template({ architecture: "x86_64" }).resourcePropertiesCountIs("AWS::Lambda::Function", { Architectures: ["x86_64"] }, PORTER_FUNCTIONS.length);
  // The one list of functions is their crates under functions/.
  const crates = fs.readdirSync(path.join(__dirname, "..", "..", "..", "..", "functions")).sort();
  assert.deepEqual([...PORTER_FUNCTIONS].sort(), crates);
});

test("the state machine runs statemachines/deploy.asl.json with each phase's own function, the lease, notify and hooks", () => {
  const t = template();
  const [sm] = Object.values(t.findResources("AWS::StepFunctions::StateMachine"));
  assert.deepEqual(JSON.parse(sm.Properties.DefinitionString), SHIPPED);
  const fns = t.findResources("AWS::Lambda::Function");
  const byName = (name: string) => Object.keys(fns).find((id) => fns[id].Properties.FunctionName["Fn::Sub"] === `\${AWS::StackName}-${name}`);
  assert.deepEqual(sm.Properties.DefinitionSubstitutions, Object.fromEntries(
    STATES.map((p) => [`${p}FunctionArn`, { "Fn::GetAtt": [byName(p.toLowerCase()), "Arn"] }]),
  ));
  // It may invoke exactly those, nothing else.
  const roles = t.findResources("AWS::IAM::Role");
  const invoke = Object.values(roles).flatMap((r) => r.Properties.Policies ?? [])
    .flatMap((pol: { PolicyDocument: { Statement: { Action: string; Resource: unknown }[] } }) => pol.PolicyDocument.Statement)
    .filter((s) => s.Action === "lambda:InvokeFunction" && Array.isArray(s.Resource));
  assert.equal(invoke.length, 1);
  assert.deepEqual(invoke[0].Resource, STATES.map((p) => ({ "Fn::GetAtt": [byName(p.toLowerCase()), "Arn"] })));
  assert.equal(sm.Properties.StateMachineType, "STANDARD");
});

test("the artifact bucket: SSE-KMS under its own rotating key, versioned, not public, TLS and encrypted uploads enforced, kept", () => {
  const t = template();
  t.hasResource("AWS::S3::Bucket", {
    DeletionPolicy: "Retain",
    Properties: Match.objectLike({
      BucketEncryption: { ServerSideEncryptionConfiguration: [Match.objectLike({ ServerSideEncryptionByDefault: Match.objectLike({ SSEAlgorithm: "aws:kms" }) })] },
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
      VersioningConfiguration: { Status: "Enabled" },
    }),
  });
  t.hasResource("AWS::KMS::Key", { DeletionPolicy: "Retain", Properties: Match.objectLike({ EnableKeyRotation: true }) });
  t.hasResourceProperties("AWS::S3::BucketPolicy", {
    PolicyDocument: Match.objectLike({
      Statement: Match.arrayWith([
        Match.objectLike({ Effect: "Deny", Action: "s3:*", Condition: { Bool: { "aws:SecureTransport": "false" } } }),
        Match.objectLike({ Effect: "Deny", Action: "s3:PutObject", Condition: { StringNotEquals: { "s3:x-amz-server-side-encryption": "aws:kms" } } }),
      ]),
    }),
  });
});

test("release roles read secrets and parameters only under porter/ of their own service and environment (the boundary caps them)", () => {
  const [boundary] = Object.values(template().findResources("AWS::IAM::ManagedPolicy", { Properties: { ManagedPolicyName: "porter-release-boundary" } }));
  const statements: { Sid: string; Effect: string; Action: string | string[]; Resource: unknown }[] = boundary.Properties.PolicyDocument.Statement;
  const reads = ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "secretsmanager:GetSecretValue"];
  const granting = (a: string) => statements.filter((s) => s.Effect === "Allow" && ([] as string[]).concat(s.Action).includes(a));
  for (const a of reads) {
    const [s, ...more] = granting(a);
    assert.equal(more.length, 0, `${a}: one statement`);
    // ${!...}: the role's tags, as policy variables Fn::Sub leaves alone.
    const own = "${!aws:PrincipalTag/porter:service}/${!aws:PrincipalTag/porter:environment}/*";
    assert.deepEqual(s.Resource, a.startsWith("ssm:")
      ? { "Fn::Sub": `arn:\${AWS::Partition}:ssm:*:\${AWS::AccountId}:parameter/porter/${own}` }
      : { "Fn::Sub": `arn:\${AWS::Partition}:secretsmanager:*:\${AWS::AccountId}:secret:porter/${own}` }, a);
  }
});

test("notify publishes to the topic and reads webhook URLs under porter/SERVICE/notifications/ only, posting to webhookHosts", () => {
  const t = template();
  const role = (name: string) => Object.values(t.findResources("AWS::IAM::Role", { Properties: { RoleName: { "Fn::Sub": `\${AWS::StackName}-${name}` } } }))[0];
  const [notifyPolicy] = role("notify").Properties.Policies;
  const bySid = Object.fromEntries(notifyPolicy.PolicyDocument.Statement.map((s: { Sid: string }) => [s.Sid, s]));
  assert.deepEqual(Object.keys(bySid).sort(), ["ArtifactKey", "Logs", "Publish", "ReadReleaseConfigs", "TopicKey", "Tracing", "WebhookReferences", "WebhookUrls"]);
  assert.deepEqual(bySid.WebhookUrls.Resource, {
    "Fn::Sub": ["arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:porter/${ServiceName}/notifications/*", { ServiceName: "hello" }],
  });
  assert.deepEqual(bySid.WebhookReferences.Resource, {
    "Fn::Sub": ["arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/aws/reference/secretsmanager/porter/${ServiceName}/notifications/*", { ServiceName: "hello" }],
  });
  t.hasResourceProperties("AWS::Lambda::Function", {
    FunctionName: { "Fn::Sub": "${AWS::StackName}-notify" },
    Timeout: 30,
    Environment: { Variables: Match.objectLike({ PORTER_SERVICE: "hello", PORTER_WEBHOOK_HOSTS: "hooks.slack.com" }) },
  });
  template({ webhookHosts: ["hooks.slack.com", "chat.example.com:8443"] }).hasResourceProperties("AWS::Lambda::Function", {
    Environment: { Variables: Match.objectLike({ PORTER_WEBHOOK_HOSTS: "hooks.slack.com,chat.example.com:8443" }) },
  });
});

test("pack reads the overlays' allowed external references from allowedExternalReferences, none by default", () => {
  const pack = (t: Template) => {
    const [fn] = Object.values(t.findResources("AWS::Lambda::Function", { Properties: { FunctionName: { "Fn::Sub": "${AWS::StackName}-pack" } } }));
    return fn.Properties.Environment.Variables;
  };
  assert.equal(pack(template()).PORTER_ALLOWED_REFERENCES, "");
  const refs = ["sg-0123456789abcdef0", "arn:aws:kms:us-west-2:111122223333:key/11111111-2222-3333-4444-555555555555"];
  assert.equal(pack(template({ allowedExternalReferences: refs })).PORTER_ALLOWED_REFERENCES, refs.join(","));
  // Only pack reads it.
  const others = Object.values(template({ allowedExternalReferences: refs }).findResources("AWS::Lambda::Function"))
    .filter((fn) => "PORTER_ALLOWED_REFERENCES" in (fn.Properties.Environment?.Variables ?? {}));
  assert.equal(others.length, 1);
});

test("hooks run in CodeBuild as HookRole, which may read the source and write its logs, never releases or continuation state", () => {
  const t = template();
  const [project] = Object.values(t.findResources("AWS::CodeBuild::Project", { Properties: { Name: { "Fn::Sub": "${AWS::StackName}-hooks" } } }));
  const hookRoles = t.findResources("AWS::IAM::Role", { Properties: { RoleName: { "Fn::Sub": "${AWS::StackName}-hook" } } });
  const [hookRoleId] = Object.keys(hookRoles);
  assert.deepEqual(project.Properties.ServiceRole, { "Fn::GetAtt": [hookRoleId, "Arn"] });
  assert.equal(project.Properties.Source.Type, "NO_SOURCE");
  const trust = hookRoles[hookRoleId].Properties.AssumeRolePolicyDocument.Statement[0];
  assert.deepEqual(trust.Condition, { StringEquals: { "aws:SourceAccount": { Ref: "AWS::AccountId" } } });
  const statements: { Effect: string; Action: string | string[]; Resource: unknown }[] = hookRoles[hookRoleId].Properties.Policies[0].PolicyDocument.Statement;
  const allowed = statements.filter((s) => s.Effect === "Allow").flatMap((s) => ([] as string[]).concat(s.Action)).sort();
  assert.deepEqual(allowed, ["kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:GetObjectVersion"]);
  const deny = statements.find((s) => s.Effect === "Deny");
  assert.equal(deny?.Action, "s3:*");
  assert.match(JSON.stringify(deny?.Resource), /porter-deployment\/\*.*porter-continuations\/\*/);
  // The function that starts the builds may start only these, and never read continuation state.
  const [fnRole] = Object.values(t.findResources("AWS::IAM::Role", { Properties: { RoleName: { "Fn::Sub": "${AWS::StackName}-hooks" } } }));
  const fnStatements: { Sid: string; Effect: string; Action: unknown; Resource: unknown }[] = fnRole.Properties.Policies[0].PolicyDocument.Statement;
  const [projectId] = Object.keys(t.findResources("AWS::CodeBuild::Project", { Properties: { Name: { "Fn::Sub": "${AWS::StackName}-hooks" } } }));
  assert.deepEqual(fnStatements.find((s) => s.Sid === "RunHooks")?.Resource, { "Fn::GetAtt": [projectId, "Arn"] });
  assert.ok(fnStatements.some((s) => s.Sid === "NotContinuations" && s.Effect === "Deny" && s.Action === "s3:GetObject"));
});

test("no policy grants every action, and only the documented statements use every resource", () => {
  const t = template({ deployAction: "Custom" }).toJSON();
  // The statements whose actions have no resource type in IAM (the SAM template says why at each).
  const starOk = /^(codepipeline:(PutJob|AcknowledgeJob|GetJobDetails)|xray:|logs:(Create|Get|Update|Delete|List)LogDeliver|logs:(PutResourcePolicy|DescribeResourcePolicies|DescribeLogGroups)|cloudformation:DescribeStacks$|ec2:Describe|ec2:Get\*$|autoscaling:Describe|elasticloadbalancing:Describe|ecr:GetAuthorizationToken$|kms:)/;
  const walk = (node: unknown, where: string): void => {
    if (Array.isArray(node)) return node.forEach((n) => walk(n, where));
    if (!node || typeof node !== "object") return;
    const s = node as Record<string, unknown>;
    if (s.Effect === "Allow" && s.Action) {
      const actions = ([] as string[]).concat(s.Action as string[]);
      assert.ok(!actions.includes("*"), `${where}: Action "*"`);
      const resources = ([] as unknown[]).concat(s.Resource ?? []);
      if (resources.includes("*") && !where.includes("ReleaseRoleBoundary") && !(s.Principal as Record<string, unknown>)?.AWS) {
        for (const a of actions) assert.match(a, starOk, `${where}: ${a} on "*"`);
      }
    }
    for (const v of Object.values(s)) walk(v, where);
  };
  for (const [id, r] of Object.entries(t.Resources as Record<string, { Properties?: unknown }>)) walk(r.Properties, id);
});

test("every ARN the construct writes is right in any partition (the shipped definition aside)", () => {
  const resources = template().toJSON().Resources as Record<string, { Type: string; Properties?: Record<string, unknown> }>;
  const written = Object.values(resources).map((r) => JSON.stringify(Object.fromEntries(Object.entries(r.Properties ?? {})
    .filter(([k]) => !(r.Type === "AWS::StepFunctions::StateMachine" && k.startsWith("Definition"))))));
  const literal = written.flatMap((text) => text.match(/arn:aws[a-z-]*:[^"\s,]*/g) ?? []);
  assert.deepEqual(literal, []);
});

test("the deployment role is assumed by provision, promote and prune only, each with the service's session tags and its own session names", () => {
  const t = template();
  const [role] = Object.values(t.findResources("AWS::IAM::Role", { Properties: { RoleName: "porter-deployment" } }));
  type S = { Principal: { AWS: { "Fn::GetAtt": [string, string] } }; Action: string[]; Condition: Record<string, Record<string, unknown>> };
  const statements: S[] = role.Properties.AssumeRolePolicyDocument.Statement;
  // One statement per phase role: a provision or prune session named
  // porter-promote-* would get promote's attach and register rights.
  const sessions = Object.fromEntries(statements.map((s) => [s.Principal.AWS["Fn::GetAtt"][0], s.Condition.StringLike["sts:RoleSessionName"]]));
  const roleOf = (phase: string) => Object.keys(t.findResources("AWS::IAM::Role")).find((id) => id.startsWith(`Porter${phase}FunctionRole`));
  assert.deepEqual(sessions, {
    [roleOf("Provision")!]: "porter-provision-*",
    [roleOf("Promote")!]: ["porter-promote-*", "porter-prune-*"],
    [roleOf("Prune")!]: "porter-prune-*",
  });
  for (const s of statements) {
    assert.deepEqual(s.Action, ["sts:AssumeRole", "sts:TagSession"]);
    assert.deepEqual(s.Condition.StringEquals, { "aws:RequestTag/porter:service": "hello" });
  }
});

test("the deployment role: release roles made and passed only with the session's tags, no group names a load balancer, only promote attaches", () => {
  const [role] = Object.values(template().findResources("AWS::IAM::Role", { Properties: { RoleName: "porter-deployment" } }));
  type S = { Sid: string; Effect: string; Action: string | string[]; Resource: unknown; Condition?: Record<string, Record<string, unknown>> };
  const bySid: Record<string, S> = Object.fromEntries(role.Properties.Policies[0].PolicyDocument.Statement.map((s: S) => [s.Sid, s]));
  const own = (kind: string) => ({
    [`${kind}/porter:service`]: "${aws:PrincipalTag/porter:service}",
    [`${kind}/porter:environment`]: "${aws:PrincipalTag/porter:environment}",
  });
  assert.deepEqual(bySid.CreateReleaseRoles.Action, "iam:CreateRole");
  assert.deepEqual(bySid.CreateReleaseRoles.Condition?.StringEquals, {
    "iam:PermissionsBoundary": { "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/porter/porter-release-boundary" },
    ...own("aws:RequestTag"),
  });
  assert.deepEqual(bySid.TagReleaseRoles.Condition, { StringEquals: own("aws:RequestTag") });
  assert.deepEqual(bySid.PassInstanceRoleToEc2.Condition, {
    StringEqualsIfExists: { "iam:PassedToService": "ec2.amazonaws.com" },
    StringEquals: own("iam:ResourceTag"),
  });
  for (const [sid, key] of [["NoLoadBalancersOnGroups", "autoscaling:LoadBalancerNames"], ["NoTargetGroupsOnGroups", "autoscaling:TargetGroupARNs"]]) {
    assert.equal(bySid[sid].Effect, "Deny", sid);
    assert.deepEqual(bySid[sid].Action, ["autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup"], sid);
    assert.deepEqual(bySid[sid].Condition, { Null: { [key]: "false" } }, sid);
  }
  for (const sid of ["AttachReleaseGroups", "Cutover", "CutoverTargetGroups"]) {
    assert.deepEqual(bySid[sid].Condition?.StringLike, { "aws:userid": "*:porter-promote-*" }, sid);
    assert.deepEqual(bySid[sid].Condition?.StringEquals, own("aws:ResourceTag"), sid);
  }
  assert.deepEqual(bySid.AttachReleaseGroups.Action, [
    "autoscaling:AttachLoadBalancers", "autoscaling:DetachLoadBalancers",
    "autoscaling:AttachLoadBalancerTargetGroups", "autoscaling:DetachLoadBalancerTargetGroups",
  ]);
  assert.deepEqual(bySid.CutoverTargetGroups.Action,
    ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:AddTags"]);
  assert.deepEqual(bySid.CutoverTargetGroups.Resource,
    { "Fn::Sub": "arn:${AWS::Partition}:elasticloadbalancing:*:${AWS::AccountId}:targetgroup/*/*" });
  // The ownership tags stay as their owner set them, on target groups too.
  assert.equal(bySid.KeepOwnershipTags.Effect, "Deny");
  assert.deepEqual(bySid.KeepOwnershipTags.Resource, "*");
});

test("the pipeline deploys production only after the approval, which only the approver roles may give", () => {
  const t = template();
  const [pipe] = Object.values(t.findResources("AWS::CodePipeline::Pipeline"));
  assert.deepEqual(pipe.Properties.Stages.map((s: { Name: string }) => s.Name), ["Source", "Build", "DeployStaging", "Approve", "DeployProduction"]);
  t.hasResourceProperties("AWS::IAM::ManagedPolicy", {
    Roles: ["release-managers"],
    PolicyDocument: Match.objectLike({ Statement: Match.arrayWith([Match.objectLike({ Sid: "ApproveProduction", Action: "codepipeline:PutApprovalResult" })]) }),
  });
  template({ approverRoleNames: [] }).resourcePropertiesCountIs("AWS::IAM::ManagedPolicy", { Roles: ["release-managers"] }, 0);
});

test("EventBridge: branch events and the weekly schedule to the trigger, main's changes to its pipeline, state changes to the topic", () => {
  const t = template({ schedule: "cron(0 4 ? * SUN *)" });
  t.hasResourceProperties("AWS::Events::Rule", { ScheduleExpression: "cron(0 4 ? * SUN *)" });
  t.hasResourceProperties("AWS::Events::Rule", {
    EventPattern: Match.objectLike({ detail: Match.objectLike({ event: ["referenceCreated", "referenceUpdated", "referenceDeleted"], referenceName: [{ "anything-but": "main" }] }) }),
  });
  t.hasResourceProperties("AWS::Events::Rule", {
    EventPattern: Match.objectLike({ detail: Match.objectLike({ event: ["referenceCreated", "referenceUpdated"], referenceName: ["main"] }) }),
  });
  t.hasResourceProperties("AWS::Events::Rule", {
    EventPattern: Match.objectLike({ "detail-type": ["CodePipeline Pipeline Execution State Change", "CodePipeline Action Execution State Change"] }),
  });
  template().hasResourceProperties("AWS::Events::Rule", { ScheduleExpression: "cron(0 6 ? * MON *)" });
});

test("aborted and timed-out deploys go to promote, which may stop and read only the deploy's executions and give back only their lease", () => {
  const t = template();
  const ids = (type: string, props: Record<string, unknown>) => Object.keys(t.findResources(type, { Properties: props }));
  const [promote] = ids("AWS::Lambda::Function", { FunctionName: { "Fn::Sub": "${AWS::StackName}-promote" } });
  const [machine] = ids("AWS::StepFunctions::StateMachine", {});
  const [table] = ids("AWS::DynamoDB::Table", { TableName: { "Fn::Sub": "${AWS::StackName}-leases" } });
  const [role] = ids("AWS::IAM::Role", { RoleName: { "Fn::Sub": "${AWS::StackName}-promote" } });
  // The state machine's ARN from its name (a Ref would be a cycle: the state machine invokes promote).
  const fns = t.findResources("AWS::Lambda::Function");
  assert.deepEqual(fns[promote].Properties.Environment.Variables.STATE_MACHINE_ARN,
    { "Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:${AWS::StackName}-deploy" });
  assert.deepEqual(fns[promote].Properties.Environment.Variables.LEASE_TABLE, { Ref: table });
  assert.deepEqual(t.findResources("AWS::StepFunctions::StateMachine")[machine].Properties.StateMachineName, { "Fn::Sub": "${AWS::StackName}-deploy" });
  type S = { Effect: string; Action: string | string[]; Resource: unknown };
  const granted = Object.values(t.findResources("AWS::IAM::ManagedPolicy"))
    .filter((pol) => JSON.stringify(pol.Properties.Roles ?? []).includes(`"${role}"`))
    .flatMap((pol) => pol.Properties.PolicyDocument.Statement as S[])
    .filter((s) => s.Effect === "Allow" && ([] as string[]).concat(s.Action).some((a) => /^(states|dynamodb):/.test(a)));
  assert.deepEqual(granted.map((s) => [s.Action, s.Resource]), [
    [["states:DescribeExecution", "states:GetExecutionHistory", "states:StopExecution"],
      { "Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${AWS::StackName}-deploy:*" }],
    [["dynamodb:GetItem", "dynamodb:DeleteItem"], { "Fn::GetAtt": [table, "Arn"] }],
  ]);
  const rules = t.findResources("AWS::Events::Rule");
  const toPromote = Object.keys(rules).filter((id) => rules[id].Properties.Targets.some((x: { Arn: unknown }) =>
    JSON.stringify(x.Arn) === JSON.stringify({ "Fn::GetAtt": [promote, "Arn"] })));
  assert.equal(toPromote.length, 1);
  assert.deepEqual(rules[toPromote[0]].Properties.EventPattern, {
    source: ["aws.states"],
    "detail-type": ["Step Functions Execution Status Change"],
    detail: { status: ["ABORTED", "TIMED_OUT"], stateMachineArn: [{ Ref: machine }] },
  });
  const perms = Object.values(t.findResources("AWS::Lambda::Permission", { Properties: { FunctionName: { Ref: promote } } }));
  assert.deepEqual(perms.map((x) => [x.Properties.Principal, x.Properties.SourceArn]),
    [["events.amazonaws.com", { "Fn::GetAtt": [toPromote[0], "Arn"] }]]);
});

test("the props' conditions: other accounts' roles, the custom action, email", () => {
  const other = "arn:aws:iam::210987654321:role/porter-deployment";
  const t = template({ deploymentRoleArns: [other], deployAction: "Custom", notificationEmail: "a@example.com" });
  // The boundary all the same: a deployment role of this account (listed
  // or not) creates release roles only with it.
  t.resourceCountIs("AWS::IAM::ManagedPolicy", 7);
  t.resourcePropertiesCountIs("AWS::IAM::ManagedPolicy", { ManagedPolicyName: "porter-release-boundary", Path: "/porter/" }, 1);
  t.resourceCountIs("AWS::CodePipeline::CustomActionType", 1);
  t.resourceCountIs("AWS::SNS::Subscription", 1);
  t.hasResourceProperties("AWS::KMS::Key", {
    KeyPolicy: Match.objectLike({ Statement: Match.arrayWith([Match.objectLike({ Principal: { AWS: [other] }, Action: ["kms:Decrypt", "kms:DescribeKey"] })]) }),
  });
  const d = template();
  d.resourceCountIs("AWS::IAM::ManagedPolicy", 7);
  d.resourcePropertiesCountIs("AWS::IAM::ManagedPolicy", { ManagedPolicyName: "porter-release-boundary", Path: "/porter/" }, 1);
  d.resourceCountIs("AWS::CodePipeline::CustomActionType", 0);
  d.resourceCountIs("AWS::SNS::Subscription", 0);
});

test("what the SAM template's parameters refuse, the props refuse", () => {
  const bad: [Partial<PorterProps>, RegExp][] = [
    [{ serviceName: "9lives" }, /serviceName/],
    [{ repositoryName: "a b" }, /repositoryName/],
    [{ deploymentRoleName: "x".repeat(65) }, /deploymentRoleName/],
    [{ environmentsPath: "porter" }, /environmentsPath/],
    [{ stagingEnvironment: "stag-ing" }, /stagingEnvironment/],
    [{ architecture: "riscv" as "arm64" }, /architecture/],
    [{ deployAction: "Poll" as "Invoke" }, /deployAction/],
    [{ logRetentionDays: 7 as 30 }, /logRetentionDays/],
    [{ regionBucketNames: [] }, /regionBucketNames/],
    [{ webhookHosts: [] }, /webhookHosts/],
    [{ webhookHosts: ["Hooks.Slack.com"] }, /webhookHosts/],
    [{ webhookHosts: ["https://hooks.slack.com"] }, /webhookHosts/],
    [{ webhookHosts: ["hooks.slack.com:"] }, /webhookHosts/],
    [{ webhookHosts: ["hooks.slack.com", ""] }, /webhookHosts/],
    [{ branchEnvironments: ["dev", "production"] }, /branchEnvironments/],
    [{ allowedExternalReferences: ["sg-0123456789abcdef0,sg-0fedcba9876543210"] }, /allowedExternalReferences/],
    [{ allowedExternalReferences: ["sg-0123456789abcdef0", " "] }, /allowedExternalReferences/],
    [{ bootstrapDir: path.join(bootstrapDir, "nowhere") }, /build the functions first/],
  ];
  for (const [props, message] of bad) assert.throws(() => synth({ ...base, ...props }), message, JSON.stringify(props));
});

test("synth zips the built bootstraps and builds nothing: file assets only, no Docker", () => {
  const { app, stack } = synth(base);
  const assembly = app.synth();
  const manifest = JSON.parse(fs.readFileSync(path.join(assembly.directory, `${stack.artifactId}.assets.json`), "utf8"));
  assert.deepEqual(manifest.dockerImages ?? {}, {});
  const code = Object.values(manifest.files as Record<string, { source: { path: string; packaging: string } }>)
    .filter((f) => f.source.packaging === "zip");
  assert.equal(code.length, PORTER_FUNCTIONS.length);
  for (const f of code) assert.ok(fs.existsSync(path.join(assembly.directory, f.source.path, "bootstrap")));
});

test("two Porter stacks in one app stay apart", () => {
  const app = new App();
  for (const name of ["a", "b"]) new Porter(new Stack(app, name), "Porter", { ...base, serviceName: name });
  assert.equal(app.synth().stacks.length, 2);
});

test("PorterEnvironmentPins writes the pins the phases read", () => {
  const stack = new Stack(new App(), "Pins");
  new PorterEnvironmentPins(stack, "Pins", {
    environments: { production: { regions: { "us-west-2": { roleArn: "arn:aws:iam::111122223333:role/porter-deployment" } } } },
  });
  Template.fromStack(stack).hasResourceProperties("AWS::SSM::Parameter", {
    Name: "/porter/environments/production",
    Value: '{"regions":{"us-west-2":{"role_arn":"arn:aws:iam::111122223333:role/porter-deployment"}}}',
  });
  assert.throws(() => new PorterEnvironmentPins(new Stack(new App(), "X"), "P", {
    environments: { production: { regions: { "us-west-2": { roleArn: "porter-deployment" } } } },
  }), /not a role ARN/);
});
