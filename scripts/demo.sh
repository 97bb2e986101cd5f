#!/usr/bin/env bash
# make demo: hello-service release 1, then release 2, to two regions on the
# local stack. Release 1 goes straight through the deploy state machine
# (`porter deploy --local`); its fleet in us-west-2 then scales out, as
# under load; release 2 (started at that size) the way CodePipeline runs it: the
# `pipeline` function invoked with a job, continuation tokens, job result
# (`porter local pipeline`); then `porter status`, release 3 with canaries
# and a bake whose alarm fires (every region back on release 2), `porter rollback`
# to release 1 and `porter history`. Exits 0 only when each step shows what
# it should: release 2 serving in both regions with release 1 kept, then
# release 1 serving again with release 2 kept. Where instances run (root on
# Linux), each release's pages are fetched through the load balancers, the
# release-2 cutover carries load with no failed request, and a release that
# cannot start never gets traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
porter="${CARGO_TARGET_DIR:-target}/debug/porter"
work=$(mktemp -d)
trap '$porter local down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

$porter local down >/dev/null 2>&1 || true
$porter local up --moto-port "${MOTO_PORT_DEMO:-4510}" --host-port "${HOST_PORT_DEMO:-4511}" > "$work/local.log" 2>&1 &
for _ in $(seq 1 100); do $porter local status >/dev/null 2>&1 && break; sleep 0.2; done
# Say why when it did not come up (a port taken, moto missing).
$porter local status || { cat "$work/local.log"; exit 1; }
running=false
$porter local status | grep -q "^instances: running" && running=true

# Each region's page through its load balancer: prints it, and checks it
# names release $1.
pages() {
  $running || return 0
  $porter local status > "$work/lbs.out"
  for region in us-west-2 us-east-1; do
    url=$(sed -n "s/^  load balancer .* in $region: \(http[^ ]*\) .*/\1/p" "$work/lbs.out")
    page=$(curl -s --max-time 5 "$url/" | sed -n 's/.*\(release [0-9]*\).*/\1/p' | head -1)
    echo "  $region via its load balancer ($url): $page"
    test "$page" = "release $1"
  done
}

# Bounded load through both load balancers while "$@" runs (its output to
# file $1, `requests: N, failed: 0` per region to $1.load); stops the demo
# on any failed request.
under_load() {
  local out=$1; shift
  if ! $running; then "$@" > "$out" 2>&1; return; fi
  # Mixed: kept-alive connections, one request in ten taking 3 s, so
  # requests are in flight on release 1's instances as they drain.
  $porter local load --rate 20 --max-seconds 300 --keep-alive --slow-percent 10 --slow-seconds 3 > "$work/load.out" 2>&1 &
  local load=$!
  local rc=0
  "$@" > "$out" 2>&1 || rc=$?
  kill -TERM "$load"
  wait "$load" || true
  { echo "-- load during that deploy (20 requests/s per load balancer on kept-alive connections, one in ten taking 3 s; loopback):"
    grep "requests:" "$work/load.out"; } > "$out.load"
  test "$(grep -c "requests: [1-9][0-9]*, failed: 0 " "$work/load.out")" = 2 || { cat "$work/load.out"; echo "requests failed"; exit 1; }
  return $rc
}

cp -r examples/hello-service "$work/hello-service"
echo
echo "== release 1 =="
$porter validate "$work/hello-service" >/dev/null
$porter deploy -e staging --local "$work/hello-service" | tee "$work/r1.out"
pages 1
r1=$(sed -n 's/.*packed hello release \([0-9a-f]*\).*/\1/p' "$work/r1.out")
test -n "$r1"

echo
echo "== us-west-2's fleet scales out under load: 3 instances where the config asks for 2 =="
# As Auto Scaling would (by hand here, in the local stack's moto): the
# next release starts at the live fleet's size, not at instance_count.
"${PORTER_VENV:-.venv}/bin/python" - "${MOTO_PORT_DEMO:-4510}" "hello-staging-$r1" <<'PY'
import sys
import boto3
port, stack = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=f"http://127.0.0.1:{port}", region_name="us-west-2",
          aws_access_key_id="testing", aws_secret_access_key="testing")
