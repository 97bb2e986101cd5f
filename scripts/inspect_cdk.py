"""Creates the templates the CDK construct synthesized for the parity cases
(infra/cdk/test/parity-cases.json) in a moto server, the way
scripts/inspect_infra.py creates the SAM one (its moto copy and checks),
and checks what came out: every function, the state machine running the
shipped definition with each phase's own function, the roles' rights that
matter most (the release boundary's cap on secrets, what the deployment
role holds against a release stack reaching for others' roles or a load
balancer's traffic, what notify and the hooks may reach, what promote's
abort may reach and the rule that starts it), the bucket.
check_cdk_parity.py holds the template to the SAM one; this shows
CloudFormation (moto's) takes it as CDK wrote it.

One stand-in, as sam_to_cfn.py makes for SAM: each function's code is the
S3 object given on the command line instead of CDK's asset (which `cdk
deploy` uploads to the bootstrap bucket first).

Each case's stack goes into a moto account of its own (the first into
moto's default one), as each account holds one porter stack.

usage: inspect_cdk.py ENDPOINT CDK_DIR CASES.json CODE_BUCKET CODE_KEY DEFINITION.asl.json
"""

import io
import json
import os
import sys
import zipfile

import boto3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import inspect_infra as ii  # noqa: E402
from check_cdk_parity import cdk_names  # noqa: E402
from inspect_infra import as_list, check, grants, job_rules, resources_of, statements, verifies_jobs  # noqa: E402

FUNCTIONS = ["Pack", "Provision", "Promote", "Prune", "Pipeline", "Trigger", "Lease", "Notify", "Hooks"]
JOB_WORKERS = ["Pack", "Provision", "Promote", "Prune", "Pipeline"]  # each can be a CodePipeline action: its jobs are verified
STATES = ["Pack", "Provision", "Promote", "Prune", "Lease", "Notify", "Hooks"]  # what the state machine invokes


