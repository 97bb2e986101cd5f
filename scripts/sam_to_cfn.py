"""infra/template.yaml as the plain CloudFormation that `sam deploy` would
create, for the moto check in scripts/check-infra.sh (run with .venv-sam's
python: aws-sam-translator comes with SAM CLI).

Two stand-ins for what `sam package` does with local paths, nothing else:
- every function's code is the S3 object given on the command line (a
  dummy zip the check uploads to moto first);
- the state machine's DefinitionUri file is inlined as its definition.

usage: sam_to_cfn.py TEMPLATE CODE_BUCKET CODE_KEY OUT.json
"""

import json
import os
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform


class NoManagedPolicies:
    """The template names no AWS managed policy; never ask IAM for them."""

    def load(self):
        return {}


def main(template_path, code_bucket, code_key, out_path):
    # The translator asks boto for the region of its pseudo parameters.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    base = os.path.dirname(os.path.abspath(template_path))
    with open(template_path) as f:
        template = yaml_parse(f.read())

    code_uri = f"s3://{code_bucket}/{code_key}"
    template.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    for res in template["Resources"].values():
        props = res.setdefault("Properties", {})
        if res["Type"] == "AWS::Serverless::Function":
            props["CodeUri"] = code_uri
        if res["Type"] == "AWS::Serverless::StateMachine" and "DefinitionUri" in props:
            with open(os.path.join(base, props.pop("DefinitionUri"))) as f:
                props["Definition"] = json.load(f)

    parameters = {
        name: p["Default"] for name, p in template.get("Parameters", {}).items() if "Default" in p
    }
    parameters.update({"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"})
    cfn = transform(template, parameters, NoManagedPolicies())

    with open(out_path, "w") as f:
        json.dump(cfn, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
