"""SIMULATOR. Plays the Deployment controller's ReplicaSet and the kubelet's pods on an API server that runs
neither (the sandbox's and the tests' bare kube-apiserver).

Verification checks the pods of a Deployment's new ReplicaSet (:mod:`tasks.pods`); on the real cluster the
controller-manager and KWOK make them. Here :func:`run_pods` makes the same objects the way they do: a ReplicaSet
the Deployment controls, with the Deployment's pod template plus a ``pod-template-hash`` label, and that many
pods it controls, Running and Ready, each container's ``imageID`` a repository digest (:func:`image_id`, the rule
``sandbox/kwok/stages.yaml`` follows too). Nothing in ``flows/``, ``tasks/`` or ``promote/`` imports it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

POD_TEMPLATE_HASH = "pod-template-hash"
_TAG = re.compile(r"(:[^:/@]+)?(@.*)?$")


def image_id(image: str) -> str:
    """What a container runtime reports as ``imageID`` for ``image``: its repository at the digest the image names,
    else at a digest made up from the reference (this sandbox has no registry to resolve a tag against)."""
    repository = _TAG.sub("", image, count=1)
    if "@" in image:
        return f"{repository}@{image.rsplit('@', 1)[1]}"
    return f"{repository}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def run_pods(api: client.ApiClient, namespace: str, name: str, *, image_ids: dict[str, str] | None = None) -> str:
    """Make Deployment ``name``'s current pod template run: its ReplicaSet (created once per template) with
    ``spec.replicas`` Ready pods, the older ReplicaSets' pods deleted. ``image_ids`` (container -> imageID) stands
    for a node that resolved an image to other content. Returns the ReplicaSet's name."""
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    deployment = custom.get_namespaced_custom_object("apps", "v1", namespace, "deployments", name)
    meta, spec = deployment["metadata"], deployment["spec"]
    template = copy.deepcopy(spec["template"])
    pod_hash = _template_hash(template)
    template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = pod_hash
    rs_name = f"{name}-{pod_hash}"
    replicas = spec.get("replicas", 1)
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": meta["uid"], "controller": True}
    selector = {**(spec.get("selector") or {}).get("matchLabels", {}), POD_TEMPLATE_HASH: pod_hash}
    rs: Any
    try:
        rs = custom.create_namespaced_custom_object(  # type: ignore[func-returns-value]
            "apps",
            "v1",
            namespace,
            "replicasets",
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "labels": template["metadata"]["labels"],
                    "ownerReferences": [owner],
                    "annotations": {"deployment.kubernetes.io/revision": str(meta.get("generation", 1))},
                },
                "spec": {"replicas": replicas, "selector": {"matchLabels": selector}, "template": template},
            },
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
        rs = custom.get_namespaced_custom_object("apps", "v1", namespace, "replicasets", rs_name)
    with contextlib.suppress(ApiException):  # the ServiceAccount controller's part: pods need the default one
        account: Any = {"metadata": {"name": "default"}}
        core.create_namespaced_service_account(namespace, account)
    _retire_older(custom, core, namespace, meta["uid"], rs_name)
    pod_owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name, "uid": rs["metadata"]["uid"]}
    for index in range(replicas):
        pod_name = f"{rs_name}-{index}"
        pod_spec = copy.deepcopy(template["spec"])
        pod: Any = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "labels": template["metadata"]["labels"],
                "ownerReferences": [{**pod_owner, "controller": True}],
            },
            "spec": pod_spec,
        }
        with contextlib.suppress(ApiException):  # 409: this template's pods run already
            core.create_namespaced_pod(namespace, pod)
            now = _now()
            statuses = [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": (image_ids or {}).get(c["name"]) or image_id(c["image"]),
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": now}},
                }
                for c in pod_spec["containers"]
            ]
            core.patch_namespaced_pod_status(
                pod_name,
                namespace,
                {
                    "status": {
                        "phase": "Running",
                        "startTime": now,
                        "conditions": [
                            {"type": kind, "status": "True", "lastTransitionTime": now}
                            for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                        ],
                        "containerStatuses": statuses,
                    }
                },
            )
    return rs_name


def _retire_older(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str, deployment_uid: str, current: str
) -> None:
    listed = custom.list_namespaced_custom_object("apps", "v1", namespace, "replicasets")
    for rs in listed.get("items", []):
        rs_meta = rs["metadata"]
        owners = rs_meta.get("ownerReferences") or []
        if rs_meta["name"] == current or not any(o.get("uid") == deployment_uid for o in owners):
            continue
        custom.patch_namespaced_custom_object(
            "apps", "v1", namespace, "replicasets", rs_meta["name"], {"spec": {"replicas": 0}}
        )
        hash_label = (rs_meta.get("labels") or {}).get(POD_TEMPLATE_HASH)
        if hash_label:
            with contextlib.suppress(ApiException):
                core.delete_collection_namespaced_pod(namespace, label_selector=f"{POD_TEMPLATE_HASH}={hash_label}")
