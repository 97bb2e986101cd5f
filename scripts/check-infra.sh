#!/usr/bin/env bash
# infra/template.yaml, checked without an AWS account or a network:
#   1. sam validate --lint
#   2. cfn-lint; the deployment role against what CloudFormation's handlers
#      of a release stack's resources, and of those an overlay may add, need
#      (scripts/check_handler_permissions.py, and once more on copies missing
#      an action, to see it fail); checkov
#      (every skipped check carries its reason in the template)
#   3. the template as plain CloudFormation, created in moto and inspected
#      (scripts/sam_to_cfn.py, scripts/inspect_infra.py); the roles the
#      local stack checks calls against rendered again and compared with
#      crates/local/src/roles.json (scripts/render-roles.sh)
#   4. sam build: a release bootstrap for every function (x86_64: the
#      aarch64 Rust target cannot be installed here)
#   5. the dry run of scripts/aws-smoke.sh, the smoke run in a real
#      account: every step it takes, in order, and no AWS call
# Needs .venv, .venv-sam and .venv-checkov (`make check-infra` makes them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# No account, no network (scratch folder and moto: offline-aws.sh), no telemetry.
source scripts/offline-aws.sh
export SAM_CLI_TELEMETRY=0
# No update checks: SAM asks PyPI once a week unless its metadata (kept
# here, not in ~/.aws-sam) says it just did; checkov has a switch.
export __SAM_CLI_APP_DIR="$work/sam-app" CKV_SKIP_PACKAGE_UPDATE_CHECK=true
mkdir -p "$__SAM_CLI_APP_DIR"
printf '{"lastVersionCheck": %s}\n' "$(date +%s)" >"$__SAM_CLI_APP_DIR/metadata.json"

echo "== sam validate --lint"
.venv-sam/bin/sam validate --lint -t infra/template.yaml

echo "== cfn-lint"
.venv/bin/cfn-lint infra/template.yaml
echo "cfn-lint: infra/template.yaml clean"

# Runs COMMAND, which must fail: exit with RC and print a line matching
# PATTERN. Else what it printed is shown with MESSAGE, and the check stops.
expect_failure() {
  local want_rc=$1 pattern=$2 message=$3 rc=0
  shift 3
  "$@" >"$work/failure.out" 2>&1 || rc=$?
  if [ "$rc" -ne "$want_rc" ] || ! grep -q -- "$pattern" "$work/failure.out"; then
    cat "$work/failure.out"
    echo "$message (exit $rc, not $want_rc)"
    exit 1
  fi
}

echo "== handler permissions"
# The deployment role may do what CloudFormation's create and delete
# handlers of a release stack's resources need (their schemas, in cfn-lint).
.venv/bin/python scripts/check_handler_permissions.py --template infra/template.yaml
# ... and the check fails on a copy without one of those actions: the
# deployment role's `- ACTION` line taken out, its report must name it.
without_action() {
  local action=$1 expected=$2 copy="$work/without-${1//:/-}.yaml"
  grep -v "^ *- $action\$" infra/template.yaml >"$copy" || true
  [ "$(wc -l <infra/template.yaml)" -eq $(( $(wc -l <"$copy") + 1 )) ] \
    || { echo "handler permissions: expected exactly one '- $action' line to take out"; exit 1; }
  expect_failure 1 "^FAIL  $expected" "handler permissions: a deployment role without $action was not reported" \
    .venv/bin/python scripts/check_handler_permissions.py --template "$copy"
  echo "handler permissions: a deployment role without $action is reported"
}
without_action ec2:DeleteTags "AWS::EC2::LaunchTemplate delete handler needs ec2:DeleteTags"
# The types an overlay may add (crates/core/src/overlay.rs, ADDABLE_TYPES)
# are held to it too.
without_action autoscaling:DeleteScheduledAction \
  "AWS::AutoScaling::ScheduledAction delete handler needs autoscaling:DeleteScheduledAction"
# ... and the check refuses to run on an overlay.rs without ADDABLE_TYPES.
sed 's/ADDABLE_TYPES/ADDABLE_KINDS/' crates/core/src/overlay.rs >"$work/overlay-without-types.rs"
expect_failure 2 'ADDABLE_TYPES.*found 0' "handler permissions: an overlay.rs without ADDABLE_TYPES was not refused" \
  .venv/bin/python scripts/check_handler_permissions.py --overlay "$work/overlay-without-types.rs"
echo "handler permissions: an overlay.rs without ADDABLE_TYPES is refused"

echo "== checkov"
.venv-checkov/bin/checkov -f infra/template.yaml --framework cloudformation \
  --skip-download --quiet --compact

