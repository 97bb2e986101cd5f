#!/usr/bin/env bash
# `make bench`: the figures behind docs/performance.md, printed side by
# side. Builds what it measures first (the release bootstraps, the Rust
# floor, the harness); nothing here is a pass/fail check.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/.venv/bin:$PATH"
target=${CARGO_TARGET_DIR:-$root/target}
# The functions: one crate each under functions/.
mapfile -t functions < <(ls functions)

echo "== building: release bootstraps, the floor, the harness"
# The nine exactly as `make lambda` builds them (so its build is reused),
# the floor on its own: built together, its crate would change the feature
# set the nine's dependencies are compiled with, and rebuild them all.
bins=(); for f in "${functions[@]}"; do bins+=(--bin "$f"); done
export CARGO_LAMBDA_COMPILER=cargo
cargo lambda build --release "${bins[@]}" 2>&1 | tail -1
cargo lambda build --release --bin floor 2>&1 | tail -1
# The harness, the CLI and the examples, as `make test` builds them (with
# clippy as the workspace's compiler), so a bench after a test rebuilds
# nothing.
make --no-print-directory -s build-checked 2>&1 | tail -1

echo
echo "== size (x86_64 release bootstrap; the zip is what Lambda receives)"
.venv/bin/python - "$target/lambda" "${functions[@]}" floor <<'PY'
import io, os, sys, zipfile
base, names = sys.argv[1], sys.argv[2:]
print(f"{'function':<12} {'bootstrap MB':>13} {'zipped MB':>10}")
for n in names:
    path = os.path.join(base, n, "bootstrap")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, "bootstrap")
    print(f"{n:<12} {os.path.getsize(path) / 1e6:>13.2f} {len(buf.getvalue()) / 1e6:>10.2f}")
PY

echo
echo "== cold start behind a local Runtime API, one malformed event each"
# The Python handler creates the boto3 clients its Rust twin creates.
declare -A clients=(
  [pack]="s3 ssm codepipeline"
  [provision]="sts ssm cloudformation elb autoscaling s3 codepipeline"
  [promote]="sts ssm cloudformation elb autoscaling s3 codepipeline"
  [prune]="sts ssm cloudformation elb autoscaling s3 codepipeline"
  [pipeline]="stepfunctions codepipeline s3"
  [trigger]="codepipeline"
  [lease]="dynamodb stepfunctions"
  [notify]="sns s3 ssm"
  [hooks]="codebuild s3"
)
args=(floor "$target/lambda/floor/bootstrap")
for f in "${functions[@]}"; do args+=("$f" "$target/lambda/$f/bootstrap"); done
for f in pack provision pipeline; do
  args+=("python:$f" "$root/.venv/bin/python $root/scripts/bench/python_handler.py ${clients[$f]}")
done
"$target/debug/coldstart" --rounds "${BENCH_ROUNDS:-7}" "${args[@]}"

echo
echo "== deploys on the local stack: state transitions, wall time, the CLI's first line"
scripts/bench/deploys.sh

echo
echo "== scale: promote with 200 instances, prune with 1,000 old stacks"
"$target/debug/examples/scale" --instances "${BENCH_INSTANCES:-200}" --stacks "${BENCH_STACKS:-1000}"
