"""The lesson's own changes as Python (scale, set image, undo, clean up).

The course's tests and demos use them.

These are what the student must do with kubectl in the notebooks, so no graded kernel can import
them.
"""

from __future__ import annotations

from autograder.shared import k8s
from autograder.shared.provider import Lab


def scale(lab: Lab, name: str, replicas: int) -> None:
    """`kubectl scale deployment NAME --replicas=N`."""
    lab.apps.patch_namespaced_deployment_scale(
        name, lab.namespace, {"spec": {"replicas": replicas}}
    )


def set_image(lab: Lab, name: str, container: str, image: str) -> None:
    """`kubectl set image deployment/NAME CONTAINER=IMAGE`: starts a rolling update."""
    patch = {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}}
    lab.apps.patch_namespaced_deployment(name, lab.namespace, patch)


def rollback(lab: Lab, name: str, to_revision: int | None = None) -> int:
    """`kubectl rollout undo`: put an earlier revision's pod template back; returns its number.

    The Deployment API has no undo call; kubectl copies the old ReplicaSet's template into the
    Deployment, and the controller then gives that template the next revision number.
    """
    deployment = lab.apps.read_namespaced_deployment(name, lab.namespace)
    current = k8s.revision(deployment)
    by_number = {k8s.revision(rs): rs for rs in k8s.owned_replica_sets(lab.apps, deployment)}
    earlier = [number for number in by_number if number < current]
    target = to_revision if to_revision is not None else max(earlier, default=None)
    if target is None or target not in by_number or target == current:
        raise ValueError(
            f"deployment/{name} has no earlier revision to roll back to "
            f"(current {current}, known {sorted(by_number)})"
        )
    template = lab.api.sanitize_for_serialization(by_number[target].spec.template)
    template["metadata"]["labels"].pop("pod-template-hash", None)
    replace = [{"op": "replace", "path": "/spec/template", "value": template}]
    lab.apps.patch_namespaced_deployment(name, lab.namespace, replace)
    return target


def delete_by_label(lab: Lab, selector: str) -> list[str]:
    """`kubectl delete deployment,service -l SELECTOR`: the lesson's cleanup step."""
    deleted = []
    for deployment in lab.apps.list_namespaced_deployment(
        lab.namespace, label_selector=selector
    ).items:
        lab.apps.delete_namespaced_deployment(deployment.metadata.name, lab.namespace)
        deleted.append(f"deployment/{deployment.metadata.name}")
    for service in lab.core.list_namespaced_service(lab.namespace, label_selector=selector).items:
        lab.core.delete_namespaced_service(service.metadata.name, lab.namespace)
        deleted.append(f"service/{service.metadata.name}")
    return deleted