echo "== the stack in moto"
.venv-sam/bin/python scripts/sam_to_cfn.py infra/template.yaml porter-infra-check-code code.zip "$work/template.json"
start_moto
.venv/bin/python scripts/inspect_infra.py "http://127.0.0.1:$port" "$work/template.json" \
  porter-infra-check-code code.zip statemachines/deploy.asl.json
kill "$moto_pid"; wait "$moto_pid" 2>/dev/null || true; moto_pid=""

echo "== the local stack's roles"
# What the local stack checks each function's calls against: rendered
# afresh, it must be the committed file, so it never goes stale.
scripts/render-roles.sh "$work/roles.json"
if ! diff -u crates/local/src/roles.json "$work/roles.json"; then
  echo "crates/local/src/roles.json is not what infra/template.yaml renders: run scripts/render-roles.sh and commit it"
  exit 1
fi
echo "crates/local/src/roles.json: what infra/template.yaml renders"

echo "== sam build"
# cargo-lambda from .venv. SAM runs one `cargo lambda build --release
# --bin X` per function, in the workspace's own target dir: after `make
# lambda` (which builds the same nine the same way, with the system's
# linker for native x86_64: see the Makefile) cargo finds each up to date,
# so this checks SAM's build of the template against the bootstraps the
# tests run, without building twice. On its own it builds them from scratch.
export PATH="$root/.venv/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_LAMBDA_COMPILER=cargo
started=$(date +%s)
.venv-sam/bin/sam build -t infra/template.yaml --build-dir "$work/build" \
  --parameter-overrides Architecture=x86_64
took=$(( $(date +%s) - started ))
for fn in Pack Provision Promote Prune Pipeline Trigger Lease Notify Hooks; do
  f="$work/build/${fn}Function/bootstrap"
  [ -x "$f" ] || { echo "sam build made no $f"; exit 1; }
  # ELF, 64-bit, little-endian; e_machine (offset 18) 0x3e: x86-64
  [ "$(od -An -tx1 -N5 "$f" | tr -d ' \n')" = 7f454c4602 ] && [ "$(od -An -tx1 -j18 -N2 "$f" | tr -d ' \n')" = 3e00 ] \
    || { echo "$f is not an x86-64 ELF executable"; exit 1; }
  echo "bootstrap ${fn}Function: $(stat -c %s "$f") bytes"
done
echo "sam build: 9 bootstraps in ${took}s"

echo "== aws-smoke.sh --dry-run"
# The smoke run in a real account (docs/deploy-sam-and-cdk.md, "A smoke run
# in a real account") runs only as its dry run here: without credentials,
# and with an `aws` that records any call made to it. Without --yes or
# --dry-run the script refuses before calling anything.
mkdir -p "$work/no-aws"
printf '#!/bin/sh\necho "aws $*" >>"%s/aws-called"\nexit 99\n' "$work" >"$work/no-aws/aws"
chmod +x "$work/no-aws/aws"
smoke() { env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY PATH="$work/no-aws:$PATH" scripts/aws-smoke.sh "$@"; }
expect_failure 2 '--yes' "aws-smoke.sh: without --yes it should refuse" smoke
smoke --dry-run >"$work/smoke.out"
if [ -e "$work/aws-called" ]; then
  cat "$work/aws-called"
  echo "aws-smoke.sh --dry-run called aws"
  exit 1
fi
# Each step after the one before it.
last=0
for want in '^[+] .*sam build ' '^[+] .*sam deploy .*--stack-name porter-smoke-' \
  '^[+] aws elb create-load-balancer .*Key=porter:service,Value=hello Key=porter:environment,Value=smoke' \
  '^[+] aws ssm put-parameter .*--name /porter/environments/smoke ' \
  '^[+] .*porter deploy -e smoke ' '^[+] .*porter deploy -e smoke ' '^[+] .*porter status -e smoke ' \
  '^[+] .*porter rollback -e smoke ' '^[+] aws cloudformation delete-stack --stack-name hello-smoke-' \
  '^[+] aws elb delete-load-balancer ' '^[+] aws s3 rb s3://porter-smoke-' \
  '^[+] aws ssm delete-parameter --name /porter/environments/smoke ' \
  '^[+] aws cloudformation delete-stack --stack-name porter-smoke-' '^[+] aws kms schedule-key-deletion ' \
  '^wall time: '; do
  at=$(awk -v after="$last" -v pat="$want" 'NR > after && $0 ~ pat { print NR; exit }' "$work/smoke.out")
  if [ -z "$at" ]; then
    cat "$work/smoke.out"
    echo "aws-smoke.sh --dry-run: no line matching '$want' after line $last"
    exit 1
  fi
  last=$at
done
echo "aws-smoke.sh --dry-run: $(grep -c '^[+] ' "$work/smoke.out") commands, from sam deploy to the deletes, none made"
