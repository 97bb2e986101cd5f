// The stack infra/template.yaml creates, as one construct a CDK app
// composes. The SAM template stays the reference: every resource here has
// the SAM logical id as its construct id, and scripts/check_cdk_parity.py
// holds the two to the same resources, state machine definition and IAM
// statements (make check-cdk). Why each statement and setting is what it
// is, is said once, next to it in infra/template.yaml.
//
// L1 resources with CloudFormation's own property names, not L2 constructs:
// L2 grants and defaults add statements and resources of their own (wider
// log and KMS rights, a custom resource for log retention), which would
// make this stack differ from the SAM one it has to equal.

import * as fs from "fs";
import * as path from "path";
import { Aws, CfnOutput, CfnResource, Fn, RemovalPolicy, Token } from "aws-cdk-lib";
import { Asset } from "aws-cdk-lib/aws-s3-assets";
import { Construct } from "constructs";

/** The functions, each built by cargo-lambda from the crate of that name. */
export const PORTER_FUNCTIONS = [
  "pack", "provision", "promote", "prune", "pipeline", "trigger", "lease", "notify", "hooks",
] as const;
export type PorterFunction = (typeof PORTER_FUNCTIONS)[number];

/** Retention periods the SAM template's LogRetentionDays allows. */
export type LogRetentionDays = 30 | 60 | 90 | 180 | 365 | 731 | 1827 | 3653;

export interface PorterProps {
  /**
   * The service this stack deploys: the repository's .porter/config must
   * name it as service_name. The deployment role's rights on stacks and
   * load balancers are scoped to it.
   */
  readonly serviceName: string;
  /** The CodeCommit repository of the service to deploy. */
  readonly repositoryName: string;
  /** The region buckets of the service (.porter/config s3_bucket) in this account. */
  readonly regionBucketNames: string[];
  /** KMS keys of those buckets (.porter/config sse_kms_key_id); none when they use the AWS managed key. */
  readonly regionBucketKeyArns?: string[];
  /** The functions' CPU. @default "arm64" */
  readonly architecture?: "arm64" | "x86_64";
  /**
   * The directory holding each function's built bootstrap as
   * `<dir>/<function>/bootstrap` (what `cargo lambda build --release` makes
   * in `$CARGO_TARGET_DIR/lambda`). Synth only zips what is there: it never
   * builds. @default `$CARGO_TARGET_DIR/lambda`, else `./target/lambda`
   */
  readonly bootstrapDir?: string;
  /** Name of the deployment role this stack creates. @default "porter-deployment" */
  readonly deploymentRoleName?: string;
  /**
   * The deployment roles (other accounts) the phase functions may assume;
   * empty means the role this stack creates. Listed roles must exist
   * before the deploy. @default []
   */
  readonly deploymentRoleArns?: string[];
  /** The SSM path of the environment pins (see PorterEnvironmentPins). @default "/porter/environments/" */
  readonly environmentsPath?: string;
  /** The SSM parameter naming the machine image pack pins into each release. @default the AL2023 x86_64 one */
  readonly imageParameter?: string;
  /**
   * Existing resources outside a release stack (security group ids, KMS key
   * ARNs) that services' stack_definition_path overlays may name; never the
   * repository's to choose. @default [] (overlays name nothing outside their stack)
   */
  readonly allowedExternalReferences?: string[];
  /**
   * ARNs of existing data stores (S3 buckets or prefixes, DynamoDB tables,
   * SQS queues, SNS topics, Kinesis streams, Firehose delivery streams) the
   * service's instances may use beyond their own; an administrator's list.
   * @default [] (only what is named after the service and environment)
   */
  readonly serviceDataStores?: string[];
  /** IAM roles (names, this account) whose members may approve the production deploy. @default [] */
  readonly approverRoleNames?: string[];
  /** The branch the main pipeline deploys. @default "main" */
  readonly branchName?: string;
  /** A regex; each branch whose name matches gets its own pipeline. @default "^(feature|release)/.+$" */
  readonly branchPattern?: string;
  /** Environments a branch pipeline may deploy to; never the production one. @default [] */
  readonly branchEnvironments?: string[];
  /** Pipelines the weekly schedule starts. @default the main pipeline */
  readonly scheduledPipelines?: string[];
  /** When the scheduled pipelines start (an EventBridge schedule expression). @default "cron(0 6 ? * MON *)" */
  readonly schedule?: string;
  /** How the pipeline runs each deploy: a Lambda invoke action, or the Porter custom action type. @default "Invoke" */
  readonly deployAction?: "Invoke" | "Custom";
  /** The .porter/config environment the pipeline deploys first. @default "staging" */
  readonly stagingEnvironment?: string;
  /** The environment deployed after the manual approval. @default "production" */
  readonly productionEnvironment?: string;
  /** An address subscribed to the notification topic. @default none */
  readonly notificationEmail?: string;
  /**
   * The hosts deploy notices may be posted to (a service's `slack:`
   * webhooks), each `host` or `host:port`; a webhook URL in Secrets Manager
   * that points elsewhere is not posted to. @default ["hooks.slack.com"]
   */
  readonly webhookHosts?: string[];
  /** How long the functions', the build's and the state machine's logs are kept. @default 365 */
  readonly logRetentionDays?: LogRetentionDays;
  /** The deploy state machine's definition. @default statemachines/deploy.asl.json of this repository */
  readonly definitionFile?: string;
}

// What the SAM template's parameters allow (AllowedPattern, AllowedValues),
// checked at synth so that nothing the template refuses gets through here.
const PATTERNS: Record<string, RegExp> = {
  deploymentRoleName: /^[A-Za-z0-9+=,.@_-]{1,64}$/,
  serviceName: /^[a-zA-Z][a-zA-Z0-9-]{0,39}$/,
  environmentsPath: /^\/[A-Za-z0-9/_.-]*\/$/,
  imageParameter: /^\/[A-Za-z0-9/_.-]+$/,
  repositoryName: /^[\w.-]{1,100}$/,
  branchEnvironments: /^[0-9a-zA-Z, ]*$/,
  stagingEnvironment: /^[A-Za-z0-9]+$/,
  productionEnvironment: /^[A-Za-z0-9]+$/,
  webhookHosts: /^[a-z0-9.-]+(:[0-9]+)?(,[a-z0-9.-]+(:[0-9]+)?)*$/,
};
const RETENTION: number[] = [30, 60, 90, 180, 365, 731, 1827, 3653];

/** The data-plane actions of tables, queues, topics and streams a release may use. */
const SERVICE_DATA_ACTIONS = [
  "dynamodb:GetItem",
  "dynamodb:PutItem",
  "dynamodb:UpdateItem",
  "dynamodb:DeleteItem",
  "dynamodb:Query",
  "dynamodb:Scan",
  "dynamodb:BatchGetItem",
  "dynamodb:BatchWriteItem",
  "sqs:SendMessage",
  "sqs:ReceiveMessage",
  "sqs:DeleteMessage",
  "sqs:ChangeMessageVisibility",
  "sqs:GetQueueUrl",
  "sqs:GetQueueAttributes",
  "sns:Publish",
  "kinesis:PutRecord",
  "kinesis:PutRecords",
  "firehose:PutRecord",
  "firehose:PutRecordBatch",
];

function resolveProps(props: PorterProps) {
  const p = {
    serviceName: props.serviceName,
    repositoryName: props.repositoryName,
    regionBucketNames: props.regionBucketNames,
    regionBucketKeyArns: props.regionBucketKeyArns ?? [],
    architecture: props.architecture ?? "arm64",
    deploymentRoleName: props.deploymentRoleName ?? "porter-deployment",
    deploymentRoleArns: props.deploymentRoleArns ?? [],
    environmentsPath: props.environmentsPath ?? "/porter/environments/",
    imageParameter: props.imageParameter ?? "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    // pack reads it as a comma-separated string.
    allowedExternalReferences: (props.allowedExternalReferences ?? []).join(","),
    serviceDataStores: props.serviceDataStores ?? [],
    approverRoleNames: props.approverRoleNames ?? [],
    branchName: props.branchName ?? "main",
    branchPattern: props.branchPattern ?? "^(feature|release)/.+$",
    // The trigger reads these two as comma-separated strings.
    branchEnvironments: (props.branchEnvironments ?? []).join(","),
    scheduledPipelines: (props.scheduledPipelines ?? []).join(","),
    schedule: props.schedule ?? "cron(0 6 ? * MON *)",
    deployAction: props.deployAction ?? "Invoke",
    stagingEnvironment: props.stagingEnvironment ?? "staging",
    productionEnvironment: props.productionEnvironment ?? "production",
    notificationEmail: props.notificationEmail ?? "",
    // The notify function reads it as a comma-separated string.
    webhookHosts: (props.webhookHosts ?? ["hooks.slack.com"]).join(","),
    logRetentionDays: props.logRetentionDays ?? 365,
  };
  const problems: string[] = [];
  for (const [name, re] of Object.entries(PATTERNS)) {
    const v = (p as Record<string, unknown>)[name] as string;
    if (!Token.isUnresolved(v) && !re.test(v)) problems.push(`${name} ${JSON.stringify(v)} does not match ${re}`);
  }
  if (!["arm64", "x86_64"].includes(p.architecture)) problems.push(`architecture is arm64 or x86_64, not ${p.architecture}`);
  if (!["Invoke", "Custom"].includes(p.deployAction)) problems.push(`deployAction is Invoke or Custom, not ${p.deployAction}`);
  if (!Token.isUnresolved(p.logRetentionDays) && !RETENTION.includes(p.logRetentionDays)) {
    problems.push(`logRetentionDays is one of ${RETENTION.join(", ")}, not ${p.logRetentionDays}`);
  }
  if (!p.regionBucketNames.length) problems.push("regionBucketNames names at least one bucket");
  // One id or ARN each: the SAM parameter is a CommaDelimitedList, and pack
  // splits the variable at commas.
  for (const r of props.allowedExternalReferences ?? []) {
    if (!Token.isUnresolved(r) && (r.trim() === "" || r.includes(","))) {
      problems.push(`allowedExternalReferences holds ${JSON.stringify(r)}: one id or ARN each, without commas`);
    }
  }
  // The SAM template says it in a parameter's description; here it can be refused.
  if ((props.branchEnvironments ?? []).includes(p.productionEnvironment)) {
    problems.push(`branchEnvironments never holds the production environment ${p.productionEnvironment}`);
  }
  if (problems.length) throw new Error(`Porter: ${problems.join("; ")}`);
  return p;
}

