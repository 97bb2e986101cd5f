#!/usr/bin/env bash
# A smoke run in a real AWS account (`make aws-smoke`; docs/deploy-sam-and-cdk.md,
# "A smoke run in a real account"). With your own credentials (the AWS
# CLI's and SDK's usual chain: AWS_PROFILE, SSO, environment ...) it:
#   1. checks what it needs, here and in the account (read-only calls);
#   2. copies examples/hello-service to a scratch folder with a config for
#      one environment, `smoke`, in the regions asked for;
#   3. sam build and sam deploy of infra/template.yaml as its own stack,
#      porter-smoke-USER-RANDOM, in the home region;
#   4. creates what an account holds before a first deploy: a region bucket
#      and a classic ELB per region (tagged porter:service and
#      porter:environment) and the environment's pin in SSM, as an
#      administrator would (docs/security-model.md);
#   5. porter deploy, a second deploy with a changed page, porter status,
#      porter rollback, porter status;
#   6. deletes everything it made, from a trap (so a failure half-way, or
#      Ctrl-C, cleans up too), and names what it could not delete.
# Each step prints what it takes and costs; the end, the wall time.
#
# It refuses to run without --yes. --dry-run prints every command and AWS
# call it would make, in order and with the values it would use, and makes
# none: no network, no credentials (check-infra runs it).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: scripts/aws-smoke.sh [--yes | --dry-run] [options]
       make aws-smoke AWS_SMOKE_ARGS="--yes ..."

Deploys examples/hello-service to the environment `smoke` in your AWS
account with porter's own stack, rolls it back, and deletes everything it
made: about 40 minutes and $0.10-0.15 with the defaults.

  --yes               run it (creates billable resources in your account)
  --dry-run           print every command and AWS call, make none
  --region R          the home region: the porter stack and the pin (us-east-1)
  --regions R1,R2     the environment's regions (us-east-1,us-west-2)
  --arch A            the functions' CPU, arm64 or x86_64 (arm64, as make deploy)
  --porter PATH       the porter binary (target/debug/porter, else target/release/porter)
  --once              deploy once; the rollback is skipped (nothing to roll back to)
  -h, --help          this
EOF
}

# ------------------------------------------------------------------ options

dry_run=0 yes=0 once=0
home=us-east-1 regions_arg=us-east-1,us-west-2 arch=arm64 porter=""
while [ $# -gt 0 ]; do
  case $1 in
    --yes) yes=1 ;;
    --dry-run) dry_run=1 ;;
    --once) once=1 ;;
    --region) home=${2:?--region needs a region}; shift ;;
    --region=*) home=${1#*=} ;;
    --regions) regions_arg=${2:?--regions needs a comma-separated list}; shift ;;
    --regions=*) regions_arg=${1#*=} ;;
    --arch) arch=${2:?--arch needs arm64 or x86_64}; shift ;;
    --arch=*) arch=${1#*=} ;;
    --porter) porter=${2:?--porter needs a path}; shift ;;
    --porter=*) porter=${1#*=} ;;
    -h | --help) usage; exit 0 ;;
    *) echo "aws-smoke: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

region_re='^[a-z]{2}(-[a-z]+)+-[0-9]+$'
[[ $home =~ $region_re ]] || { echo "aws-smoke: --region $home is not a region name" >&2; exit 2; }
IFS=, read -r -a regions <<<"$regions_arg"
[ ${#regions[@]} -gt 0 ] || { echo "aws-smoke: --regions is empty" >&2; exit 2; }
for r in "${regions[@]}"; do
  [[ $r =~ $region_re ]] || { echo "aws-smoke: --regions: $r is not a region name" >&2; exit 2; }
done
case $arch in arm64 | x86_64) ;; *) echo "aws-smoke: --arch is arm64 or x86_64" >&2; exit 2 ;; esac

if [ "$yes" -eq 0 ] && [ "$dry_run" -eq 0 ]; then
  cat >&2 <<EOF
