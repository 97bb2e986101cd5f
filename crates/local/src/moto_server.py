"""moto's server, as the pinned `moto_server` starts it, with two costs
taken out of every request and two answers made as AWS makes them. Passed to the virtualenv's Python by
`porter_local::moto`, with `moto_server`'s own arguments.

- moto's dispatcher lists its own package folder (a `listdir`, then a
  `stat` per service, some 250) on every request, to see whether the host
  names a service, and does it under the lock all requests share. The
  folder does not change while moto runs: listed once here.
- werkzeug logs a line per request; the local stack sends moto's output
  to /dev/null, so the formatting and the handler's lock buy nothing.
- Auto Scaling's DetachLoadBalancerTargetGroups: AWS detaches a group
  whatever of its instances the target group holds; moto deregisters each
  of them and fails the call (InvalidTarget) on one it does not hold, as
  when an undo detaches a release that never served.
- DescribeTargetHealth: AWS reports a terminated instance target as
  `unused` (Target.InvalidState) at once; moto calls it healthy. (With
  instances running, the local front answers from real checks instead.)
- CloudFormation drops `AWS::NoValue` from a list (a statement an `Fn::If`
  leaves out); moto keeps a null there, which its IAM then refuses as a
  malformed policy. `scripts/offline-aws.sh` runs the infra checks on this
  server too.
"""

import logging
import sys

from moto import backends
from moto.autoscaling.models import AutoScalingBackend
from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup

MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: MODULES
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def detach_load_balancer_target_groups(self, group_name, target_group_arns):
    group = self.autoscaling_groups[group_name]
    group.target_group_arns = [a for a in group.target_group_arns if a not in target_group_arns]
    ids = {state.instance.id for state in group.instance_states}
    for arn in target_group_arns:
        held = self.elbv2_backend.target_groups.get(arn)
        targets = [{"Id": i} for i in sorted(ids) if held is not None and i in held.targets]
        if targets:
            self.elbv2_backend.deregister_targets(arn, targets)


AutoScalingBackend.detach_load_balancer_target_groups = detach_load_balancer_target_groups

_health_for = FakeTargetGroup.health_for


def health_for(self, target, ec2_backend):
    status = _health_for(self, target, ec2_backend)
    instance = ec2_backend.get_instance_by_id(target["Id"]) if target["Id"].startswith("i-") else None
    if target["Id"] in self.targets and instance is not None and instance.state in ("shutting-down", "terminated"):
        return FakeHealthStatus(
            target["Id"],
            self.targets[target["Id"]]["Port"],
            self.health_check_port,
            "unused",
            "Target.InvalidState",
            "Target is in the stopped or terminated state",
        )
    return status


FakeTargetGroup.health_for = health_for

from moto.cloudformation import parsing  # noqa: E402

_clean_json = parsing.clean_json


def clean_json(resource_json, resources_map):
    # The module's own recursion finds this one by its global name.
    if isinstance(resource_json, list):
        return [v for v in (clean_json(item, resources_map) for item in resource_json) if v is not None]
    return _clean_json(resource_json, resources_map)


parsing.clean_json = clean_json

from moto.server import main  # noqa: E402  (after the patch, as its users import it)

sys.exit(main(sys.argv[1:]))
