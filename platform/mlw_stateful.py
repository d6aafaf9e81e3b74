"""Options for the resources that hold data or history: queues, the DLQ, image repositories, logs."""

from __future__ import annotations

import pulumi


def stateful(parent: pulumi.Resource, **extra) -> pulumi.ResourceOptions:
    """`pulumi destroy` refuses the resource, and removing it from the program leaves it in AWS."""
    return pulumi.ResourceOptions(parent=parent, protect=True, retain_on_delete=True, **extra)
