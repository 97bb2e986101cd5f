#!/usr/bin/env bash
# infra/cdk, checked without an AWS account or a network:
#   1. tsc, and `cdk synth` of the app (the deploy-cdk stack)
#   2. the CDK assertion tests on the construct's template
#   3. cfn-lint on the templates the parity cases synthesize, and their
#      parity with infra/template.yaml for each case of
#      infra/cdk/test/parity-cases.json, and the parity check broken on
#      purpose to see it fail (scripts/check_cdk_parity.py --self-test)
#   4. those templates created in moto and inspected (scripts/inspect_cdk.py)
# Needs .venv, .venv-sam and infra/cdk/node_modules (`make check-cdk` makes them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# No account, no network (scratch folder and moto: offline-aws.sh), no telemetry.
source scripts/offline-aws.sh
export CDK_DISABLE_CLI_TELEMETRY=true CDK_DISABLE_VERSION_CHECK=true

cd infra/cdk
echo "== tsc"
npm run --silent build
echo "== cdk synth"
# The functions as `make lambda` built them when they are there, else
# stand-ins (the app says which); never a build.
# (cdk.json's app builds first, for a fresh clone; built just above.)
npx --no-install cdk synth --quiet --app "node dist/bin/porter.js" --output "$work/cdk.out" >/dev/null
echo "cdk synth: $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["Resources"]))' "$work/cdk.out/Porter.template.json") resources"
echo "== CDK assertions"
node --test dist/test/porter.test.js
node dist/test/synth-cases.js "$work/cases"
cd "$root"

echo "== cfn-lint"
.venv/bin/cfn-lint "$work"/cases/*.template.json
echo "cfn-lint: the synthesized templates are clean"

echo "== parity with infra/template.yaml"
.venv-sam/bin/python scripts/check_cdk_parity.py --self-test \
  infra/template.yaml infra/cdk/test/parity-cases.json "$work/cases"

echo "== the CDK stacks in moto"
start_moto
.venv/bin/python scripts/inspect_cdk.py "http://127.0.0.1:$port" "$work/cases" \
  infra/cdk/test/parity-cases.json porter-cdk-check-code code.zip statemachines/deploy.asl.json
