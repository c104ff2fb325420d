"""Do the pods of a Deployment really run the release? Pure judgements over ReplicaSets and Pods (dicts), no I/O.

A Deployment whose status says "rolled out" names the image in its pod template; that is not proof that its pods
run it (a pod can fall out of Ready after the count was taken, and a node can resolve a tag or a mirror to other
bytes). The rules: the Deployment's new ReplicaSet is found as kubectl finds it, its active pods are all Ready,
and where the expected image names a digest, every matching container reports that digest in its ``imageID``.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from rules.readiness import Judgement, _cap, image_matches, parse_time

POD_TEMPLATE_HASH = "pod-template-hash"
_EPOCH = datetime.min.replace(tzinfo=UTC)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def controlled_by(obj: dict[str, Any], uid: Any) -> bool:
    """The object's controller owner reference names ``uid`` (metav1.GetControllerOf)."""
    refs = _meta(obj).get("ownerReferences") or []
    return bool(uid) and any(
        isinstance(ref, dict) and ref.get("controller") is True and ref.get("uid") == uid for ref in refs
    )


def _without_hash(template: Any) -> Any:
    """The pod template with the ``pod-template-hash`` label taken out, as upstream's EqualIgnoreHash compares."""
    if not isinstance(template, dict):
        return template
    clean = copy.deepcopy(template)
    labels = (clean.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return clean


def new_replicaset(deployment: dict[str, Any], replicasets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Deployment's new ReplicaSet, as kubectl's FindNewReplicaSet (k8s.io/kubectl/pkg/util/deployment/
    deployment.go): of the ReplicaSets the Deployment controls, oldest first (ties by name), the first whose
    pod template equals the Deployment's apart from the pod-template-hash label."""
    uid = _meta(deployment).get("uid")
    wanted = _without_hash((deployment.get("spec") or {}).get("template"))
    owned = [rs for rs in replicasets if controlled_by(rs, uid)]
    owned.sort(key=lambda rs: (parse_time(_meta(rs).get("creationTimestamp")) or _EPOCH, str(_meta(rs).get("name"))))
    for rs in owned:
        if _without_hash((rs.get("spec") or {}).get("template")) == wanted:
            return rs
    return None


def is_active(pod: dict[str, Any]) -> bool:
    """As the controllers' IsPodActive (k8s.io/kubernetes/pkg/controller/controller_utils.go): not finished, not
    being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not _meta(pod).get("deletionTimestamp")


def _ready(pod: dict[str, Any]) -> tuple[bool, str]:
    """Whether the pod's Ready condition is True; else why not (the condition's reason, or a waiting container's)."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            if condition.get("status") == "True":
                return True, ""
            reason = str(condition.get("reason") or "Ready is " + str(condition.get("status")))
            break
    else:
        reason = "no Ready condition yet"
    for container in status.get("containerStatuses") or []:
        waiting = ((container or {}).get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return (
                False,
                f"{_cap(reason, 40)}, container {_cap(container.get('name'), 63)}: {_cap(waiting['reason'], 40)}",
            )
    return False, _cap(reason, 80)


def expected_digest(expected_image: str | None) -> str | None:
    """The digest an expected image names (``repo@sha256:...``, ``repo:tag@sha256:...``, ``sha256:...``), if any."""
    if not expected_image:
        return None
    if "@" in expected_image:
        return expected_image.rsplit("@", 1)[1]
    if expected_image.startswith("sha256:"):
        return expected_image
    return None


def image_id_digest(image_id: str) -> str | None:
    """The repository digest in a container's ``imageID`` (``repo@sha256:...``, with or without a
    ``docker-pullable://`` scheme); None where the runtime reported no repository digest."""
    if "@" not in image_id:
        return None
    return image_id.rsplit("@", 1)[1]


def judge_pods(
    deployment: dict[str, Any],
    replicasets: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    *,
    expected_image: str | None = None,
    container: str | None = None,
) -> Judgement:
    """Ready when every active pod of the Deployment's new ReplicaSet is Ready and, where ``expected_image``
    names a digest, each container that runs it (``container`` only, if given) reports that digest."""
    name = _cap(_meta(deployment).get("name", "?"), 63)
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    if replicas == 0:
        return Judgement.ready(f"Deployment {name} is scaled to 0: no pods to check")
    rs = new_replicaset(deployment, replicasets)
    if rs is None:
        return Judgement.waiting(f"Deployment {name}: its new ReplicaSet is not listed yet")
    rs_name = _cap(_meta(rs).get("name", "?"), 63)
    mine = [pod for pod in pods if controlled_by(pod, _meta(rs).get("uid")) and is_active(pod)]
    if len(mine) < replicas:
        return Judgement.waiting(f"ReplicaSet {rs_name}: {len(mine)} of {replicas} pods listed")
    for pod in sorted(mine, key=lambda p: str(_meta(p).get("name"))):
        ready, why = _ready(pod)
        if not ready:
            return Judgement.waiting(
                f"pod {_cap(_meta(pod).get('name'), 63)} of ReplicaSet {rs_name} is not Ready ({why})"
            )
    digest = expected_digest(expected_image)
    if digest is None or expected_image is None:
        return Judgement.ready(f"Deployment {name}: {len(mine)} pods of ReplicaSet {rs_name} Ready")
    for pod in sorted(mine, key=lambda p: str(_meta(p).get("name"))):
        failure = _digest_problem(pod, expected_image, digest, container)
        if failure is not None:
            return failure
    return Judgement.ready(
        f"Deployment {name}: {len(mine)} pods of ReplicaSet {rs_name} Ready, running {digest[:19]}..."
    )


def _digest_problem(pod: dict[str, Any], expected_image: str, digest: str, container: str | None) -> Judgement | None:
    pod_name = _cap(_meta(pod).get("name"), 63)
    spec_containers = (pod.get("spec") or {}).get("containers") or []
    names = {
        c.get("name")
        for c in spec_containers
        if isinstance(c, dict)
        and (c.get("name") == container if container else image_matches(str(c.get("image", "")), expected_image))
    }
    if not names:
        # The Deployment's template named the image; a pod of its new ReplicaSet that does not is not this release.
        return Judgement.failed(f"pod {pod_name} has no container running {_cap(expected_image, 200)}")
    statuses = {
        s.get("name"): s for s in (pod.get("status") or {}).get("containerStatuses") or [] if isinstance(s, dict)
    }
    for container_name in sorted(str(n) for n in names):
        image_id = str((statuses.get(container_name) or {}).get("imageID") or "")
        if not image_id:
            return Judgement.waiting(f"pod {pod_name}: container {_cap(container_name, 63)} reports no imageID yet")
        running = image_id_digest(image_id)
        if running != digest:
            shown = _cap(image_id, 200)
            return Judgement.failed(
                f"pod {pod_name} container {_cap(container_name, 63)} runs {shown}, want {_cap(digest, 80)}: "
                "the node resolved the image to other content (a mirror, a pull-through cache or a re-pushed tag); "
                "delete the pod to pull again, or check the registry"
                if running is not None
                else f"pod {pod_name} container {_cap(container_name, 63)} reports imageID {shown} without a "
                f"repository digest, want {_cap(digest, 80)}: the container runtime cannot show it runs that digest"
            )
    return None
