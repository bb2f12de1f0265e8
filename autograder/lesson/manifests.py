"""Small Deployment manifests for the troubleshooting and beyond-the-lesson exercises."""

from __future__ import annotations

PART_LABEL = "lesson-part"
# A model server's start that refuses to serve without the setting naming its model's home, as a
# server started without its configuration does: the troubleshooting notebook's crash loop.
NEEDS_MODEL_STORE = [
    "python",
    "-c",
    """import os, runpy, sys
if not os.environ.get("MODEL_STORE"):
    sys.exit("MODEL_STORE is not set: no model to serve (the team keeps its models in /models)")
runpy.run_path("app.py", run_name="__main__")""",
]
# Ready only once the app answers, so a container that starts and then dies never counts as ready.
HEALTH_PROBE = {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1}


def deployment(
    name: str,
    image: str = "ml-api:v1",
    replicas: int = 1,
    *,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    command: list[str] | None = None,
    part: str = "extra",
    node_selector: dict[str, str] | None = None,
    probed: bool = False,
) -> dict:
    """A one-container Deployment labelled app=NAME, lesson-part=PART: clean-up is one selector."""
    labels = {"app": name, PART_LABEL: part}
    container: dict = {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "ports": [{"containerPort": 8080}],
    }
    resources = {key: value for key, value in (("requests", requests), ("limits", limits)) if value}
    if resources:
        container["resources"] = resources
    if command:
        container["command"] = command
    if probed:
        container["readinessProbe"] = HEALTH_PROBE
    pod_spec: dict = {"containers": [container]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def service(name: str, app: str, part: str = "extra") -> dict:
    """A ClusterIP Service, port 80 to pods labelled app=APP on 8080, labelled lesson-part=PART."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {PART_LABEL: part}},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