/** An IAM policy document of these statements. */
const policyDocument = (statements: object[]) => ({ Version: "2012-10-17", Statement: statements });

// Every function's role: Lambda assumes it, and it may write its traces
// (X-Ray writes have no resource type in IAM) and its own log group.
const LAMBDA_TRUST = policyDocument([
  { Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: "sts:AssumeRole" },
]);
// A role an AWS service assumes on this account's behalf only.
const serviceTrust = (service: string) => policyDocument([
  {
    Effect: "Allow",
    Principal: { Service: service },
    Action: "sts:AssumeRole",
    Condition: { StringEquals: { "aws:SourceAccount": Aws.ACCOUNT_ID } },
  },
]);
const TRACING = { Sid: "Tracing", Effect: "Allow", Action: ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], Resource: "*" };
const logsTo = (group: CfnResource) => ({
  Sid: "Logs",
  Effect: "Allow",
  Action: ["logs:CreateLogStream", "logs:PutLogEvents"],
  Resource: Token.asString(group.getAtt("Arn")),
});

// Every CodePipeline job is read back (GetJobDetails; a job has no resource
// type in IAM, so "*") and checked against its pipeline's declaration: this
// installation's main pipeline and its branch pipelines (<main>-<branch>-<hash>)
// only (crates/lambda/src/origin.rs).
const VERIFY_JOBS = { Sid: "VerifyJobs", Effect: "Allow", Action: "codepipeline:GetJobDetails", Resource: "*" };
const STACK_PIPELINES = Fn.sub("arn:${AWS::Partition}:codepipeline:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-pipeline*");
const READ_PIPELINES = { Sid: "ReadPipelines", Effect: "Allow", Action: "codepipeline:GetPipeline", Resource: STACK_PIPELINES };
// A job's result: again "*", for the same reason.
const JOB_RESULTS = {
  Sid: "JobResults",
  Effect: "Allow",
  Action: ["codepipeline:PutJobSuccessResult", "codepipeline:PutJobFailureResult"],
  Resource: "*",
};
// The events of those pipelines, as EventBridge rules match them.
const STACK_PIPELINE_EVENTS = [
  { prefix: Fn.sub("arn:${AWS::Partition}:codepipeline:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-pipeline") },
];
// This stack's deploy executions.
const DEPLOY_EXECUTIONS = Fn.sub("arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${AWS::StackName}-deploy:*");

// The deployment role's sessions carry their service and environment as
// principal tags: what a session names (aws:ResourceTag, iam:ResourceTag)
// or creates (aws:RequestTag) must carry the same ones.
const sessionTags = (tagKey: "aws:ResourceTag" | "aws:RequestTag" | "iam:ResourceTag") => ({
  [`${tagKey}/porter:service`]: "${aws:PrincipalTag/porter:service}",
  [`${tagKey}/porter:environment`]: "${aws:PrincipalTag/porter:environment}",
});
// What puts instances in front of traffic: allowed in promote's sessions
// only (porter-promote-SERVICE, from crates/core/src/target.rs), never
// provision's, which creates release stacks; and only on resources of the
// session's service and environment.
const onlyInPromoteSessions = (sid: string, actions: string[], resource: string) => ({
  Sid: sid,
  Effect: "Allow",
  Action: actions,
  Resource: resource,
  Condition: {
    StringEquals: sessionTags("aws:ResourceTag"),
    StringLike: { "aws:userid": "*:porter-promote-*" },
  },
});

// Where repository code runs (the hooks, the image build): never the
// releases, nor the continuation state and its sealing key.
const notReleasesOrContinuations = (bucket: CfnResource) => ({
  Sid: "NotReleasesOrContinuations",
  Effect: "Deny",
  Action: "s3:*",
  Resource: ["porter-deployment", "porter-continuations"].map((prefix) =>
    Fn.sub(`\${ArtifactBucketArn}/${prefix}/*`, { ArtifactBucketArn: Token.asString(bucket.getAtt("Arn")) }),
  ),
});

// The settings of the Porter custom action type besides the environment:
// each optional, not part of the action's identity, shown in the console.
const optionalActionSetting = (name: string, type: "String" | "Number" | "Boolean", description: string) => ({
  Name: name,
  Type: type,
  Required: false,
  Key: false,
  Secret: false,
  Queryable: false,
  Description: description,
});

/** The deploy state machine's definition shipped in this repository. */
function shippedDefinition(): string {
  // Walk up from the compiled module (dist/lib): the package carries a copy
  // in dist/statemachines (npm run build makes it), else the repository's.
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const f = path.join(dir, "statemachines", "deploy.asl.json");
    if (fs.existsSync(f)) return f;
  }
  throw new Error("Porter: statemachines/deploy.asl.json not found above " + __dirname + "; pass definitionFile");
}

/**
 * porter, serverless: the nine Rust functions, the deploy state machine
 * and its lease table, the artifact bucket and its KMS key, the deployment
 * role, the pipeline with its approval, the EventBridge rules, the
 * notification topic and the CodeBuild project the service's hooks run in.
 * The same stack as infra/template.yaml.
 */
export class Porter extends Construct {
  /** The deploy state machine's ARN. */
  readonly stateMachineArn: string;
  /** The main branch's pipeline. */
  readonly pipelineName: string;
  /** Payloads, pipeline artifacts and continuation state. */
  readonly artifactBucketName: string;
  /** The artifact bucket's KMS key. */
  readonly artifactKeyArn: string;
  /** Approvals and pipeline state changes. */
  readonly notificationTopicArn: string;
  /** The role to name as role_arn in .porter/config (this account). */
  readonly deploymentRoleArn: string;
  /** The deploy lease table. */
  readonly leaseTableName: string;
  /** Each function's ARN. */
  readonly functionArns: Record<PorterFunction, string>;

  constructor(scope: Construct, id: string, props: PorterProps) {
    super(scope, id);
    const p = resolveProps(props);
    const c = {
      useOwnDeploymentRole: p.deploymentRoleArns.length === 0,
      useOtherDeploymentRoles: p.deploymentRoleArns.length > 0,
      hasRegionBucketKeys: p.regionBucketKeyArns.length > 0,
      hasServiceDataStores: p.serviceDataStores.length > 0,
      scheduleMainPipeline: p.scheduledPipelines === "",
      hasNotificationEmail: p.notificationEmail !== "",
      hasApprovers: p.approverRoleNames.length > 0,
      useCustomAction: p.deployAction === "Custom",
    };
    const res = (id: string, type: string, properties: Record<string, unknown>) =>
      new CfnResource(this, id, { type, properties });
    const att = (r: CfnResource, name: string) => Token.asString(r.getAtt(name));
    const cap = (fn: string) => fn[0].toUpperCase() + fn.slice(1);
    const bootstrapDir =
      props.bootstrapDir ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(process.cwd(), "target"), "lambda");
    const code = (fn: PorterFunction) => {
      const dir = path.join(bootstrapDir, fn);
      if (!fs.existsSync(path.join(dir, "bootstrap"))) {
        throw new Error(`Porter: no ${dir}/bootstrap: build the functions first (cargo lambda build --release), or pass bootstrapDir`);
      }
      const asset = new Asset(this, `${cap(fn)}Code`, { path: dir });
      return { S3Bucket: asset.s3BucketName, S3Key: asset.s3ObjectKey };
    };
    const definition = fs.readFileSync(props.definitionFile ?? shippedDefinition(), "utf8");
    const logGroup = (id: string, name: string) =>
      res(id, "AWS::Logs::LogGroup", { LogGroupName: name, RetentionInDays: p.logRetentionDays });
    const functionLogGroup = (fn: PorterFunction) => logGroup(`${cap(fn)}LogGroup`, `/aws/lambda/${Aws.STACK_NAME}-${fn}`);
    // SAM's Globals.Function, which each function's own properties extend.
    const lambdaFunction = (fn: PorterFunction, role: CfnResource, logs: CfnResource, own: Record<string, unknown>) =>
      res(`${cap(fn)}Function`, "AWS::Lambda::Function", {
        Code: code(fn),
        FunctionName: Fn.sub(`\${AWS::StackName}-${fn}`),
        Handler: "bootstrap",
        MemorySize: 256,
        Role: att(role, "Arn"),
        Runtime: "provided.al2023",
        Timeout: 300,
        TracingConfig: { Mode: "Active" },
        Architectures: [p.architecture],
        LoggingConfig: { LogFormat: "JSON", LogGroup: logs.ref },
        ...own,
      });
    // A role (own: its name, trust, description) with one inline policy:
    // every role here has one; what roles share is in managed policies.
    const roleWithPolicy = (id: string, own: Record<string, unknown>, policyName: string, statements: object[]) =>
      res(id, "AWS::IAM::Role", {
        ...own,
        Policies: [{ PolicyName: policyName, PolicyDocument: policyDocument(statements) }],
      });
    // A function's role, named after it.
    const lambdaRole = (fn: PorterFunction, policyName: string, statements: object[]) =>
      roleWithPolicy(`${cap(fn)}FunctionRole`, {
        RoleName: Fn.sub(`\${AWS::StackName}-${fn}`),
        AssumeRolePolicyDocument: LAMBDA_TRUST,
      }, policyName, statements);
    // pack, provision, promote and prune: a role that writes its own logs;
    // what else each may do is in the managed policies below.
    const phaseRole = (fn: PorterFunction, logs: CfnResource) =>
      lambdaRole(fn, "logs", [{ Effect: "Allow", Action: ["logs:CreateLogStream", "logs:PutLogEvents"], Resource: att(logs, "Arn") }]);
    // The other functions: their own statements, then their logs and traces.
    const functionRole = (fn: PorterFunction, logs: CfnResource, policyName: string, statements: object[]) =>
      lambdaRole(fn, policyName, [...statements, logsTo(logs), TRACING]);
    const managedPolicy = (id: string, description: string, roles: string[], statements: object[]) =>
      res(id, "AWS::IAM::ManagedPolicy", { Description: description, Roles: roles, PolicyDocument: policyDocument(statements) });
    // A key whose use this account's IAM policies grant, and these statements besides.
    const kmsKey = (id: string, description: string, statements: object[]) =>
      res(id, "AWS::KMS::Key", {
        Description: Fn.sub(`\${AWS::StackName}: ${description}`),
        EnableKeyRotation: true,
        KeyPolicy: policyDocument([
          {
            Sid: "AccountIamPolicies",
            Effect: "Allow",
            Principal: { AWS: Fn.sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root") },
            Action: "kms:*",
            Resource: "*",
          },
          ...statements,
        ]),
      });
    // An EventBridge rule that invokes a function, and the permission for
    // it: EventBridge may invoke a function from that one rule only.
    const ruleInvoking = (ruleId: string, permissionId: string, fn: CfnResource, target: string, own: Record<string, unknown>) => {
      const rule = res(ruleId, "AWS::Events::Rule", { ...own, Targets: [{ Id: target, Arn: att(fn, "Arn") }] });
      res(permissionId, "AWS::Lambda::Permission", {
        Action: "lambda:InvokeFunction",
        FunctionName: fn.ref,
        Principal: "events.amazonaws.com",
        SourceArn: att(rule, "Arn"),
      });
    };

    // ---- The artifact bucket and its key

    const artifactKey = kmsKey("ArtifactKey", "the artifact bucket (payloads, pipeline artifacts, continuation state)", c.useOtherDeploymentRoles ? [{
      Sid: "DeploymentRolesReadPayloads",
      Effect: "Allow",
      Principal: { AWS: p.deploymentRoleArns },
      Action: ["kms:Decrypt", "kms:DescribeKey"],
      Resource: "*",
      Condition: { StringLike: { "kms:ViaService": "s3.*.amazonaws.com" } },
    }] : []);
    artifactKey.applyRemovalPolicy(RemovalPolicy.RETAIN);

    res("ArtifactKeyAlias", "AWS::KMS::Alias", { AliasName: Fn.sub("alias/${AWS::StackName}-artifacts"), TargetKeyId: artifactKey.ref });

    const artifactBucket = res("ArtifactBucket", "AWS::S3::Bucket", {
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [
          {
            ServerSideEncryptionByDefault: { SSEAlgorithm: "aws:kms", KMSMasterKeyID: att(artifactKey, "Arn") },
            BucketKeyEnabled: true,
          },
        ],
      },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      VersioningConfiguration: { Status: "Enabled" },
      OwnershipControls: { Rules: [{ ObjectOwnership: "BucketOwnerEnforced" }] },
      LifecycleConfiguration: {
        Rules: [
          {
            Id: "expire-old-versions",
            Status: "Enabled",
            NoncurrentVersionExpiration: { NoncurrentDays: 30 },
            AbortIncompleteMultipartUpload: { DaysAfterInitiation: 7 },
          },
        ],
      },
    });
    artifactBucket.applyRemovalPolicy(RemovalPolicy.RETAIN);