resources = boto3.client("cloudformation", **kw).describe_stack_resources(StackName=stack)["StackResources"]
group = next(r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::AutoScaling::AutoScalingGroup")
boto3.client("autoscaling", **kw).update_auto_scaling_group(AutoScalingGroupName=group, MaxSize=3, DesiredCapacity=3)
print(f"  us-west-2: {group} of {stack} now wants 3 instances")
PY

echo
echo "== release 2: a change to the service, deployed as a CodePipeline action =="
sed -i 's/release 1/release 2/' "$work/hello-service/index.html"
under_load "$work/r2.out" $porter local pipeline -e staging "$work/hello-service" || { cat "$work/r2.out"; exit 1; }
cat "$work/r2.out" "$work/r2.out.load" 2>/dev/null
pages 2

r2=$(sed -n 's/^ *version = \([0-9a-f]*\)$/\1/p' "$work/r2.out")
test -n "$r1" && test -n "$r2" && test "$r1" != "$r2"
for region in us-west-2 us-east-1; do
  grep -q "$region *promoted hello-staging-$r2 " "$work/r2.out"
done
test "$(grep -c "kept     hello-staging-$r1 (the rollback target)" "$work/r2.out")" = 2
# Release 2 started at the live fleet's size: 3 in us-west-2, 2 in us-east-1.
test "$(grep "us-west-2 *promoted hello-staging-$r2 " "$work/r2.out" | grep -o 'i-[0-9a-f]*' | wc -l)" = 3
test "$(grep "us-east-1 *promoted hello-staging-$r2 " "$work/r2.out" | grep -o 'i-[0-9a-f]*' | wc -l)" = 2
grep -q "cut over 3 previous instance(s) out" "$work/r2.out"
grep -q "cut over 2 previous instance(s) out" "$work/r2.out"
grep -q "^verified: every region serves this release only" "$work/r2.out"

echo
echo "== porter status: what serves where, what a rollback goes back to =="
$porter status -e staging --local "$work/hello-service" | tee "$work/status.out"
test "$(grep -c "serving   release $r2" "$work/status.out")" = 2
test "$(grep -c "rollback  release $r1" "$work/status.out")" = 2
grep -q "deploy lease: free" "$work/status.out"

echo
echo "== release 3: a canary per region; its alarm fires while the canaries bake, and every region goes back to release 2 =="
for region in us-west-2 us-east-1; do $porter local alarm hello-errors --region "$region" --state OK; done
sed -i 's/release 2/release 3/' "$work/hello-service/index.html"
$porter deploy -e staging --local --canary-instances 1 --bake-seconds 4 --alarm hello-errors "$work/hello-service" > "$work/r3.out" 2>&1 &
deploying=$!
# The alarm fires once both regions' canaries serve and bake.
for _ in $(seq 1 200); do
  test "$(grep -c '^promote ' "$work/r3.out")" = 2 && break
  sleep 0.1
done
$porter local alarm hello-errors --region us-east-1 --state ALARM
if wait "$deploying"; then cat "$work/r3.out"; echo "release 3 should have been rolled back"; exit 1; fi
cat "$work/r3.out"
grep -q "error: GateFailed" "$work/r3.out"
grep -q "alarm gate in us-east-1: alarm hello-errors is in ALARM" "$work/r3.out"
test "$(grep -c "canary: i-[0-9a-f]* serving beside the previous release" "$work/r3.out")" = 2
$porter status -e staging --local "$work/hello-service" | tee "$work/status3.out"
test "$(grep -c "serving   release $r2" "$work/status3.out")" = 2
pages 2
$porter local alarm hello-errors --region us-east-1 --state OK >/dev/null

if $running; then
  echo
  echo "== release 4: its start script exits at once; it never gets traffic =="
  cp -r "$work/hello-service" "$work/broken"
  sed -i 's/release 3/release 4/' "$work/broken/index.html"
  printf '#!/bin/sh\necho "hello: DATABASE_URL is not set" >&2\nexit 3\n' > "$work/broken/start"
  if under_load "$work/r4.out" $porter deploy -e staging --local "$work/broken"; then
    cat "$work/r4.out"; echo "release 4 should have failed"; exit 1
  fi
  grep -E "^FAILED|error:|cause:" "$work/r4.out"
  cat "$work/r4.out.load"
  grep -q "exited before it was healthy; its log: hello: DATABASE_URL is not set" "$work/r4.out"
  pages 2
fi

echo
echo "== porter rollback: release 1 again, through the same state machine =="
$porter rollback -e staging --local "$work/hello-service" | tee "$work/rollback.out"
grep -q "^rolled back to hello release $r1 " "$work/rollback.out"
test "$(grep -c "kept     hello-staging-$r2 (the rollback target)" "$work/rollback.out")" = 2
grep -q "^verified: every region serves this release only" "$work/rollback.out"
pages 1

echo
echo "== porter history =="
$porter history -e staging --local "$work/hello-service" | tee "$work/history.out"
sed -n 2p "$work/history.out" | grep -q "SUCCEEDED rollback $r1"
test "$(grep -c "SUCCEEDED" "$work/history.out")" = 3
grep -q "FAILED    deploy .*GateFailed" "$work/history.out"
# Nothing of an instance outlives the local stack.
$porter local down >/dev/null
if $running; then
  left=$(ip netns list | grep -c "^porter-${HOST_PORT_DEMO:-4511}-" || true)
  test "$left" = 0 || { echo "$left namespace(s) left behind"; exit 1; }
fi
echo
$running && echo "instances ran their UserData; pages came through the load balancers; no request failed during the release-2 cutover or the broken release 4"
$running || echo "instances did not run here (bookkeeping mode): $(grep -m1 '^instances' "$work/local.log" || true)"
echo "demo OK: release $r2 served in us-west-2 and us-east-1; release 3's canaries tripped its alarm during their bake and every region went back to release $r2; then a rollback to release $r1, which serves now (release $r2 kept to roll forward to)"
