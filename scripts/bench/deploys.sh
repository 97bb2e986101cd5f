#!/usr/bin/env bash
# `make bench`, deploys on the local stack: state transitions and wall time
# of whole deploys (counted by `porter deploy` from the execution history),
# the CLI's time to its first line, and a stack held in progress.
#
#   1. Bookkeeping (moto completes stacks at once): hello-service to 1, 2
#      and 8 regions, a new release each time.
#   2. Where instances run (root on Linux): 2 regions whose instances take
#      HOLD seconds to answer, so the local stack holds each stack
#      CREATE_IN_PROGRESS until they signal; a second release, whose waits
#      are shaped by how long the first took; then the arithmetic to a
#      10-minute stack from provision's schedule of checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
porter="${CARGO_TARGET_DIR:-$root/target}/debug/porter"
work=$(mktemp -d)
hold=${BENCH_HOLD_SECONDS:-90}
# Regions whose zones a and b exist in moto.
regions=(us-west-2 us-east-1 us-east-2 eu-west-1 eu-west-2 eu-west-3 ap-south-1 ca-central-1)
trap '$porter local down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# hello-service as service hello-$3 to the first $2 regions, in folder $1.
service() {
  local dir=$1 n=$2 name=$3
  cp -r examples/hello-service "$dir"
  .venv/bin/python - "$dir/.porter/config" "$n" "$name" "${regions[@]}" <<'PY'
import sys
path, n, name, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
head = open(path).read().split("  regions:\n")[0]
# A service of its own per folder: deploys of one do not meet another's.
head = head.replace("service_name: hello", f"service_name: hello-{name}")
out = [head, "  regions:\n"]
for region in names[:n]:
    out.append(
        f"  - name: {region}\n    azs:\n    - {{name: {region}a}}\n    - {{name: {region}b}}\n"
        f"    s3_bucket: hello-{name}-{region}\n    elb: hello-{name}-{region}\n"
        f"    containers:\n    - <<: *WEB\n"
    )
open(path, "w").write("".join(out))
PY
}

# Runs `porter deploy --local` on $1 with content $2; prints the seconds to
# its first line and its summary line.
deploy() {
  local dir=$1 content=$2 started first line summary=""
  echo "$content" > "$dir/index.html"
  started=$(date +%s.%N)
  first=""
  : > "$work/deploys.log"
  while IFS= read -r line; do
    [ -z "$first" ] && first=$(awk -v now="$(date +%s.%N)" -v t0="$started" 'BEGIN { print now - t0 }')
    case $line in *"state transitions"*) summary=$line ;; esac
    echo "$line" >> "$work/deploys.log"
  done < <($porter deploy -e staging --local "$dir" 2>&1)
  printf '    first line after %.2f s; %s\n' "$first" "${summary:-no summary: the deploy failed (its output follows)}"
  [ -n "$summary" ] || tail -20 "$work/deploys.log"
}

up() {
  $porter local down >/dev/null 2>&1 || true
  $porter local up "$@" --moto-port 4530 --host-port 4531 > "$work/local.log" 2>&1 &
  for _ in $(seq 1 150); do $porter local status >/dev/null 2>&1 && return 0; sleep 0.2; done
  cat "$work/local.log"; return 1
}

echo "-- bookkeeping: moto completes each stack at once"
up --bookkeeping
for n in 1 2 8; do
  service "$work/r$n" "$n" "$n"
  echo "  $n region(s):"
  deploy "$work/r$n" "release 1"
  deploy "$work/r$n" "release 2"
done
$porter local down >/dev/null 2>&1 || true

echo
echo "-- a stack held in progress: 2 regions, instances answering after $hold s"
if [ "$(id -u)" != 0 ] || [ "$(uname)" != Linux ]; then
  echo "  skipped: instances run only as root on Linux"
  exit 0
fi
up
if ! $porter local status | grep -q "^instances: running"; then
  echo "  skipped: $($porter local status | grep '^instances')"
  exit 0
fi
service "$work/held" 2 held
sed -i "s|^exec python3 serve.py|sleep $hold; exec python3 serve.py|" "$work/held/start"
out=$(deploy "$work/held" "held release 1")
echo "$out"
echo "  again: provision checks every ${notice:-10} s whatever the stack before took (docs/architecture.md, \"Waits\")"
deploy "$work/held" "held release 2"
"${CARGO_TARGET_DIR:-$root/target}/debug/examples/waits" "$hold"