    // The artifact bucket's objects under a key pattern ("*", "porter-deployment/*").
    const artifactObjects = (pattern: string) =>
      Fn.sub(`\${ArtifactBucketArn}/${pattern}`, { ArtifactBucketArn: att(artifactBucket, "Arn") });
    // Statements several roles share: list the artifact bucket, read what
    // is sealed with its key, or read and write it.
    const listArtifactBucket = { Sid: "ArtifactBucket", Effect: "Allow", Action: "s3:ListBucket", Resource: att(artifactBucket, "Arn") };
    const decryptArtifacts = { Sid: "ArtifactKey", Effect: "Allow", Action: "kms:Decrypt", Resource: att(artifactKey, "Arn") };
    const useArtifactKey = { Sid: "ArtifactKey", Effect: "Allow", Action: ["kms:Decrypt", "kms:GenerateDataKey"], Resource: att(artifactKey, "Arn") };

    res("ArtifactBucketPolicy", "AWS::S3::BucketPolicy", {
      Bucket: artifactBucket.ref,
      PolicyDocument: policyDocument([
        {
          Sid: "DenyInsecureTransport",
          Effect: "Deny",
          Principal: "*",
          Action: "s3:*",
          Resource: [att(artifactBucket, "Arn"), artifactObjects("*")],
          Condition: { Bool: { "aws:SecureTransport": "false" } },
        },
        {
          Sid: "DenyUnencryptedUploads",
          Effect: "Deny",
          Principal: "*",
          Action: "s3:PutObject",
          Resource: artifactObjects("*"),
          Condition: { StringNotEquals: { "s3:x-amz-server-side-encryption": "aws:kms" } },
        },
        ...(c.useOtherDeploymentRoles ? [{
          Sid: "DeploymentRolesReadPayloads",
          Effect: "Allow",
          Principal: { AWS: p.deploymentRoleArns },
          Action: "s3:GetObject",
          Resource: artifactObjects("porter-deployment/*"),
        }] : []),
      ]),
    });

    // ---- The phase functions' roles, and the deployment role that provision, promote and prune assume

    const packLogGroup = functionLogGroup("pack");

    const packFunctionRole = phaseRole("pack", packLogGroup);

    const provisionLogGroup = functionLogGroup("provision");

    const provisionFunctionRole = phaseRole("provision", provisionLogGroup);

    const promoteLogGroup = functionLogGroup("promote");

    const promoteFunctionRole = phaseRole("promote", promoteLogGroup);

    const pruneLogGroup = functionLogGroup("prune");

    const pruneFunctionRole = phaseRole("prune", pruneLogGroup);

    // In this account whatever deploymentRoleArns says (the SAM template says why).
    res("ReleaseRoleBoundary", "AWS::IAM::ManagedPolicy", {
      ManagedPolicyName: "porter-release-boundary",
      Path: "/porter/",
      Description: "The permissions boundary of every IAM role a porter release stack creates",
      PolicyDocument: policyDocument([
        // What any service's process needs to run and report, on any
        // resource: the instance role's own statements name which.
        {
          Sid: "ServiceRuntime",
          Effect: "Allow",
          Action: [
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "cloudwatch:PutMetricData",
            "xray:PutTraceSegments",
            "xray:PutTelemetryRecords",
            "kms:Decrypt",
            "kms:Encrypt",
            "kms:GenerateDataKey",
            "ecr:GetAuthorizationToken",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "ecr:BatchCheckLayerAvailability",
            "ec2:DescribeInstances",
            "ec2:DescribeTags",
            "cloudformation:SignalResource",
            "cloudformation:DescribeStackResource",
            "sts:GetCallerIdentity",
          ],
          Resource: "*",
        },
        // Data only of the role's own service and environment (its tags as
        // principal tags): its payloads, objects under SERVICE/ENVIRONMENT/,
        // and tables, queues, topics and streams named SERVICE-ENVIRONMENT-*.
        {
          Sid: "ServicePayloads",
          Effect: "Allow",
          Action: "s3:GetObject",
          Resource: Fn.sub("arn:${AWS::Partition}:s3:::*/porter-deployment/${!aws:PrincipalTag/porter:service}/${!aws:PrincipalTag/porter:environment}/*"),
        },
        {
          Sid: "ServiceOwnObjects",
          Effect: "Allow",
          Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
          Resource: Fn.sub("arn:${AWS::Partition}:s3:::*/${!aws:PrincipalTag/porter:service}/${!aws:PrincipalTag/porter:environment}/*"),
        },
        {
          Sid: "ServiceOwnObjectListing",
          Effect: "Allow",
          Action: "s3:ListBucket",
          Resource: Fn.sub("arn:${AWS::Partition}:s3:::*"),
          Condition: { StringLike: { "s3:prefix": "${aws:PrincipalTag/porter:service}/${aws:PrincipalTag/porter:environment}/*" } },
        },
        {
          Sid: "ServiceOwnDataStores",
          Effect: "Allow",
          Action: SERVICE_DATA_ACTIONS,
          Resource: [
            "dynamodb:*:${AWS::AccountId}:table/",
            "sqs:*:${AWS::AccountId}:",
            "sns:*:${AWS::AccountId}:",
            "kinesis:*:${AWS::AccountId}:stream/",
            "firehose:*:${AWS::AccountId}:deliverystream/",
          ].map((at) => Fn.sub(`arn:\${AWS::Partition}:${at}\${!aws:PrincipalTag/porter:service}-\${!aws:PrincipalTag/porter:environment}-*`)),
        },
        // Beyond that, only the data stores an administrator lists.
        ...(c.hasServiceDataStores ? [{
          Sid: "AdministeredDataStores",
          Effect: "Allow",
          Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", ...SERVICE_DATA_ACTIONS],
          Resource: p.serviceDataStores,
        }] : []),
        // Secrets and parameters only under the role's own service's and
        // environment's prefix (its porter:service and porter:environment
        // tags, which its sessions carry as principal tags): no overlay
        // grants its instances another service's or environment's secrets.
        // ${!...}: a policy variable Fn::Sub leaves to IAM.
        {
          Sid: "ServiceSecretsUnderPorter",
          Effect: "Allow",
          Action: ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
          Resource: Fn.sub("arn:${AWS::Partition}:ssm:*:${AWS::AccountId}:parameter/porter/${!aws:PrincipalTag/porter:service}/${!aws:PrincipalTag/porter:environment}/*"),
        },
        {
          Sid: "ServiceSecretValuesUnderPorter",
          Effect: "Allow",
          Action: "secretsmanager:GetSecretValue",
          Resource: Fn.sub("arn:${AWS::Partition}:secretsmanager:*:${AWS::AccountId}:secret:porter/${!aws:PrincipalTag/porter:service}/${!aws:PrincipalTag/porter:environment}/*"),
        },
        {
          Sid: "NotPorterArtifacts",
          Effect: "Deny",
          Action: "s3:*",
          Resource: [att(artifactBucket, "Arn"), artifactObjects("*")],
        },
      ]),
    });