aws-smoke: this creates billable resources in the AWS account your credentials
name: porter's stack in $home, a classic ELB, a bucket and t3.micro instances in
each of ${regions[*]}; about 40 minutes and \$0.10-0.15, and it deletes them after.
Run it with --yes (make aws-smoke AWS_SMOKE_ARGS=--yes), or see every call it
would make with --dry-run.
EOF
  exit 2
fi

# ------------------------------------------------------------------ how commands run

# Progress and the commands go to fd 3 (stdout): shown even from inside $(...).
exec 3>&1
export AWS_PAGER="" SAM_CLI_TELEMETRY=0

# One argument as a shell would need it typed (into q: no subshell, as
# the dry run shows some hundred arguments).
quote() {
  if [[ -n $1 && $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    q=$1
  elif [[ $1 == *\'* && $1 != *[\"\$\`\\!]* ]]; then
    q="\"$1\""
  else
    q="'${1//\'/\'\\\'\'}'"
  fi
}
show() {
  local line="+" a q
  for a in "$@"; do
    quote "$a"
    line+=" $q"
  done
  printf '%s\n' "$line" >&3
}
say() { printf '%s\n' "$*" >&3; }

# Every command and AWS call goes through run (or ask, for one whose answer
# is used, or put, for a file written): shown, then made, except in a dry run.
run() {
  show "$@"
  if [ "$dry_run" -eq 0 ]; then "$@"; fi
}
# ask PLACEHOLDER CMD...: CMD's output, or in a dry run PLACEHOLDER.
ask() {
  local placeholder=$1
  shift
  show "$@"
  if [ "$dry_run" -eq 1 ]; then printf '%s\n' "$placeholder"; else "$@"; fi
}
# put FILE: writes standard input to FILE.
put() {
  local file=$1 body
  body=$(cat)
  local q
  quote "$file"
  say "+ cat >$q <<'EOF'"
  printf '%s\nEOF\n' "$body" >&3
  if [ "$dry_run" -eq 0 ]; then printf '%s\n' "$body" >"$file"; fi
}
# absent WHAT CMD...: true when AWS answers CMD with "not found".
absent() {
  local what=$1 err
  shift
  show "$@"
  [ "$dry_run" -eq 0 ] || return 0
  if err=$("$@" 2>&1 >/dev/null); then return 1; fi
  if grep -qE 'NoSuchEntity|ParameterNotFound' <<<"$err"; then return 0; fi
  printf '%s\n' "$err" >&2
  die "could not check $what"
}
die() { echo "aws-smoke: $*" >&2; exit 1; }

clock() { printf '%dm%02ds' $((SECONDS / 60)) $((SECONDS % 60)); }
step_no=0
# step TITLE TAKES COSTS
step() {
  step_no=$((step_no + 1))
  say ""
  say "== $step_no. $1   [$(clock)]"
  say "   takes $2; costs $3"
}

# ------------------------------------------------------------------ names and values

# The example's own service name, port and health check.
example=examples/hello-service
service=$(sed -n 's/^service_name: *//p' "$example/.porter/config")
port=$(sed -n '/^ *inet_port: */{s///p;q}' "$example/.porter/config")
health=$(sed -n '/^ *path: */{s///p;q}' "$example/.porter/config")
[ -n "$service" ] && [ -n "$port" ] && [ -n "$health" ] || die "cannot read $example/.porter/config"
environment=smoke
instance_type=t3.micro

# porter-smoke-USER-RANDOM: at most 36 characters, so that the stack's role
# names (STACK-deploy-states ...) and the region buckets fit.
user=${USER:-}
[ -n "$user" ] || user=$(id -un 2>/dev/null) || user=""
user=$(printf '%s' "$user" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-')
user=${user#-}
user=${user:0:16}
user=${user%-}
[ -n "$user" ] || user=user
random=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
name=porter-smoke-$user-$random
role_name=$name-deployment
code_bucket=$name-code
pin_name=/porter/environments/$environment
declare -A bucket elb
for r in "${regions[@]}"; do
  bucket[$r]=$name-$r
  # A classic ELB's name: at most 32 characters, no hyphen at the end.
  e=$service-$environment-$random-${r//-/}
  e=${e:0:32}
  elb[$r]=${e%-}
done

target=${CARGO_TARGET_DIR:-target}
if [ -z "$porter" ]; then
  porter=$target/debug/porter
  [ -x "$porter" ] || [ ! -x "$target/release/porter" ] || porter=$target/release/porter
fi
sam=.venv-sam/bin/sam
n=${#regions[@]}

if [ "$dry_run" -eq 1 ]; then
  work=${TMPDIR:-/tmp}/porter-smoke.XXXXXX
  say "aws-smoke: dry run: every command and AWS call a run would make, in order; none is made."
  say "Values only AWS can answer (account, VPC, subnets, versions) are shown in capitals."
else
  work=$(mktemp -d)
fi
folder=$work/hello-service

# ------------------------------------------------------------------ cleanup

made_code_bucket=0 made_stack=0 deployed=0 made_pin=0
made_buckets=() made_elbs=()
leftover=()

# try WHAT CMD...: a cleanup command; a failure is noted, not fatal.
try() {
  local what=$1
  shift
  local shown
  if ! run "$@"; then
    shown=$(show "$@" 3>&1)
    leftover+=("$what (${shown#+ })")
  fi
}

# Deletes a versioned bucket's every version and delete marker, then the bucket.
delete_versioned_bucket() {
  local b=$1 r=$2 listing=$work/versions.json objects rounds=0
  while [ "$rounds" -lt 100 ]; do
    rounds=$((rounds + 1))
    # One page of at most 500 versions and delete markers (a delete takes
    # 1000); `true` is JMESPath's literal, not a command.
    # shellcheck disable=SC2016
    objects=$(ask '{"Objects": [{"Key": "KEY", "VersionId": "VERSION"}], "Quiet": true}' \
      aws s3api list-object-versions --bucket "$b" --region "$r" --page-size 500 --max-items 500 --output json \
      --query '{Objects: [Versions, DeleteMarkers][].{Key: Key, VersionId: VersionId}, Quiet: `true`}') \
      || { leftover+=("artifact bucket $b in $r: could not list its versions"); return; }
    grep -q '"Key"' <<<"$objects" || break
    [ "$dry_run" -eq 1 ] || printf '%s\n' "$objects" >"$listing"
    if ! run aws s3api delete-objects --bucket "$b" --region "$r" --delete "file://$listing" >/dev/null; then
      leftover+=("artifact bucket $b in $r: could not delete its objects")
      return
    fi
    [ "$dry_run" -eq 0 ] || break
  done
  try "artifact bucket $b in $r" aws s3api delete-bucket --bucket "$b" --region "$r"
}

cleanup() {
  set +e
  trap 'say "(interrupted: going on with the next delete)"' INT
  if [ "$made_code_bucket" -eq 0 ] && [ "$made_stack" -eq 0 ] && [ ${#made_buckets[@]} -eq 0 ] \
    && [ ${#made_elbs[@]} -eq 0 ] && [ "$made_pin" -eq 0 ]; then
    return
  fi
  step "clean up: delete everything this run made" "~5-10 minutes" "nothing"
  local r s line logical physical state_machine="" artifact_bucket="" artifact_key="" image_repository=""

  if [ "$made_stack" -eq 1 ]; then
    # What the stack holds that outlives it (Retain) or must stop first.
    while read -r logical physical; do
      case $logical in
        DeployStateMachine) state_machine=$physical ;;
        ArtifactBucket) artifact_bucket=$physical ;;
        ArtifactKey) artifact_key=$physical ;;
        ImageRepository) image_repository=$physical ;;
      esac
    done < <(ask "$(printf '%s\t%s\n' DeployStateMachine "arn:aws:states:$home:ACCOUNT:stateMachine:$name-deploy" \
      ArtifactBucket ARTIFACT-BUCKET ArtifactKey ARTIFACT-KEY-ID ImageRepository IMAGE-REPOSITORY)" \
      aws cloudformation describe-stack-resources --stack-name "$name" --region "$home" --output text \
      --query "StackResources[?contains(['DeployStateMachine','ArtifactBucket','ArtifactKey','ImageRepository'], LogicalResourceId)].[LogicalResourceId,PhysicalResourceId]" \
      2>/dev/null)
  fi

  if [ "$deployed" -eq 1 ]; then
    # A deploy still running (Ctrl-C stops porter, not the state machine).
    if [ -n "$state_machine" ]; then
      for line in $(ask "" aws stepfunctions list-executions --state-machine-arn "$state_machine" \
        --region "$home" --status-filter RUNNING --query 'executions[].executionArn' --output text); do
        try "execution $line" aws stepfunctions stop-execution --execution-arn "$line" --region "$home" \
          --cause "aws-smoke cleanup"
      done
    fi
    # The release stacks, in every region: porter names them SERVICE-ENV-VERSION.
    local -A stacks=()
    for r in "${regions[@]}"; do
      stacks[$r]=$(ask "$service-$environment-VERSION1 $service-$environment-VERSION2" \
        aws cloudformation describe-stacks --region "$r" --output text \
        --query "Stacks[?starts_with(StackName, '$service-$environment-') && Tags[?Key=='porter:service' && Value=='$service'] && Tags[?Key=='porter:environment' && Value=='$environment']].StackName") \
        || { leftover+=("release stacks in $r (could not list them)"); stacks[$r]=""; }
      for s in ${stacks[$r]}; do
        try "release stack $s in $r" aws cloudformation delete-stack --stack-name "$s" --region "$r"
      done
    done
    for r in "${regions[@]}"; do
      for s in ${stacks[$r]}; do
        try "release stack $s in $r" aws cloudformation wait stack-delete-complete --stack-name "$s" --region "$r"
      done
    done
  fi

  for line in "${made_elbs[@]}"; do
    try "classic ELB ${line% *} in ${line#* }" aws elb delete-load-balancer \
      --load-balancer-name "${line% *}" --region "${line#* }"
  done
  for line in "${made_buckets[@]}"; do
    try "bucket ${line% *} in ${line#* }" aws s3 rb "s3://${line% *}" --force --region "${line#* }"
  done
  if [ "$made_pin" -eq 1 ]; then
    try "SSM parameter $pin_name in $home" aws ssm delete-parameter --name "$pin_name" --region "$home"
  fi

  if [ "$made_stack" -eq 1 ]; then
    try "stack $name in $home" aws cloudformation delete-stack --stack-name "$name" --region "$home"
    try "stack $name in $home" aws cloudformation wait stack-delete-complete --stack-name "$name" --region "$home"
    # Kept by the template (DeletionPolicy: Retain), so deleted here.
    if [ -n "$artifact_bucket" ]; then delete_versioned_bucket "$artifact_bucket" "$home"; fi
    if [ -n "$image_repository" ]; then
      try "ECR repository $image_repository" aws ecr delete-repository --repository-name "$image_repository" \
        --region "$home" --force
    fi
    if [ -n "$artifact_key" ]; then
      # Seven days is the shortest wait AWS allows.
      try "KMS key $artifact_key" aws kms schedule-key-deletion --key-id "$artifact_key" --region "$home" \
        --pending-window-in-days 7
    fi
  fi
  if [ "$made_code_bucket" -eq 1 ]; then
    try "bucket $code_bucket in $home" aws s3 rb "s3://$code_bucket" --force --region "$home"
  fi
}

on_exit() {
  local rc=$?
  trap - EXIT
  cleanup
  [ "$dry_run" -eq 1 ] || rm -rf "$work"
  say ""
  if [ ${#leftover[@]} -gt 0 ]; then
    say "aws-smoke: could not delete these (the command that failed is shown; run it again, or use the console):"
    printf '  %s\n' "${leftover[@]}" >&3
    [ "$rc" -ne 0 ] || rc=1
  elif [ "$dry_run" -eq 0 ] && { [ "$made_stack" -eq 1 ] || [ "$made_code_bucket" -eq 1 ]; }; then
    say "aws-smoke: everything this run made is deleted (the KMS key waits 7 days, as AWS requires)"
  fi
  if [ "$dry_run" -eq 1 ]; then
    say "aws-smoke: dry run: nothing was made"
  elif [ "$rc" -eq 0 ]; then
    say "aws-smoke: passed"
  else
    say "aws-smoke: FAILED (exit $rc)"
  fi
  say "wall time: $(clock)"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Estimates, at us-east-1's prices (others are a little higher): a t3.micro
# with its public IPv4 address and 8 GB of gp3 about $0.016 an hour, a
# classic ELB with an address per zone $0.035 an hour (billed per started
# hour); Lambda, Step Functions, DynamoDB, S3 and the KMS key a cent or so.
usd() { awk "BEGIN { printf \"\$%.2f\", $1 }"; }
elb_cost=$(usd "$n * 0.035")
release1_cost=$(usd "$n * 0.016 * 35 / 60")
release2_cost=$(usd "$n * 0.016 * 25 / 60")
total_cost=$(usd "0.01 + $n * (0.035 + 0.016 * 60 / 60)")

# ------------------------------------------------------------------ 1. prerequisites

step "prerequisites: the tools here, and the account (read-only calls)" "seconds" "nothing"
missing=()
command -v aws >/dev/null 2>&1 || missing+=("the aws CLI (https://docs.aws.amazon.com/cli/)")
[ -x "$sam" ] || missing+=("$sam (make venv-sam)")
[ -x .venv/bin/cargo-lambda ] || missing+=(".venv/bin/cargo-lambda, which sam build runs (make venv)")
command -v cargo >/dev/null 2>&1 || missing+=("cargo (https://rustup.rs)")
[ -x "$porter" ] || missing+=("a porter binary at $porter (cargo build -p porter-cli, or --porter PATH)")
if [ "$arch" = arm64 ] && command -v rustup >/dev/null 2>&1 \
  && ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  missing+=("the aarch64 Rust target for --arch arm64 (rustup target add aarch64-unknown-linux-gnu), or --arch x86_64")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$dry_run" -eq 1 ]; then
    say "   (a real run would stop here for want of:"
    printf '     %s\n' "${missing[@]}" >&3
    say "   )"
  else
    printf 'aws-smoke: missing:\n' >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
  fi
fi

identity=$(ask "123456789012 arn:aws:iam::123456789012:user/$user" \
  aws sts get-caller-identity --query '[Account, Arn]' --output text)
account=${identity%%[[:space:]]*}
caller=${identity##*[[:space:]]}
partition=$(cut -d: -f2 <<<"$caller")
say "   account $account ($partition), home region $home, regions ${regions[*]}"
say "   this run: $name"

# One porter stack per account: its release boundary has a fixed name.
absent "the release boundary" aws iam get-policy \
  --policy-arn "arn:$partition:iam::$account:policy/porter/porter-release-boundary" \
  || die "the account already holds porter's release boundary (porter/porter-release-boundary): a porter stack, or another smoke run, is installed here, and this run's stack would clash with it. Use an account without one."
absent "the pin" aws ssm get-parameter --name "$pin_name" --region "$home" \
  || die "$pin_name exists in $home: an environment named $environment is pinned here already, and this run would change it"

declare -A vpc subnets azs
for r in "${regions[@]}"; do
  vpc[$r]=$(ask "vpc-DEFAULT" aws ec2 describe-vpcs --region "$r" --filters Name=is-default,Values=true \
    --query 'Vpcs[0].VpcId' --output text)
  [[ ${vpc[$r]} == vpc-* ]] || die "$r has no default VPC: the smoke run places its ELB and instances there"
  offered=$(ask "${r}a ${r}b" aws ec2 describe-instance-type-offerings --region "$r" \
    --location-type availability-zone --filters "Name=instance-type,Values=$instance_type" \
    --query 'InstanceTypeOfferings[].Location' --output text)
  defaults=$(ask "$(printf '%s\t%s\n' "${r}a" subnet-A "${r}b" subnet-B)" aws ec2 describe-subnets --region "$r" \
    --filters "Name=vpc-id,Values=${vpc[$r]}" Name=default-for-az,Values=true \
    --query 'Subnets[].[AvailabilityZone,SubnetId]' --output text)
  # Two zones that offer the instance type and have a default subnet.
  picked=$(for az in $offered; do awk -v az="$az" '$1 == az' <<<"$defaults"; done | sort | sed -n 1,2p)
  if [ -z "$picked" ] || [ "$(wc -l <<<"$picked")" -ne 2 ]; then
    die "$r: no two zones with a default subnet offer $instance_type"
  fi
  azs[$r]=$(awk '{ print $1 }' <<<"$picked" | tr '\n' ' ')
  subnets[$r]=$(awk '{ print $2 }' <<<"$picked" | tr '\n' ' ')
  existing=$(ask "" aws cloudformation describe-stacks --region "$r" --output text \
    --query "Stacks[?starts_with(StackName, '$service-$environment-')].StackName")
  [ -z "$existing" ] || die "$r already has stacks named $service-$environment-*: $existing"
done

# ------------------------------------------------------------------ 2. the service folder

step "the service: $example copied, with a config for $environment" "seconds" "nothing"
run cp -R "$example" "$folder"
{
  # The example's service and container, then one environment of its own.
  sed '/^environments:/,$d' "$example/.porter/config"
  cat <<EOF
environments:
- name: $environment
  role_arn: arn:$partition:iam::$account:role/$role_name
  instance_count: 1
  instance_type: $instance_type
  regions:
EOF
  for r in "${regions[@]}"; do
    read -r -a zone_list <<<"${azs[$r]}"
    read -r -a subnet_list <<<"${subnets[$r]}"
    printf '  - name: %s\n    vpc_id: %s\n    azs:\n' "$r" "${vpc[$r]}"
    for i in "${!zone_list[@]}"; do
      printf '    - {name: %s, subnet_id: %s}\n' "${zone_list[$i]}" "${subnet_list[$i]}"
    done
    printf '    s3_bucket: %s\n    elb: %s\n    containers:\n    - <<: *WEB\n' "${bucket[$r]}" "${elb[$r]}"
  done
} | put "$folder/.porter/config"
run "$porter" validate "$folder"

# ------------------------------------------------------------------ 3. sam build

step "sam build: the nine functions for $arch (cargo-lambda, release)" \
  "a few minutes here (longer on a first build)" "nothing (your CPU)"
# cargo-lambda from .venv, as check-infra's sam build runs it.
export PATH="$PWD/.venv/bin:$PATH"
build_env=()
if [ "$arch" = x86_64 ] && [ "$(uname -m)" = x86_64 ]; then
  # Native: the system's linker, as make lambda builds (see the Makefile).
  build_env=(env CARGO_LAMBDA_COMPILER=cargo)
fi
run "${build_env[@]}" "$sam" build -t infra/template.yaml --build-dir "$work/build" \
  --parameter-overrides "Architecture=$arch"

# ------------------------------------------------------------------ 4. sam deploy

step "sam deploy: porter's stack $name in $home" "~3-5 minutes" \
  "Lambda, Step Functions, DynamoDB and S3 by use, a KMS key at \$1 a month by the hour: under \$0.01"
# create-bucket takes a location anywhere but us-east-1.
location() { [ "$1" = us-east-1 ] || printf '%s\n' --create-bucket-configuration "LocationConstraint=$1"; }
mapfile -t loc < <(location "$home")
run aws s3api create-bucket --bucket "$code_bucket" --region "$home" "${loc[@]}" >/dev/null
made_code_bucket=1
buckets_csv=$(for r in "${regions[@]}"; do printf '%s,' "${bucket[$r]}"; done)
made_stack=1
run "$sam" deploy --template-file "$work/build/template.yaml" --stack-name "$name" --region "$home" \
  --s3-bucket "$code_bucket" --s3-prefix "$name" \
  --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM \
  --no-confirm-changeset --no-fail-on-empty-changeset --tags "porter-smoke=$name" \
  --parameter-overrides "ServiceName=$service" "RepositoryName=$name" \
  "RegionBucketNames=${buckets_csv%,}" "DeploymentRoleName=$role_name" \
  "Architecture=$arch" DeployAction=Invoke LogRetentionDays=30

# ------------------------------------------------------------------ 5. what the account holds

step "what an account holds before a first deploy: $n region bucket(s), $n classic ELB(s), the pin" \
  "about a minute" \
  "$n classic ELB(s) at ~\$0.035 an hour each, billed by the started hour: about $elb_cost"
for r in "${regions[@]}"; do
  mapfile -t loc < <(location "$r")
  run aws s3api create-bucket --bucket "${bucket[$r]}" --region "$r" "${loc[@]}" >/dev/null
  made_buckets+=("${bucket[$r]} $r")
done
for r in "${regions[@]}"; do
  elb_sg=$(ask "sg-DEFAULT" aws ec2 describe-security-groups --region "$r" \
    --filters "Name=vpc-id,Values=${vpc[$r]}" Name=group-name,Values=default \
    --query 'SecurityGroups[0].GroupId' --output text)
  read -r -a subnet_list <<<"${subnets[$r]}"
  # Tagged as the service's in this environment, as their owner would
  # (docs/security-model.md, "Load balancers are owned").
  run aws elb create-load-balancer --load-balancer-name "${elb[$r]}" --region "$r" \
    --listeners "Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=$port" \
    --subnets "${subnet_list[@]}" --security-groups "$elb_sg" \
    --tags "Key=porter:service,Value=$service" "Key=porter:environment,Value=$environment" >/dev/null
  made_elbs+=("${elb[$r]} $r")
  run aws elb configure-health-check --load-balancer-name "${elb[$r]}" --region "$r" \
    --health-check "Target=HTTP:$port$health,Interval=5,Timeout=2,UnhealthyThreshold=2,HealthyThreshold=2" >/dev/null
done
# The environment's pin, as an administrator writes it (docs/security-model.md,
# "Environments are pinned outside the repository"); not --overwrite.
pin=$(for r in "${regions[@]}"; do
  printf '"%s": {"role_arn": "arn:%s:iam::%s:role/%s"}, ' "$r" "$partition" "$account" "$role_name"
done)
pin="{\"regions\": {${pin%, }}}"
run aws ssm put-parameter --type String --name "$pin_name" --region "$home" --value "$pin" >/dev/null
made_pin=1

# ------------------------------------------------------------------ 6. deploys

on=(-e "$environment" --stack "$name")
porter_env=(env "AWS_REGION=$home")

step "porter deploy: release 1" "~8-12 minutes" \
  "$n t3.micro (one per region) from now until the cleanup, ~35 minutes: about $release1_cost"
deployed=1
run "${porter_env[@]}" "$porter" deploy "${on[@]}" "$folder"

if [ "$once" -eq 0 ]; then
  step "porter deploy: release 2 (index.html changed)" "~8-12 minutes" \
    "$n more t3.micro (release 1 stays up as the rollback target), ~25 minutes: about $release2_cost"
  sed 's/release 1/release 2/' "$example/index.html" | put "$folder/index.html"
  run "${porter_env[@]}" "$porter" deploy "${on[@]}" "$folder"
fi

step "porter status" "seconds" "nothing (read-only)"
run "${porter_env[@]}" "$porter" status "${on[@]}" "$folder"

if [ "$once" -eq 0 ]; then
  step "porter rollback: release 1 again" "~3-8 minutes (its instances are still up)" \
    "no new instances: under \$0.01"
  run "${porter_env[@]}" "$porter" rollback "${on[@]}" "$folder"
  step "porter status, after the rollback" "seconds" "nothing (read-only)"
  run "${porter_env[@]}" "$porter" status "${on[@]}" "$folder"
else
  say ""
  say "== porter rollback: skipped (--once: one release, nothing to roll back to)"
fi

say ""
say "aws-smoke: deploys done; estimated cost of the whole run: about $total_cost"
# The cleanup, the summary and the wall time: on_exit.