def main(endpoint, cdk_dir, cases_path, code_bucket, code_key, definition_path):
    base_kw = dict(endpoint_url=endpoint, region_name=ii.REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    s3 = boto3.client("s3", **base_kw)

    s3.create_bucket(Bucket=code_bucket)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    s3.put_object(Bucket=code_bucket, Key=code_key, Body=buf.getvalue())
    with open(cases_path) as f:
        cases = json.load(f)
    with open(definition_path) as f:
        shipped_text = f.read()

    for i, (name, case) in enumerate(cases.items()):
        with open(os.path.join(cdk_dir, f"{name}.template.json")) as f:
            template = json.load(f)
        # Each case in an account of its own, as each account holds one
        # stack (the deployment role's and the release boundary's names are
        # fixed): moto's default account, then others.
        kw = base_kw if i == 0 else ii.in_account(base_kw, str(int(ii.OTHER_STACK_ACCOUNT) + i - 1))
        s3, cfn, iam = boto3.client("s3", **kw), boto3.client("cloudformation", **kw), boto3.client("iam", **kw)
        lam, sfn, events = boto3.client("lambda", **kw), boto3.client("stepfunctions", **kw), boto3.client("events", **kw)
        account = boto3.client("sts", **kw).get_caller_identity()["Account"]
        params = case["parameters"]
        stack_name = f"porter-cdk-{name}"
        approvers = [a for a in params.get("ApproverRoleNames", "").split(",") if a]
        for role in approvers:
            # The approvers' role exists before the stack, as it would in an account.
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "sts:AssumeRole"}]}))
        names = cdk_names(template)
        lid = {names[k]: k for k in template["Resources"]}
        for r in template["Resources"].values():
            if r["Type"] == "AWS::Lambda::Function":
                r["Properties"]["Code"] = {"S3Bucket": code_bucket, "S3Key": code_key}
        stack, physical = ii.create(cfn, template, stack_name, {})
        if ii.failed:
            return

        fn_arn, role_of = {}, {}
        arch = "x86_64" if params.get("Architecture") == "x86_64" else "arm64"
        for f in FUNCTIONS:
            conf = lam.get_function(FunctionName=physical[lid[f + "Function"]])["Configuration"]
            fn_arn[f], role_of[f] = conf["FunctionArn"], conf["Role"].rsplit("/", 1)[1]
            check(conf["FunctionName"] == f"{stack_name}-{f.lower()}" and conf["Runtime"] == "provided.al2023"
                  and conf["Handler"] == "bootstrap", f"moto {name}: {f}Function is {stack_name}-{f.lower()}, provided.al2023 bootstrap")
            props = template["Resources"][lid[f + "Function"]]["Properties"]
            check(props["Architectures"] == [arch], f"template {name}: {f}Function runs on {arch}")
        check(len(set(role_of.values())) == len(FUNCTIONS), f"moto {name}: one role per function")
        env = lam.get_function(FunctionName=physical[lid["PackFunction"]])["Configuration"]["Environment"]["Variables"]
        check(env.get("PORTER_SERVICE") == params["ServiceName"] and env.get("ARTIFACT_BUCKET") == physical[lid["ArtifactBucket"]],
              f"moto {name}: pack deploys {params['ServiceName']} through the stack's artifact bucket")
        refs = params.get("AllowedExternalReferences", "")
        check(env.get("PORTER_ALLOWED_REFERENCES") == refs,
              f"moto {name}: overlays may name outside their stack exactly {refs!r} {env.get('PORTER_ALLOWED_REFERENCES')!r}")

        # --- CodePipeline jobs: each read back and checked against the
        # installation's rules, with the case's values
        want = job_rules(stack_name, params.get("ProductionEnvironment", "production"), params.get("BranchEnvironments", ""))
        pipelines_arn = f"arn:aws:codepipeline:{ii.REGION}:{account}:{stack_name}-pipeline*"
        for f in JOB_WORKERS:
            env = lam.get_function(FunctionName=physical[lid[f + "Function"]])["Configuration"].get("Environment", {}).get("Variables", {})
            got = {k: env.get(k) for k in want}
            check(got == want, f"moto {name}: {f}Function checks CodePipeline jobs against {got}")
            verifies_jobs(grants(statements(iam, role_of[f])), pipelines_arn, f"moto {name}: {f}Function")

        sm_arn = f"arn:aws:states:{ii.REGION}:{account}:stateMachine:{stack_name}-deploy"
        sm = sfn.describe_state_machine(stateMachineArn=sm_arn)
        shipped = shipped_text
        for p in STATES:
            shipped = shipped.replace("${%sFunctionArn}" % p, fn_arn[p])
        check(json.loads(sm["definition"]) == json.loads(shipped),
              f"moto {name}: the deployed definition is statemachines/deploy.asl.json with each phase's own function ARN")
        g = grants(statements(iam, sm["roleArn"].rsplit("/", 1)[1]))
        check(resources_of(g, "lambda:InvokeFunction") == sorted(fn_arn[p] for p in STATES),
              f"moto {name}: the state machine role invokes exactly the four phase functions, the lease, notify and hooks")

        # --- aborts: promote undoes the state machine's aborted and timed-out
        # executions, and gives back their lease
        table = physical[lid["LeaseTable"]]
        env = lam.get_function(FunctionName=physical[lid["PromoteFunction"]])["Configuration"]["Environment"]["Variables"]
        check(env.get("STATE_MACHINE_ARN") == sm_arn and env.get("LEASE_TABLE") == table,
              f"moto {name}: promote aborts executions of {sm_arn} and gives back their lease in {table} {env}")
        ii.aborts_deploys(grants(statements(iam, role_of["Promote"])), events, template["Resources"], physical, lid["PromoteFunction"],
                          fn_arn["Promote"], sm_arn, f"arn:aws:dynamodb:{ii.REGION}:{account}:table/{table}",
                          f"arn:aws:codebuild:{ii.REGION}:{account}:project/{stack_name}-hooks", f"moto {name}")

        g = grants(statements(iam, role_of["Provision"]))
        own = f"arn:aws:iam::{account}:role/{params.get('DeploymentRoleName', 'porter-deployment')}"
        want = sorted(params["DeploymentRoleArns"].split(",")) if params.get("DeploymentRoleArns") else [own]
        check(resources_of(g, "sts:AssumeRole") == want, f"moto {name}: provision assumes exactly {want}")
        for role in approvers:
            g = grants(statements(iam, role))
            pipeline = f"arn:aws:codepipeline:{ii.REGION}:{account}:{stack_name}-pipeline"
            check(resources_of(g, "codepipeline:PutApprovalResult") == [pipeline + "/Approve/Approve"],
                  f"moto {name}: {role} may approve exactly the pipeline's Approve action")
        for f in FUNCTIONS:
            check("codepipeline:PutApprovalResult" not in {a for a, _, _ in grants(statements(iam, role_of[f]))},
                  f"moto {name}: {f}Function's role cannot approve")

        bucket = physical[lid["ArtifactBucket"]]
        bucket_arn = f"arn:aws:s3:::{bucket}"
        service = params["ServiceName"]
        arn = lambda svc, rest: f"arn:aws:{svc}:{ii.REGION}:{account}:{rest}"  # noqa: E731

        # --- the release boundary, whichever deployment roles the stack uses
        # (with DeploymentRoleArns, a deployment role of this account creates
        # release roles only with it all the same)
        boundary_arn = f"arn:aws:iam::{account}:policy/porter/porter-release-boundary"
        bdoc = ii.managed_policy_document(iam, boundary_arn)
        check(bool(bdoc["Statement"]), f"moto {name}: the stack makes the release boundary {boundary_arn}")
        ii.boundary_reads_own_secrets(bdoc, account, f"moto {name}")
        stores = [x for x in params.get("ServiceDataStores", "").split(",") if x]
        ii.boundary_scopes_data(bdoc, account, f"moto {name}", stores)
        # --- the deployment role: release roles made, tagged and passed only
        # for the session's own service and environment, no group naming a
        # load balancer, attaching only in promote's sessions
        deployment_role = params.get("DeploymentRoleName", "porter-deployment")
        ii.release_defences(statements(iam, deployment_role), boundary_arn, f"moto {name}: the deployment role {deployment_role}")
        ii.sessions_named_per_phase(iam, deployment_role,
                                    {p: iam.get_role(RoleName=role_of[p])["Role"]["Arn"] for p in ii.SESSION_NAMES},
                                    f"moto {name}: the deployment role {deployment_role}")

        # --- deploy notices
        env = lam.get_function(FunctionName=physical[lid["NotifyFunction"]])["Configuration"]["Environment"]["Variables"]
        hosts = params.get("WebhookHosts", "hooks.slack.com")
        check(env == {"ARTIFACT_BUCKET": bucket, "NOTIFICATION_TOPIC_ARN": physical[lid["NotificationTopic"]],
                      "PORTER_SERVICE": service, "PORTER_WEBHOOK_HOSTS": hosts},
              f"moto {name}: notify posts to {hosts} only, for {service}, through the stack's topic {env}")
        g = grants(statements(iam, role_of["Notify"]))
        check(resources_of(g, "sns:Publish") == [physical[lid["NotificationTopic"]]], f"moto {name}: notify publishes to the notification topic only")
        check(resources_of(g, "s3:GetObject") == [f"{bucket_arn}/porter-deployment/*"], f"moto {name}: notify reads releases only")
        check(resources_of(g, "secretsmanager:GetSecretValue") == [arn("secretsmanager", f"secret:porter/{service}/notifications/*")]
              and resources_of(g, "ssm:GetParameter") == [arn("ssm", f"parameter/aws/reference/secretsmanager/porter/{service}/notifications/*")],
              f"moto {name}: notify reads webhook URLs only under porter/{service}/notifications/")
        actions = {a for a, _, _ in g}
        check(actions <= {"sns:Publish", "kms:GenerateDataKey", "kms:Decrypt", "s3:GetObject", "ssm:GetParameter", "secretsmanager:GetSecretValue",
                          "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"},
              f"moto {name}: notify has nothing else {sorted(actions)}")

        # --- hooks: the function starts builds; the builds' role can do nothing else
        project = f"{stack_name}-hooks"  # not in moto (inspect_infra.NOT_IN_MOTO): its Ref is its name
        env = lam.get_function(FunctionName=physical[lid["HooksFunction"]])["Configuration"]["Environment"]["Variables"]
        ii.runs_hooks(grants(statements(iam, role_of["Hooks"])), env, bucket, project, arn("codebuild", f"project/{project}"), table,
                      f"moto {name}")
        check(template["Resources"][lid["HooksProject"]]["Properties"]["ServiceRole"] == {"Fn::GetAtt": [lid["HookRole"], "Arn"]},
              f"template {name}: hooks run as HookRole")
        hook_statements = statements(iam, physical[lid["HookRole"]])
        hook_actions = {a for a, _, _ in grants(hook_statements)}
        check(hook_actions <= {"logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:GetObjectVersion", "kms:Decrypt"},
              f"moto {name}: a hook can read its source and write its logs, nothing else {sorted(hook_actions)}")
        check(any(f"{bucket_arn}/porter-continuations/*" in as_list(s["Resource"]) and f"{bucket_arn}/porter-deployment/*" in as_list(s["Resource"])
                  for s in hook_statements if s.get("Effect") == "Deny"),
              f"moto {name}: a hook cannot read releases or continuation state")

        enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        check(enc.get("SSEAlgorithm") == "aws:kms" and enc.get("KMSMasterKeyID", "").endswith(physical[lid["ArtifactKey"]]),
              f"moto {name}: the artifact bucket defaults to SSE-KMS with its own key")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        check(sm_arn in outputs.values() and bucket in outputs.values() and len(outputs) == 8,
              f"moto {name}: the eight outputs, the state machine and the bucket among them")


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
    if ii.failed:
        print(f"inspect_cdk: {len(ii.failed)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("inspect_cdk: all checks passed")