    // What the deployment role's statements name: the account's stacks,
    // groups, EC2 resources of a type, and the release roles and their boundary.
    const anyStack = Fn.sub("arn:${AWS::Partition}:cloudformation:*:${AWS::AccountId}:stack/*/*");
    const autoScalingGroups = Fn.sub("arn:${AWS::Partition}:autoscaling:*:${AWS::AccountId}:autoScalingGroup:*:autoScalingGroupName/*");
    const releaseRoles = Fn.sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/porter/*");
    const releaseBoundary = Fn.sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/porter/porter-release-boundary");
    const ec2Resources = (type: string) => Fn.sub(`arn:\${AWS::Partition}:ec2:*:\${AWS::AccountId}:${type}/*`);

    const deploymentRole = roleWithPolicy("DeploymentRole", {
      RoleName: p.deploymentRoleName,
      Description: "porter's deployment role (.porter/config role_arn), assumed by the phase functions",
      // Each phase names its sessions after itself and may name no other
      // (attach and register go to porter-promote-* sessions only); the
      // promote function's abort deletes stacks in a prune session.
      AssumeRolePolicyDocument: policyDocument(([
        [provisionFunctionRole, "porter-provision-*"],
        [promoteFunctionRole, ["porter-promote-*", "porter-prune-*"]],
        [pruneFunctionRole, "porter-prune-*"],
      ] as [CfnResource, string | string[]][]).map(([role, sessions]) => ({
        Effect: "Allow",
        Principal: { AWS: att(role, "Arn") },
        Action: ["sts:AssumeRole", "sts:TagSession"],
        Condition: {
          StringEquals: { "aws:RequestTag/porter:service": p.serviceName },
          StringLike: { "aws:RequestTag/porter:environment": "?*", "sts:RoleSessionName": sessions },
          "ForAllValues:StringEquals": { "aws:TagKeys": ["porter:service", "porter:environment"] },
        },
      }))),
    }, "porter-deploy", [
      {
        Sid: "CreatePorterStacks",
        Effect: "Allow",
        Action: ["cloudformation:CreateStack", "cloudformation:TagResource"],
        Resource: anyStack,
        Condition: { StringEquals: sessionTags("aws:RequestTag") },
      },
      {
        Sid: "DeletePorterStacks",
        Effect: "Allow",
        Action: "cloudformation:DeleteStack",
        Resource: anyStack,
        Condition: { StringEquals: sessionTags("aws:ResourceTag") },
      },
      {
        Sid: "ReadStacks",
        Effect: "Allow",
        Action: [
          "cloudformation:DescribeStackEvents",
          "cloudformation:DescribeStackResource",
          "cloudformation:DescribeStackResources",
        ],
        Resource: anyStack,
      },
      {
        Sid: "ListStacks",
        Effect: "Allow",
        Action: "cloudformation:DescribeStacks",
        Resource: "*",
      },
      {
        Sid: "Describe",
        Effect: "Allow",
        Action: [
          "ec2:Describe*",
          "ec2:Get*",
          "autoscaling:Describe*",
          "elasticloadbalancing:Describe*",
        ],
        Resource: "*",
      },
      {
        Sid: "RolloutAlarms",
        Effect: "Allow",
        Action: "cloudwatch:DescribeAlarms",
        Resource: Fn.sub("arn:${AWS::Partition}:cloudwatch:*:${AWS::AccountId}:alarm:*"),
      },
      {
        Sid: "SecurityGroups",
        Effect: "Allow",
        Action: [
          "ec2:CreateSecurityGroup",
          "ec2:DeleteSecurityGroup",
          "ec2:AuthorizeSecurityGroupIngress",
          "ec2:RevokeSecurityGroupIngress",
          "ec2:AuthorizeSecurityGroupEgress",
          "ec2:RevokeSecurityGroupEgress",
        ],
        Resource: ["security-group", "vpc"].map(ec2Resources),
      },
      {
        Sid: "LaunchTemplates",
        Effect: "Allow",
        Action: [
          "ec2:CreateLaunchTemplate",
          "ec2:CreateLaunchTemplateVersion",
          "ec2:DeleteLaunchTemplate",
          "ec2:ModifyLaunchTemplate",
          "ec2:DeleteTags",
        ],
        Resource: ec2Resources("launch-template"),
      },
      {
        Sid: "LaunchInstances",
        Effect: "Allow",
        Action: ["ec2:RunInstances", "ec2:CreateTags"],
        Resource: [
          ...["instance", "volume", "network-interface", "security-group", "subnet", "launch-template", "key-pair"].map(ec2Resources),
          // Images are public or shared: no account in their ARN.
          Fn.sub("arn:${AWS::Partition}:ec2:*::image/*"),
        ],
      },
      {
        Sid: "AutoScalingGroups",
        Effect: "Allow",
        Action: [
          "autoscaling:CreateAutoScalingGroup",
          "autoscaling:UpdateAutoScalingGroup",
          "autoscaling:DeleteAutoScalingGroup",
          "autoscaling:CreateOrUpdateTags",
          "autoscaling:DeleteTags",
          "autoscaling:SuspendProcesses",
        ],
        Resource: autoScalingGroups,
      },
      // No group is created or changed naming load balancers or target
      // groups: only promote puts instances in front of traffic. One
      // statement per key (a statement's conditions must all hold).
      ...([
        ["NoLoadBalancersOnGroups", "autoscaling:LoadBalancerNames"],
        ["NoTargetGroupsOnGroups", "autoscaling:TargetGroupARNs"],
      ] as const).map(([sid, key]) => ({
        Sid: sid,
        Effect: "Deny",
        Action: ["autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup"],
        Resource: "*",
        Condition: { Null: { [key]: "false" } },
      })),
      {
        Sid: "ReleaseGroupSettings",
        Effect: "Allow",
        Action: [
          "autoscaling:PutScheduledUpdateGroupAction",
          "autoscaling:DeleteScheduledAction",
          "autoscaling:EnableMetricsCollection",
        ],
        Resource: autoScalingGroups,
        Condition: { StringEquals: sessionTags("aws:ResourceTag") },
      },
      // IAM cannot condition an attach on the load balancer's or target
      // group's tags (a target group shows only as its ARN,
      // autoscaling:TargetGroupARNs): promote checks them in code before it
      // attaches.
      onlyInPromoteSessions("AttachReleaseGroups", [
        "autoscaling:AttachLoadBalancers",
        "autoscaling:DetachLoadBalancers",
        "autoscaling:AttachLoadBalancerTargetGroups",
        "autoscaling:DetachLoadBalancerTargetGroups",
      ], autoScalingGroups),
      {
        Sid: "AutoScalingServiceRole",
        Effect: "Allow",
        Action: "iam:CreateServiceLinkedRole",
        Resource: Fn.sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"),
        Condition: { StringEquals: { "iam:AWSServiceName": "autoscaling.amazonaws.com" } },
      },
      // Only in promote's sessions too: a release stack registers nothing.
      onlyInPromoteSessions("Cutover", [
        "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
        "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
        "elasticloadbalancing:AddTags",
      ], Fn.sub("arn:${AWS::Partition}:elasticloadbalancing:*:${AWS::AccountId}:loadbalancer/*")),
      // The same for ALB/NLB target groups (these calls name the target
      // group, so IAM conditions them on its tags): a statement of its
      // own, as its resources are target groups, not load balancers.
      onlyInPromoteSessions("CutoverTargetGroups", [
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:AddTags",
      ], Fn.sub("arn:${AWS::Partition}:elasticloadbalancing:*:${AWS::AccountId}:targetgroup/*/*")),
      // On every load balancer and target group: ownership tags never change here.
      {
        Sid: "KeepOwnershipTags",
        Effect: "Deny",
        Action: ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
        Resource: "*",
        Condition: {
          "ForAnyValue:StringEquals": { "aws:TagKeys": ["porter:service", "porter:environment"] },
        },
      },
      {
        Sid: "BoundedReleaseRoles",
        Effect: "Allow",
        Action: [
          "iam:PutRolePolicy",
          "iam:DeleteRolePolicy",
          "iam:AttachRolePolicy",
          "iam:DetachRolePolicy",
          "iam:PutRolePermissionsBoundary",
        ],
        Resource: releaseRoles,
        Condition: { StringEquals: { "iam:PermissionsBoundary": releaseBoundary } },
      },
      // Roles are created only with the boundary and tagged with the
      // session's own service and environment: the tags the boundary
      // scopes secrets by and PassRole checks.
      {
        Sid: "CreateReleaseRoles",
        Effect: "Allow",
        Action: "iam:CreateRole",
        Resource: releaseRoles,
        Condition: { StringEquals: { "iam:PermissionsBoundary": releaseBoundary, ...sessionTags("aws:RequestTag") } },
      },
      // CreateRole with tags needs TagRole too: only with the same tags.
      {
        Sid: "TagReleaseRoles",
        Effect: "Allow",
        Action: "iam:TagRole",
        Resource: releaseRoles,
        Condition: { StringEquals: sessionTags("aws:RequestTag") },
      },
      {
        Sid: "ReleaseRoles",
        Effect: "Allow",
        Action: [
          "iam:DeleteRole",
          "iam:GetRole",
          "iam:UntagRole",
          "iam:GetRolePolicy",
          "iam:ListRolePolicies",
          "iam:ListAttachedRolePolicies",
          "iam:ListInstanceProfilesForRole",
        ],
        Resource: releaseRoles,
      },
      {
        Sid: "KeepTheBoundary",
        Effect: "Deny",
        Action: "iam:DeleteRolePermissionsBoundary",
        Resource: "*",
      },
      // Only roles of the session's own service and environment.
      {
        Sid: "PassInstanceRoleToEc2",
        Effect: "Allow",
        Action: "iam:PassRole",
        Resource: releaseRoles,
        Condition: {
          StringEqualsIfExists: { "iam:PassedToService": "ec2.amazonaws.com" },
          StringEquals: sessionTags("iam:ResourceTag"),
        },
      },
      {
        Sid: "InstanceProfile",
        Effect: "Allow",
        Action: [
          "iam:CreateInstanceProfile",
          "iam:DeleteInstanceProfile",
          "iam:GetInstanceProfile",
          "iam:AddRoleToInstanceProfile",
          "iam:RemoveRoleFromInstanceProfile",
          "iam:TagInstanceProfile",
        ],
        Resource: Fn.sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:instance-profile/porter/*"),
      },
      {
        Sid: "PublicImageParameter",
        Effect: "Allow",
        Action: ["ssm:GetParameters", "ssm:GetParameter"],
        Resource: Fn.sub("arn:${AWS::Partition}:ssm:*::parameter/aws/service/ami-amazon-linux-latest/*"),
      },
      {
        Sid: "ReadPayloads",
        Effect: "Allow",
        Action: "s3:GetObject",
        Resource: artifactObjects("porter-deployment/*"),
      },
      {
        Sid: "DecryptPayloads",
        Effect: "Allow",
        Action: "kms:Decrypt",
        Resource: att(artifactKey, "Arn"),
        Condition: { StringLike: { "kms:ViaService": "s3.*.amazonaws.com" } },
      },
      // arn:*: as in the SAM template, which cannot name the
      // partition in the ARNs it makes of a list parameter.
      {
        Sid: "RegionBucketObjects",
        Effect: "Allow",
        Action: ["s3:GetObject", "s3:PutObject"],
        Resource: p.regionBucketNames.map((name) => Fn.sub("arn:*:s3:::${Name}/*", { Name: name })),
      },
      {
        Sid: "RegionBuckets",
        Effect: "Allow",
        Action: "s3:ListBucket",
        Resource: p.regionBucketNames.map((name) => Fn.sub("arn:*:s3:::${Name}", { Name: name })),
      },
      ...(c.hasRegionBucketKeys ? [{
        Sid: "RegionBucketKeys",
        Effect: "Allow",
        Action: ["kms:Decrypt", "kms:GenerateDataKey"],
        Resource: p.regionBucketKeyArns,
      }] : []),
    ]);

    managedPolicy("PhaseFunctionsPolicy", "porter phase functions (pack, provision, promote, prune)", [
      packFunctionRole.ref,
      provisionFunctionRole.ref,
      promoteFunctionRole.ref,
      pruneFunctionRole.ref,
    ], [
      {
        Sid: "ReadReleases",
        Effect: "Allow",
        Action: "s3:GetObject",
        Resource: [artifactObjects("porter-deployment/*"), artifactObjects("porter-continuations/*")],
      },
      {
        Sid: "WriteContinuations",
        Effect: "Allow",
        Action: "s3:PutObject",
        Resource: artifactObjects("porter-continuations/*"),
      },
      listArtifactBucket,
      useArtifactKey,
      {
        Sid: "ReadEnvironmentPins",
        Effect: "Allow",
        Action: "ssm:GetParameter",
        Resource: Fn.sub("arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${EnvironmentsPath}*", { EnvironmentsPath: p.environmentsPath }),
      },
      JOB_RESULTS,
      VERIFY_JOBS,
      READ_PIPELINES,
      TRACING,
    ]);

    managedPolicy("PackFunctionPolicy", "porter pack function", [packFunctionRole.ref], [
      {
        Sid: "ReadSources",
        Effect: "Allow",
        Action: "s3:GetObject",
        Resource: artifactObjects("*"),
      },
      {
        Sid: "WriteReleases",
        Effect: "Allow",
        Action: "s3:PutObject",
        Resource: artifactObjects("porter-deployment/*"),
      },
      {
        Sid: "MachineImage",
        Effect: "Allow",
        Action: "ssm:GetParameter",
        Resource: [
          Fn.sub("arn:${AWS::Partition}:ssm:*::parameter${ImageParameter}", { ImageParameter: p.imageParameter }),
          Fn.sub("arn:${AWS::Partition}:ssm:*:${AWS::AccountId}:parameter${ImageParameter}", { ImageParameter: p.imageParameter }),
        ],
      },
    ]);

    managedPolicy("RegionalPhasesPolicy", "porter provision, promote and prune functions", [
      provisionFunctionRole.ref,
      promoteFunctionRole.ref,
      pruneFunctionRole.ref,
    ], [
      {
        Sid: "AssumeDeploymentRole",
        Effect: "Allow",
        Action: ["sts:AssumeRole", "sts:TagSession"],
        Resource: (c.useOwnDeploymentRole ? Fn.sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${DeploymentRoleName}", { DeploymentRoleName: p.deploymentRoleName }) : p.deploymentRoleArns),
        Condition: { StringEquals: { "aws:RequestTag/porter:service": p.serviceName } },
      },
    ]);

    // ---- The deploy lease

    const leaseTable = res("LeaseTable", "AWS::DynamoDB::Table", {
      TableName: Fn.sub("${AWS::StackName}-leases"),
      BillingMode: "PAY_PER_REQUEST",
      AttributeDefinitions: [{ AttributeName: "lease", AttributeType: "S" }],
      KeySchema: [{ AttributeName: "lease", KeyType: "HASH" }],
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    });

    const leaseLogGroup = functionLogGroup("lease");

    const leaseFunctionRole = functionRole("lease", leaseLogGroup, "lease", [
      {
        Sid: "Leases",
        Effect: "Allow",
        Action: ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"],
        Resource: att(leaseTable, "Arn"),
      },
      {
        Sid: "SeeHolders",
        Effect: "Allow",
        Action: "states:DescribeExecution",
        Resource: DEPLOY_EXECUTIONS,
      },
    ]);

    // A deploy's lease, given back (only if its execution holds it): by
    // promote for an aborted deploy, by the pipeline function for a stopped
    // pipeline execution's.
    const giveBackLease = (sid: string) => ({
      Sid: sid,
      Effect: "Allow",
      Action: ["dynamodb:GetItem", "dynamodb:DeleteItem"],
      Resource: att(leaseTable, "Arn"),
    });

    // ---- The functions the state machine chains

    // The rules the functions that work CodePipeline jobs (the phases and
    // the pipeline function) check each job against before working it
    // (crates/lambda/src/origin.rs). The main pipeline's name, not
    // pipeline.ref: the pipeline refers to the functions.
    const jobRules = {
      PIPELINE_NAME: Fn.sub("${AWS::StackName}-pipeline"),
      APPROVED_ENVIRONMENTS: p.productionEnvironment,
      BRANCH_ENVIRONMENTS: p.branchEnvironments,
    };
    // What every phase reads: the releases, the service, its environments' pins.
    const phaseVariables = {
      ARTIFACT_BUCKET: artifactBucket.ref,
      PORTER_SERVICE: p.serviceName,
      PORTER_ENVIRONMENTS_PATH: p.environmentsPath,
    };

    const packFunction = lambdaFunction("pack", packFunctionRole, packLogGroup, {
      Description: "porter pack phase",
      MemorySize: 1024,
      Environment: {
        Variables: {
          ...phaseVariables,
          PORTER_IMAGE_PARAMETER: p.imageParameter,
          PORTER_ALLOWED_REFERENCES: p.allowedExternalReferences,
          ...jobRules,
        },
      },
    });

    const provisionFunction = lambdaFunction("provision", provisionFunctionRole, provisionLogGroup, {
      Description: "porter provision phase",
      Environment: {
        Variables: {
          ...phaseVariables,
          // The fence: provision acts only while its execution holds the
          // deploy lease.
          LEASE_TABLE: leaseTable.ref,
          ...jobRules,
        },
      },
    });

    const promoteFunction = lambdaFunction("promote", promoteFunctionRole, promoteLogGroup, {
      Description: "porter promote phase",
      Environment: {
        Variables: {
          ...phaseVariables,
          // An abort (crates/lambda/src/abort.rs) undoes executions of this
          // state machine only, and gives their lease back. Its ARN from its
          // name, not deployStateMachine.ref: the state machine refers to
          // this function.
          STATE_MACHINE_ARN: Fn.sub("arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:${AWS::StackName}-deploy"),
          LEASE_TABLE: leaseTable.ref,
          ...jobRules,
        },
      },
    });

    const pruneFunction = lambdaFunction("prune", pruneFunctionRole, pruneLogGroup, {
      Description: "porter prune phase",
      Environment: {
        Variables: {
          ...phaseVariables,
          // The fence, as provision's.
          LEASE_TABLE: leaseTable.ref,
          ...jobRules,
        },
      },
    });

    const leaseFunction = lambdaFunction("lease", leaseFunctionRole, leaseLogGroup, {
      Description: "porter deploy lease (one deploy per service and environment)",
      Timeout: 60,
      Environment: { Variables: { LEASE_TABLE: leaseTable.ref } },
    });

    // ---- Notifications (the topic before the notify function that publishes to it)

    const notificationKey = kmsKey("NotificationKey", "the notification topic", [
      {
        Sid: "NotificationServicesPublish",
        Effect: "Allow",
        Principal: { Service: ["events.amazonaws.com", "codestar-notifications.amazonaws.com"] },
        Action: ["kms:GenerateDataKey*", "kms:Decrypt"],
        Resource: "*",
        Condition: { StringEquals: { "kms:ViaService": Fn.sub("sns.${AWS::Region}.amazonaws.com") } },
      },
    ]);

    const notificationTopic = res("NotificationTopic", "AWS::SNS::Topic", { DisplayName: "porter deploys", KmsMasterKeyId: notificationKey.ref });

    // ---- Deploy notices: the topic and the service's Slack webhooks

    const notifyLogGroup = functionLogGroup("notify");

    const notifyFunctionRole = functionRole("notify", notifyLogGroup, "notify", [
      {
        Sid: "Publish",
        Effect: "Allow",
        Action: "sns:Publish",
        Resource: notificationTopic.ref,
      },
      {
        Sid: "TopicKey",
        Effect: "Allow",
        Action: ["kms:GenerateDataKey", "kms:Decrypt"],
        Resource: att(notificationKey, "Arn"),
      },
      {
        Sid: "ReadReleaseConfigs",
        Effect: "Allow",
        Action: "s3:GetObject",
        Resource: artifactObjects("porter-deployment/*"),
      },
      decryptArtifacts,
      {
        Sid: "WebhookReferences",
        Effect: "Allow",
        Action: "ssm:GetParameter",
        Resource: Fn.sub("arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/aws/reference/secretsmanager/porter/${ServiceName}/notifications/*", { ServiceName: p.serviceName }),
      },
      {
        Sid: "WebhookUrls",
        Effect: "Allow",
        Action: "secretsmanager:GetSecretValue",
        Resource: Fn.sub("arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:porter/${ServiceName}/notifications/*", { ServiceName: p.serviceName }),
      },
    ]);

    const notifyFunction = lambdaFunction("notify", notifyFunctionRole, notifyLogGroup, {
      Description: "porter deploy notices (SNS topic and Slack webhooks)",
      Timeout: 30,
      Environment: {
        Variables: {
          ARTIFACT_BUCKET: artifactBucket.ref,
          NOTIFICATION_TOPIC_ARN: notificationTopic.ref,
          PORTER_SERVICE: p.serviceName,
          PORTER_WEBHOOK_HOSTS: p.webhookHosts,
        },
      },
    });

    // ---- Where repository code runs: CodeBuild, for the hooks and the image build

    // A CodeBuild role may write its logs and read the source artifact,
    // never the releases or continuation state.
    const repositoryCodeStatements = (logs: CfnResource) => [
      logsTo(logs),
      {
        Sid: "SourceArtifact",
        Effect: "Allow",
        Action: ["s3:GetObject", "s3:GetObjectVersion"],
        Resource: artifactObjects("*"),
      },
      notReleasesOrContinuations(artifactBucket),
      decryptArtifacts,
    ];
    // Both projects: sealed with the artifact key, half an hour at most,
    // Docker (privileged) on Amazon Linux, logs to their own group.
    type ProjectOwnProperties = { Name: string; Description: string; ServiceRole: string; Source: object; Artifacts: object };
    const codeBuildProject = (id: string, own: ProjectOwnProperties, logs: CfnResource, environmentVariables?: object[]) =>
      res(id, "AWS::CodeBuild::Project", {
        ...own,
        EncryptionKey: att(artifactKey, "Arn"),
        TimeoutInMinutes: 30,
        Environment: {
          Type: "LINUX_CONTAINER",
          ComputeType: "BUILD_GENERAL1_SMALL",
          Image: "aws/codebuild/amazonlinux-x86_64-standard:5.0",
          PrivilegedMode: true,
          ...(environmentVariables ? { EnvironmentVariables: environmentVariables } : {}),
        },
        LogsConfig: { CloudWatchLogs: { Status: "ENABLED", GroupName: logs.ref } },
      });

    // ---- Hooks: the function starts CodeBuild builds; the hooks run there as HookRole

    const hooksProjectLogGroup = logGroup("HooksProjectLogGroup", `/aws/codebuild/${Aws.STACK_NAME}-hooks`);

    const hookRole = roleWithPolicy("HookRole", {
      RoleName: Fn.sub("${AWS::StackName}-hook"),
      AssumeRolePolicyDocument: serviceTrust("codebuild.amazonaws.com"),
    }, "hook", repositoryCodeStatements(hooksProjectLogGroup));

    const hooksProject = codeBuildProject("HooksProject", {
      Name: Fn.sub("${AWS::StackName}-hooks"),
      Description: "Runs a service's hooks (the hooks function overrides source and buildspec per hook)",
      ServiceRole: att(hookRole, "Arn"),
      Source: {
        Type: "NO_SOURCE",
        BuildSpec: "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"porter: the hooks function starts this project with a hook's own buildspec\" && exit 1\n",
      },
      Artifacts: { Type: "NO_ARTIFACTS" },
    }, hooksProjectLogGroup);

    const hooksLogGroup = functionLogGroup("hooks");

    const hooksFunctionRole = functionRole("hooks", hooksLogGroup, "hooks", [
      {
        // StopBuild: a step whose execution lost its lease stops the
        // builds it started.
        Sid: "RunHooks",
        Effect: "Allow",
        Action: ["codebuild:StartBuild", "codebuild:BatchGetBuilds", "codebuild:StopBuild"],
        Resource: att(hooksProject, "Arn"),
      },
      {
        Sid: "ReadReleasesAndSources",
        Effect: "Allow",
        Action: "s3:GetObject",
        Resource: artifactObjects("*"),
      },
      {
        Sid: "NotContinuations",
        Effect: "Deny",
        Action: "s3:GetObject",
        Resource: artifactObjects("porter-continuations/*"),
      },
      decryptArtifacts,
    ]);

    const hooksFunction = lambdaFunction("hooks", hooksFunctionRole, hooksLogGroup, {
      Description: "porter hooks (started as CodeBuild builds and awaited)",
      Timeout: 60,
      Environment: {
        Variables: {
          ARTIFACT_BUCKET: artifactBucket.ref,
          HOOKS_PROJECT: hooksProject.ref,
          LEASE_TABLE: leaseTable.ref,
        },
      },
    });

    // promote also aborts deploys (crates/lambda/src/abort.rs): an execution
    // that is aborted or times out runs no Catch, so promote's undo puts back
    // what it cut over and gives its lease back, as the pipeline function
    // does for a stopped pipeline execution's deploy.
    managedPolicy("PromoteFunctionPolicy", "porter promote function (aborted deploys)", [promoteFunctionRole.ref], [
      {
        // Whether the execution still runs (porter abort stops it), and
        // what it deployed (pack's output, in its history): this
        // stack's deploy executions only.
        Sid: "AbortDeploys",
        Effect: "Allow",
        Action: ["states:DescribeExecution", "states:GetExecutionHistory", "states:StopExecution"],
        Resource: DEPLOY_EXECUTIONS,
      },
      giveBackLease("GiveBackAbortedLease"),
      {
        // The hook builds the aborted execution left running (in its
        // history): a stopped execution never resumes to see them end.
        Sid: "StopAbortedHooks",
        Effect: "Allow",
        Action: "codebuild:StopBuild",
        Resource: att(hooksProject, "Arn"),
      },
    ]);

    managedPolicy("ProvisionFunctionPolicy", "porter provision, prune and hooks functions (the lease fence)", [provisionFunctionRole.ref, pruneFunctionRole.ref, hooksFunctionRole.ref], [
      {
        // The fence: provision, prune and the hooks after pack act only
        // while their execution holds the deploy lease
        // (porter_core::lease::check_fence); read only.
        Sid: "ReadLeaseFence",
        Effect: "Allow",
        Action: "dynamodb:GetItem",
        Resource: att(leaseTable, "Arn"),
      },
    ]);

    // ---- The deploy state machine

    const deployStateMachineLogGroup = logGroup("DeployStateMachineLogGroup", `/aws/vendedlogs/states/${Aws.STACK_NAME}-deploy`);

    // What the state machine invokes, by the name its definition gives each ARN.
    const stateFunctions = {
      PackFunctionArn: att(packFunction, "Arn"),
      ProvisionFunctionArn: att(provisionFunction, "Arn"),
      PromoteFunctionArn: att(promoteFunction, "Arn"),
      PruneFunctionArn: att(pruneFunction, "Arn"),
      LeaseFunctionArn: att(leaseFunction, "Arn"),
      NotifyFunctionArn: att(notifyFunction, "Arn"),
      HooksFunctionArn: att(hooksFunction, "Arn"),
    };

    const deployStateMachineRole = roleWithPolicy("DeployStateMachineRole", {
      RoleName: Fn.sub("${AWS::StackName}-deploy-states"),
      AssumeRolePolicyDocument: serviceTrust("states.amazonaws.com"),
    }, "invoke-phases", [
      {
        Sid: "InvokePhases",
        Effect: "Allow",
        Action: "lambda:InvokeFunction",
        Resource: Object.values(stateFunctions),
      },
      {
        Sid: "LogDelivery",
        Effect: "Allow",
        Action: [
          "logs:CreateLogDelivery",
          "logs:GetLogDelivery",
          "logs:UpdateLogDelivery",
          "logs:DeleteLogDelivery",
          "logs:ListLogDeliveries",
          "logs:PutResourcePolicy",
          "logs:DescribeResourcePolicies",
          "logs:DescribeLogGroups",
        ],
        Resource: "*",
      },
      {
        Sid: "Tracing",
        Effect: "Allow",
        Action: [
          "xray:PutTraceSegments",
          "xray:PutTelemetryRecords",
          "xray:GetSamplingRules",
          "xray:GetSamplingTargets",
        ],
        Resource: "*",
      },
    ]);

    const deployStateMachine = res("DeployStateMachine", "AWS::StepFunctions::StateMachine", {
      DefinitionString: definition,
      LoggingConfiguration: {
        Level: "ERROR",
        IncludeExecutionData: false,
        Destinations: [{ CloudWatchLogsLogGroup: { LogGroupArn: att(deployStateMachineLogGroup, "Arn") } }],
      },
      RoleArn: att(deployStateMachineRole, "Arn"),
      StateMachineName: Fn.sub("${AWS::StackName}-deploy"),
      StateMachineType: "STANDARD",
      DefinitionSubstitutions: stateFunctions,
      TracingConfiguration: { Enabled: true },
    });

    // An execution that is aborted (porter abort, the console,
    // StopExecution, a pipeline's "Stop and abandon") or times out runs no
    // Catch: promote puts back what it cut over and gives its lease back
    // (crates/lambda/src/abort.rs).
    ruleInvoking("DeployAbortedRule", "DeployAbortedPermission", promoteFunction, "promote-function", {
      Description: "porter puts back what aborted and timed-out deploys cut over",
      EventPattern: {
        source: ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        detail: { status: ["ABORTED", "TIMED_OUT"], stateMachineArn: [deployStateMachine.ref] },
      },
    });

    // ---- The image build

    const imageRepository = res("ImageRepository", "AWS::ECR::Repository", {
      ImageTagMutability: "IMMUTABLE",
      ImageScanningConfiguration: { ScanOnPush: true },
      EncryptionConfiguration: { EncryptionType: "KMS" },
      LifecyclePolicy: {
        LifecyclePolicyText: "{\"rules\": [{\"rulePriority\": 1, \"description\": \"keep the last 100 images\", \"selection\": {\"tagStatus\": \"any\", \"countType\": \"imageCountMoreThan\", \"countNumber\": 100}, \"action\": {\"type\": \"expire\"}}]}",
      },
    });
    imageRepository.applyRemovalPolicy(RemovalPolicy.RETAIN);

    const buildLogGroup = logGroup("BuildLogGroup", `/aws/codebuild/${Aws.STACK_NAME}-image`);

    const buildRole = roleWithPolicy("BuildRole", {
      RoleName: Fn.sub("${AWS::StackName}-build"),
      AssumeRolePolicyDocument: policyDocument([
        {
          Effect: "Allow",
          Principal: { Service: "codebuild.amazonaws.com" },
          Action: "sts:AssumeRole",
        },
      ]),
    }, "build-image", [
      ...repositoryCodeStatements(buildLogGroup),
      {
        Sid: "RegistryLogin",
        Effect: "Allow",
        Action: "ecr:GetAuthorizationToken",
        Resource: "*",
      },
      {
        Sid: "PushImage",
        Effect: "Allow",
        Action: [
          "ecr:BatchCheckLayerAvailability",
          "ecr:BatchGetImage",
          "ecr:CompleteLayerUpload",
          "ecr:DescribeImages",
          "ecr:GetDownloadUrlForLayer",
          "ecr:InitiateLayerUpload",
          "ecr:PutImage",
          "ecr:UploadLayerPart",
        ],
        Resource: att(imageRepository, "Arn"),
      },
    ]);

    const buildProject = codeBuildProject("BuildProject", {
      Name: Fn.sub("${AWS::StackName}-image"),
      Description: "Builds and pushes the service image (when the repository has a Dockerfile)",
      ServiceRole: att(buildRole, "Arn"),
      Source: {
        Type: "CODEPIPELINE",
        BuildSpec: "version: 0.2\nenv:\n  shell: bash\n  exported-variables: [IMAGE_URI]\nphases:\n  build:\n    commands:\n      - |\n        set -euo pipefail\n        # Never empty: CodePipeline may not resolve an empty\n        # exported variable. `none` is read as no image.\n        IMAGE_URI=\"none\"\n        if [ ! -f Dockerfile ]; then\n          echo \"no Dockerfile: the release carries no image\"\n        else\n          aws ecr get-login-password | docker login --username AWS --password-stdin \"${REPOSITORY_URI%%/*}\"\n          # The tag names the commit and the base image's digest\n          # of today: the weekly build of an unchanged commit makes\n          # a new image (and release) only when the base was patched.\n          base=$(awk 'toupper($1) == \"FROM\" { b = $2 } END { print b }' Dockerfile)\n          digest=none\n          if [ -n \"$base\" ] && [ \"$base\" != scratch ] && docker pull --quiet \"$base\" >/dev/null; then\n            digest=$(docker inspect --format '{{index .RepoDigests 0}}' \"$base\" | sed 's/.*@sha256://' | cut -c1-12)\n          fi\n          tag=\"${CODEBUILD_RESOLVED_SOURCE_VERSION:0:12}-${digest}\"\n          IMAGE_URI=\"$REPOSITORY_URI:$tag\"\n          # Tags are immutable: an image already built is not pushed again.\n          if aws ecr describe-images --repository-name \"${REPOSITORY_URI#*/}\" --image-ids imageTag=\"$tag\" >/dev/null 2>&1; then\n            echo \"$IMAGE_URI exists: neither the commit nor the base image changed\"\n          else\n            docker build --tag \"$IMAGE_URI\" .\n            docker push \"$IMAGE_URI\"\n          fi\n        fi\n        echo \"IMAGE_URI=$IMAGE_URI\"\n",
      },
      Artifacts: { Type: "CODEPIPELINE" },
    }, buildLogGroup, [{ Name: "REPOSITORY_URI", Value: att(imageRepository, "RepositoryUri") }]);

    // ---- The pipeline function (the deploy action) and the custom action type it works for

    const pipelineLogGroup = functionLogGroup("pipeline");

    const pipelineFunctionRole = functionRole("pipeline", pipelineLogGroup, "run-deploys", [
      {
        Sid: "StartDeploy",
        Effect: "Allow",
        Action: "states:StartExecution",
        Resource: deployStateMachine.ref,
      },
      {
        Sid: "FollowDeploy",
        Effect: "Allow",
        Action: ["states:DescribeExecution", "states:GetExecutionHistory", "states:StopExecution"],
        Resource: DEPLOY_EXECUTIONS,
      },
      {
        Sid: "PipelineActions",
        Effect: "Allow",
        Action: ["codepipeline:ListActionExecutions", "codepipeline:GetPipelineExecution"],
        Resource: STACK_PIPELINES,
      },
      giveBackLease("GiveBackLease"),
      ...(c.useCustomAction ? [
        {
          Sid: "PollPorterJobs",
          Effect: "Allow",
          Action: "codepipeline:PollForJobs",
          Resource: Fn.sub("arn:${AWS::Partition}:codepipeline:${AWS::Region}:${AWS::AccountId}:actiontype:Custom/Deploy/Porter/1"),
        },
        {
          Sid: "AcknowledgePorterJobs",
          Effect: "Allow",
          Action: "codepipeline:AcknowledgeJob",
          Resource: "*",
        },
      ] : []),
      VERIFY_JOBS,
      READ_PIPELINES,
      JOB_RESULTS,
      {
        Sid: "ArtifactObjects",
        Effect: "Allow",
        Action: ["s3:GetObject", "s3:PutObject"],
        Resource: artifactObjects("*"),
      },
      listArtifactBucket,
      useArtifactKey,
    ]);

    const pipelineFunction = lambdaFunction("pipeline", pipelineFunctionRole, pipelineLogGroup, {
      Description: "porter deploy action of the pipeline (starts and follows the deploy state machine)",
      Timeout: 60,
      Environment: {
        Variables: {
          STATE_MACHINE_ARN: deployStateMachine.ref,
          ARTIFACT_BUCKET: artifactBucket.ref,
          LEASE_TABLE: leaseTable.ref,
          ...jobRules,
        },
      },
    });

    ruleInvoking("PipelineEndedRule", "PipelineEndedPermission", pipelineFunction, "pipeline-function", {
      Description: "porter stops the deploys of pipeline executions that ended early",
      EventPattern: {
        source: ["aws.codepipeline"],
        "detail-type": ["CodePipeline Pipeline Execution State Change"],
        resources: STACK_PIPELINE_EVENTS,
        detail: { state: ["STOPPED", "SUPERSEDED", "FAILED"] },
      },
    });

    let porterActionType: CfnResource | undefined;
    if (c.useCustomAction) {
      porterActionType = res("PorterActionType", "AWS::CodePipeline::CustomActionType", {
        Category: "Deploy",
        Provider: "Porter",
        Version: "1",
        ConfigurationProperties: [
          {
            Name: "Environment",
            Type: "String",
            Required: true,
            Key: true,
            Secret: false,
            Queryable: false,
            Description: "The environment of the service's .porter/config to deploy",
          },
          optionalActionSetting("Keep", "Number", "Unpromoted stacks prune keeps (default 0)"),
          optionalActionSetting("WaitForLease", "Boolean", "Wait for another deploy of the environment instead of failing (true or false)"),
          optionalActionSetting("Rollout", "String", "This deploy's rollout as JSON: waves, bake_seconds, alarms, canary_instances"),
          optionalActionSetting("Image", "String", "The container image the build made, if any"),
          optionalActionSetting("Variables", "String", "What ${VAR} in the config expands to, as a JSON object of strings"),
          optionalActionSetting("Repository", "String", "The source repository, recorded in the release"),
          optionalActionSetting("Branch", "String", "The source branch, recorded in the release"),
          optionalActionSetting("SseKmsKeyId", "String", "The KMS key pack encrypts payloads with"),
        ],
        InputArtifactDetails: { MinimumCount: 1, MaximumCount: 1 },
        OutputArtifactDetails: { MinimumCount: 0, MaximumCount: 0 },
        Settings: {
          EntityUrlTemplate: Fn.sub("https://${AWS::Region}.console.aws.amazon.com/states/home?region=${AWS::Region}#/statemachines/view/${DeployStateMachine}", { DeployStateMachine: deployStateMachine.ref }),
          ExecutionUrlTemplate: Fn.sub("https://${AWS::Region}.console.aws.amazon.com/states/home?region=${AWS::Region}#/v2/executions/details/{ExternalExecutionId}"),
        },
      });

      ruleInvoking("PorterActionStartedRule", "PorterActionStartedPermission", pipelineFunction, "job-worker", {
        Description: "porter's job worker polls when a Porter deploy action starts",
        EventPattern: {
          source: ["aws.codepipeline"],
          "detail-type": ["CodePipeline Action Execution State Change"],
          detail: {
            state: ["STARTED"],
            type: { owner: ["Custom"], category: ["Deploy"], provider: ["Porter"], version: ["1"] },
          },
        },
      });

      ruleInvoking("PorterJobSchedule", "PorterJobSchedulePermission", pipelineFunction, "job-worker", {
        Description: "porter's job worker polls for Porter deploy jobs once a minute",
        ScheduleExpression: "rate(1 minute)",
      });
    }

    // ---- The pipeline, its approval and who may give it; main's changes start it

    const repositoryArn = Fn.sub("arn:${AWS::Partition}:codecommit:${AWS::Region}:${AWS::AccountId}:${RepositoryName}", { RepositoryName: p.repositoryName });

    const pipelineRole = roleWithPolicy("PipelineRole", {
      RoleName: Fn.sub("${AWS::StackName}-codepipeline"),
      AssumeRolePolicyDocument: serviceTrust("codepipeline.amazonaws.com"),
    }, "run-pipeline", [
      {
        Sid: "Source",
        Effect: "Allow",
        Action: [
          "codecommit:GetBranch",
          "codecommit:GetCommit",
          "codecommit:GetRepository",
          "codecommit:UploadArchive",
          "codecommit:GetUploadArchiveStatus",
          "codecommit:CancelUploadArchive",
        ],
        Resource: repositoryArn,
      },
      {
        Sid: "Build",
        Effect: "Allow",
        Action: ["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
        Resource: att(buildProject, "Arn"),
      },
      {
        Sid: "Deploy",
        Effect: "Allow",
        Action: "lambda:InvokeFunction",
        Resource: att(pipelineFunction, "Arn"),
      },
      {
        Sid: "ArtifactObjects",
        Effect: "Allow",
        Action: ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
        Resource: artifactObjects("*"),
      },
      {
        Sid: "ArtifactBucket",
        Effect: "Allow",
        Action: ["s3:GetBucketVersioning", "s3:GetBucketLocation", "s3:ListBucket"],
        Resource: att(artifactBucket, "Arn"),
      },
      useArtifactKey,
      {
        Sid: "Approval",
        Effect: "Allow",
        Action: "sns:Publish",
        Resource: notificationTopic.ref,
      },
      {
        Sid: "ApprovalKey",
        Effect: "Allow",
        Action: ["kms:Decrypt", "kms:GenerateDataKey"],
        Resource: att(notificationKey, "Arn"),
      },
    ]);

    // A deploy of the pipeline function to one environment: the Porter
    // custom action or a Lambda invoke action, as deployAction says.
    const deployStage = (stage: string, environment: string) => ({
      Name: stage,
      Actions: [
        c.useCustomAction ? {
          Name: "Deploy",
          ActionTypeId: { Category: "Deploy", Owner: "Custom", Provider: "Porter", Version: "1" },
          Configuration: {
            Environment: environment,
            Repository: p.repositoryName,
            Branch: "#{SourceVariables.BranchName}",
            Image: "#{BuildVariables.IMAGE_URI}",
            SseKmsKeyId: att(artifactKey, "Arn"),
          },
          InputArtifacts: [{ Name: "Source" }],
        } : {
          Name: "Deploy",
          ActionTypeId: { Category: "Invoke", Owner: "AWS", Provider: "Lambda", Version: "1" },
          Configuration: {
            FunctionName: pipelineFunction.ref,
            UserParameters: Fn.sub("{\"environment\": \"${Environment}\", \"repository\": \"${RepositoryName}\", \"branch\": \"#{SourceVariables.BranchName}\", \"image\": \"#{BuildVariables.IMAGE_URI}\", \"sse_kms_key_id\": \"${ArtifactKeyArn}\"}", { Environment: environment, RepositoryName: p.repositoryName, ArtifactKeyArn: att(artifactKey, "Arn") }),
          },
          InputArtifacts: [{ Name: "Source" }],
        },
      ],
    });

    const pipeline = res("Pipeline", "AWS::CodePipeline::Pipeline", {
      Name: Fn.sub("${AWS::StackName}-pipeline"),
      Tags: [
        {
          Key: "porter:deploy-action",
          Value: (c.useCustomAction ? porterActionType!.ref : "lambda-invoke"),
        },
      ],
      PipelineType: "V2",
      ExecutionMode: "SUPERSEDED",
      RoleArn: att(pipelineRole, "Arn"),
      ArtifactStore: {
        Type: "S3",
        Location: artifactBucket.ref,
        EncryptionKey: { Id: att(artifactKey, "Arn"), Type: "KMS" },
      },
      Stages: [
        {
          Name: "Source",
          Actions: [
            {
              Name: "Source",
              Namespace: "SourceVariables",
              ActionTypeId: { Category: "Source", Owner: "AWS", Provider: "CodeCommit", Version: "1" },
              Configuration: {
                RepositoryName: p.repositoryName,
                BranchName: p.branchName,
                PollForSourceChanges: false,
              },
              OutputArtifacts: [{ Name: "Source" }],
            },
          ],
        },
        {
          Name: "Build",
          Actions: [
            {
              Name: "Image",
              Namespace: "BuildVariables",
              ActionTypeId: { Category: "Build", Owner: "AWS", Provider: "CodeBuild", Version: "1" },
              Configuration: { ProjectName: buildProject.ref },
              InputArtifacts: [{ Name: "Source" }],
            },
          ],
        },
        deployStage("DeployStaging", p.stagingEnvironment),
        {
          Name: "Approve",
          Actions: [
            {
              Name: "Approve",
              ActionTypeId: { Category: "Approval", Owner: "AWS", Provider: "Manual", Version: "1" },
              Configuration: {
                NotificationArn: notificationTopic.ref,
                CustomData: Fn.sub("Staging is deployed; approve to deploy to ${ProductionEnvironment}.", { ProductionEnvironment: p.productionEnvironment }),
              },
            },
          ],
        },
        deployStage("DeployProduction", p.productionEnvironment),
      ],
    });

    // The main pipeline, and with a suffix its branch pipelines and stages.
    const pipelineArn = (suffix = "") =>
      Fn.sub(`arn:\${AWS::Partition}:codepipeline:\${AWS::Region}:\${AWS::AccountId}:\${Pipeline}${suffix}`, { Pipeline: pipeline.ref });

    if (c.hasApprovers) {
      managedPolicy("ProductionApprovers", Fn.sub("${AWS::StackName}: approve the production deploy"), p.approverRoleNames, [
        {
          Sid: "ApproveProduction",
          Effect: "Allow",
          Action: "codepipeline:PutApprovalResult",
          Resource: pipelineArn("/Approve/Approve"),
        },
        {
          Sid: "SeeWhatIsApproved",
          Effect: "Allow",
          Action: [
            "codepipeline:GetPipeline",
            "codepipeline:GetPipelineState",
            "codepipeline:GetPipelineExecution",
            "codepipeline:ListPipelineExecutions",
          ],
          Resource: pipelineArn(),
        },
      ]);
    }

    const branchChangedRole = roleWithPolicy("BranchChangedRole", {
      AssumeRolePolicyDocument: serviceTrust("events.amazonaws.com"),
    }, "start-pipeline", [
      {
        Effect: "Allow",
        Action: "codepipeline:StartPipelineExecution",
        Resource: pipelineArn(),
      },
    ]);

    // What EventBridge sees of the repository's branches: changes to the
    // main branch start its pipeline; the trigger hears of the others.
    const branchChanges = (events: string[], referenceName: unknown) => ({
      source: ["aws.codecommit"],
      "detail-type": ["CodeCommit Repository State Change"],
      resources: [repositoryArn],
      detail: { event: events, referenceType: ["branch"], referenceName: [referenceName] },
    });

    res("BranchChangedRule", "AWS::Events::Rule", {
      Description: Fn.sub("${BranchName} of ${RepositoryName} changed: start ${AWS::StackName}-pipeline", { BranchName: p.branchName, RepositoryName: p.repositoryName }),
      EventPattern: branchChanges(["referenceCreated", "referenceUpdated"], p.branchName),
      Targets: [{ Id: "pipeline", Arn: pipelineArn(), RoleArn: att(branchChangedRole, "Arn") }],
    });

    // ---- The trigger: branch pipelines and the weekly build

    const triggerLogGroup = functionLogGroup("trigger");

    const triggerFunctionRole = functionRole("trigger", triggerLogGroup, "branch-pipelines", [
      {
        Sid: "BranchPipelines",
        Effect: "Allow",
        Action: [
          "codepipeline:GetPipeline",
          "codepipeline:CreatePipeline",
          "codepipeline:UpdatePipeline",
          "codepipeline:DeletePipeline",
          "codepipeline:StartPipelineExecution",
        ],
        Resource: [pipelineArn(), pipelineArn("-*")],
      },
      {
        Sid: "PassPipelineRole",
        Effect: "Allow",
        Action: "iam:PassRole",
        Resource: att(pipelineRole, "Arn"),
        Condition: { StringEquals: { "iam:PassedToService": "codepipeline.amazonaws.com" } },
      },
    ]);

    const triggerFunction = lambdaFunction("trigger", triggerFunctionRole, triggerLogGroup, {
      Description: "porter branch pipelines and the weekly build",
      Timeout: 60,
      Environment: {
        Variables: {
          PIPELINE_NAME: pipeline.ref,
          BRANCH_PATTERN: p.branchPattern,
          BRANCH_ENVIRONMENTS: p.branchEnvironments,
          SCHEDULED_PIPELINES: (c.scheduleMainPipeline ? pipeline.ref : p.scheduledPipelines),
          REPOSITORY_NAME: p.repositoryName,
          BRANCH_NAME: p.branchName,
        },
      },
    });

    res("TriggerFromRepository", "AWS::Lambda::Permission", {
      Action: "lambda:InvokeFunction",
      FunctionName: triggerFunction.ref,
      Principal: "codecommit.amazonaws.com",
      SourceAccount: Aws.ACCOUNT_ID,
      SourceArn: repositoryArn,
    });

    ruleInvoking("TriggerFunctionBranchChanged", "TriggerFunctionBranchChangedPermission", triggerFunction, "TriggerFunctionBranchChangedLambdaTarget", {
      EventPattern: branchChanges(["referenceCreated", "referenceUpdated", "referenceDeleted"], { "anything-but": p.branchName }),
    });

    ruleInvoking("TriggerFunctionWeekly", "TriggerFunctionWeeklyPermission", triggerFunction, "TriggerFunctionWeeklyLambdaTarget", {
      Description: "porter's weekly build of the scheduled pipelines",
      ScheduleExpression: p.schedule,
    });

    // ---- Pipeline state changes to the topic

    const pipelineNotificationRule = res("PipelineNotificationRule", "AWS::Events::Rule", {
      Description: "porter pipeline and action state changes to the notification topic",
      EventPattern: {
        source: ["aws.codepipeline"],
        "detail-type": [
          "CodePipeline Pipeline Execution State Change",
          "CodePipeline Action Execution State Change",
        ],
        resources: STACK_PIPELINE_EVENTS,
        detail: { state: ["STARTED", "SUCCEEDED", "FAILED", "STOPPED", "SUPERSEDED", "CANCELED"] },
      },
      Targets: [{ Id: "topic", Arn: notificationTopic.ref }],
    });

    // The topic takes what EventBridge and CodeStar Notifications publish for this installation.
    const publishedBy = (sid: string, service: string, condition: object) => ({
      Sid: sid,
      Effect: "Allow",
      Principal: { Service: service },
      Action: "sns:Publish",
      Resource: notificationTopic.ref,
      Condition: condition,
    });
    res("NotificationTopicPolicy", "AWS::SNS::TopicPolicy", {
      Topics: [notificationTopic.ref],
      PolicyDocument: policyDocument([
        publishedBy("PipelineStateChanges", "events.amazonaws.com", { ArnEquals: { "aws:SourceArn": att(pipelineNotificationRule, "Arn") } }),
        publishedBy("NotificationRules", "codestar-notifications.amazonaws.com", { StringEquals: { "aws:SourceAccount": Aws.ACCOUNT_ID } }),
      ]),
    });

    if (c.hasNotificationEmail) {
      res("NotificationSubscription", "AWS::SNS::Subscription", { TopicArn: notificationTopic.ref, Protocol: "email", Endpoint: p.notificationEmail });
    }

    const outputs: Record<string, [string, string]> = {
      LeaseTableName: [leaseTable.ref, "The deploy lease table (who deploys what, right now)"],
      StateMachineArn: [deployStateMachine.ref, "The deploy state machine"],
      PipelineName: [pipeline.ref, "The main branch's pipeline"],
      ArtifactBucketName: [artifactBucket.ref, "Payloads, pipeline artifacts and continuation state"],
      ArtifactKeyArn: [att(artifactKey, "Arn"), "The KMS key uploads to the artifact bucket name (porter deploy's source zip)"],
      NotificationTopicArn: [notificationTopic.ref, "Approvals and pipeline state changes"],
      DeploymentRoleArn: [att(deploymentRole, "Arn"), "The role to name as role_arn in .porter/config (this account)"],
      PhaseFunctionRoleArns: [
        Fn.join(",", [att(provisionFunctionRole, "Arn"), att(promoteFunctionRole, "Arn"), att(pruneFunctionRole, "Arn")]),
        "The roles a deployment role in another account must trust (provision, promote, prune; pack never assumes one)",
      ],
    };
    for (const [name, [value, description]] of Object.entries(outputs)) {
      new CfnOutput(this, name, { value, description });
    }
    this.stateMachineArn = deployStateMachine.ref;
    this.pipelineName = pipeline.ref;
    this.artifactBucketName = artifactBucket.ref;
    this.artifactKeyArn = att(artifactKey, "Arn");
    this.notificationTopicArn = notificationTopic.ref;
    this.deploymentRoleArn = att(deploymentRole, "Arn");
    this.leaseTableName = leaseTable.ref;
    this.functionArns = {
      pack: stateFunctions.PackFunctionArn,
      provision: stateFunctions.ProvisionFunctionArn,
      promote: stateFunctions.PromoteFunctionArn,
      prune: stateFunctions.PruneFunctionArn,
      pipeline: att(pipelineFunction, "Arn"),
      trigger: att(triggerFunction, "Arn"),
      lease: stateFunctions.LeaseFunctionArn,
      notify: stateFunctions.NotifyFunctionArn,
      hooks: stateFunctions.HooksFunctionArn,
    };
  }
}
