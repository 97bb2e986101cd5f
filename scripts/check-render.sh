#!/usr/bin/env bash
# `porter render` output must pass cfn-lint: the example, and the example
# with a stack_definition_path override merged in.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for region in us-west-2 us-east-1; do
  "${CARGO_TARGET_DIR:-target}/debug/porter" render -e staging -r "$region" examples/hello-service > "$out/hello-$region.json" 2>/dev/null
done
cp -r examples/hello-service "$out/svc"
cat > "$out/svc/.porter/extra.json" <<'JSON'
{"Resources": {"AutoScalingGroup": {"Properties": {"MaxSize": "4"}},
               "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {
                 "MetricName": "CPUUtilization", "Namespace": "AWS/EC2", "Statistic": "Average",
                 "Period": 60, "EvaluationPeriods": 3, "Threshold": 90, "ComparisonOperator": "GreaterThanThreshold",
                 "Dimensions": [{"Name": "AutoScalingGroupName", "Value": {"Ref": "AutoScalingGroup"}}]}}}}
JSON
sed -i 's/^  instance_type: t3.micro/  instance_type: t3.micro\n  stack_definition_path: .porter\/extra.json/' "$out/svc/.porter/config"
"${CARGO_TARGET_DIR:-target}/debug/porter" render -e staging -r us-west-2 "$out/svc" > "$out/override.json" 2>/dev/null
grep -q '"Alarm"' "$out/override.json"
grep -q '"MaxSize": "4"' "$out/override.json"
.venv/bin/cfn-lint "$out"/*.json
echo "cfn-lint: rendered templates clean"
