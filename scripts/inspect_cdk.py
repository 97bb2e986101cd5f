"""Creates the templates the CDK construct synthesized for the parity cases
(infra/cdk/test/parity-cases.json) in a moto server, the way
scripts/inspect_infra.py creates the SAM one (its moto copy and checks),
and checks what came out: every function, the state machine running the
shipped definition with each phase's own function, the roles' rights that
matter most, the bucket. check_cdk_parity.py holds the template to the SAM
one; this shows CloudFormation (moto's) takes it as CDK wrote it.

One stand-in, as sam_to_cfn.py makes for SAM: each function's code is the
S3 object given on the command line instead of CDK's asset (which `cdk
deploy` uploads to the bootstrap bucket first).

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
from inspect_infra import check, grants, resources_of, statements  # noqa: E402

FUNCTIONS = ["Pack", "Provision", "Promote", "Prune", "Pipeline", "Trigger", "Lease"]
STATES = ["Pack", "Provision", "Promote", "Prune", "Lease"]


def main(endpoint, cdk_dir, cases_path, code_bucket, code_key, definition_path):
    kw = dict(endpoint_url=endpoint, region_name=ii.REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    s3, cfn, iam = boto3.client("s3", **kw), boto3.client("cloudformation", **kw), boto3.client("iam", **kw)
    lam, sfn = boto3.client("lambda", **kw), boto3.client("stepfunctions", **kw)
    account = boto3.client("sts", **kw).get_caller_identity()["Account"]

    s3.create_bucket(Bucket=code_bucket)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    s3.put_object(Bucket=code_bucket, Key=code_key, Body=buf.getvalue())
    with open(cases_path) as f:
        cases = json.load(f)
    with open(definition_path) as f:
        shipped_text = f.read()

    for name, case in cases.items():
        with open(os.path.join(cdk_dir, f"{name}.template.json")) as f:
            template = json.load(f)
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

        sm_arn = f"arn:aws:states:{ii.REGION}:{account}:stateMachine:{stack_name}-deploy"
        sm = sfn.describe_state_machine(stateMachineArn=sm_arn)
        shipped = shipped_text
        for p in STATES:
            shipped = shipped.replace("${%sFunctionArn}" % p, fn_arn[p])
        check(json.loads(sm["definition"]) == json.loads(shipped),
              f"moto {name}: the deployed definition is statemachines/deploy.asl.json with each phase's own function ARN")
        g = grants(statements(iam, sm["roleArn"].rsplit("/", 1)[1]))
        check(resources_of(g, "lambda:InvokeFunction") == sorted(fn_arn[p] for p in STATES),
              f"moto {name}: the state machine role invokes exactly the four phase functions and the lease")

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
