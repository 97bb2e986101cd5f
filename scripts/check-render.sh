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
# porter's own overlay shape: a security group the instances join by Ref
# (through porter's launch configuration id) and a machine image, plus a
# scaling property.
cat > "$out/svc/.porter/extra.json" <<'JSON'
{"Resources": {"AutoScalingGroup": {"Properties": {"MaxSize": "4"}},
               "AutoScalingLaunchConfiguration": {"Type": "AWS::AutoScaling::LaunchConfiguration",
                 "Properties": {"SecurityGroups": [{"Ref": "SSHSecurityGroup"}], "ImageId": "ami-6442af04"}},
               "SSHSecurityGroup": {"Type": "AWS::EC2::SecurityGroup", "Properties": {
                 "GroupDescription": "SSH Access",
                 "SecurityGroupIngress": [{"CidrIp": "203.0.113.0/24", "FromPort": 22, "IpProtocol": "tcp", "ToPort": 22}]}}}}
JSON
sed -i 's/^  instance_type: t3.micro/  instance_type: t3.micro\n  stack_definition_path: .porter\/extra.json/' "$out/svc/.porter/config"
"${CARGO_TARGET_DIR:-target}/debug/porter" render -e staging -r us-west-2 "$out/svc" > "$out/override.json" 2>/dev/null
grep -q '"SSHSecurityGroup"' "$out/override.json"
grep -q '"MaxSize": "4"' "$out/override.json"
grep -q '"ImageId": "ami-6442af04"' "$out/override.json"
if grep -q 'AutoScalingLaunchConfiguration' "$out/override.json"; then
  echo "render left porter's launch configuration in the template; it maps onto the launch template"; exit 1
fi
.venv/bin/cfn-lint "$out"/*.json
echo "cfn-lint: rendered templates clean"

# An overlay that reaches outside its stack is refused, naming where.
cat > "$out/svc/.porter/extra.json" <<'JSON'
{"Resources": {"AutoScalingGroup": {"Properties": {"LoadBalancerNames": ["production-web"]}}}}
JSON
if "${CARGO_TARGET_DIR:-target}/debug/porter" render -e staging -r us-west-2 "$out/svc" >/dev/null 2>"$out/refused.txt"; then
  echo "render took an overlay that sets LoadBalancerNames"; exit 1
fi
grep -q 'Resources.AutoScalingGroup.Properties.LoadBalancerNames' "$out/refused.txt"
echo "render: an overlay outside the allow-list is refused"
