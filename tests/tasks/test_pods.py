"""The pods rules of tasks/pods.py, ported from kubectl's FindNewReplicaSet and EqualIgnoreHash
(k8s.io/kubectl/pkg/util/deployment/deployment.go) and the controllers' IsPodActive
(k8s.io/kubernetes/pkg/controller/controller_utils.go). The same rules meet the real controller-manager's and
KWOK's objects in tests/real/test_flux_verification.py."""

from __future__ import annotations

import copy
from typing import Any

from tasks.pods import expected_digest, image_id_digest, judge_pods, new_replicaset

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
IMAGE = f"registry.local/web:1.2.3@{DIGEST}"


def template(image: str = IMAGE, pod_hash: str | None = None) -> dict[str, Any]:
    labels = {"app": "web"} | ({"pod-template-hash": pod_hash} if pod_hash else {})
    return {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": image}]}}


def deployment(image: str = IMAGE, replicas: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "prod", "uid": "d-1"},
        "spec": {"replicas": replicas, "template": template(image)},
    }


def replicaset(
    name: str, image: str = IMAGE, *, created: str = "2026-12-06T10:00:00Z", owner: str = "d-1"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"rs-{name}",
            "creationTimestamp": created,
            "ownerReferences": [{"kind": "Deployment", "uid": owner, "controller": True}],
        },
        "spec": {"template": template(image, pod_hash=name.rsplit("-", 1)[1])},
    }


def pod(
    name: str, rs: str, *, ready: bool = True, image_id: str | None = f"registry.local/web@{DIGEST}", **meta: Any
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [
            {
                "name": "web",
                "imageID": image_id or "",
                "state": {} if ready else {"waiting": {"reason": "ImagePullBackOff"}},
            }
        ],
    }
    return {
        "metadata": {"name": name, "ownerReferences": [{"uid": f"rs-{rs}", "controller": True}], **meta},
        "spec": {"containers": [{"name": "web", "image": IMAGE}]},
        "status": status,
    }


def test_the_new_replicaset_is_the_oldest_with_the_deployment_s_template_apart_from_the_hash() -> None:
    old = replicaset("web-1111", "registry.local/web:1.2.2", created="2026-12-06T09:00:00Z")
    new = replicaset("web-2222", created="2026-12-06T10:00:00Z")
    later_twin = replicaset("web-3333", created="2026-12-06T11:00:00Z")
    foreign = replicaset("web-0000", created="2026-12-06T08:00:00Z", owner="someone-else")
    assert new_replicaset(deployment(), [later_twin, old, foreign, new]) is new
    assert new_replicaset(deployment("registry.local/web:9.9.9"), [old, new]) is None
    not_controller = copy.deepcopy(new)
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    assert new_replicaset(deployment(), [not_controller]) is None


def test_ready_pods_running_the_digest_pass() -> None:
    verdict = judge_pods(
        deployment(), [replicaset("web-2222")], [pod("a", "web-2222"), pod("b", "web-2222")], expected_image=IMAGE
    )
    assert verdict.state == "ready"
    assert verdict.message == "Deployment web: 2 pods of ReplicaSet web-2222 Ready, running sha256:aaaaaaaaaaaa..."


def test_one_pod_on_another_digest_fails_and_names_it() -> None:
    pods = [pod("a", "web-2222"), pod("b", "web-2222", image_id=f"docker-pullable://registry.local/web@{OTHER}")]
    verdict = judge_pods(deployment(), [replicaset("web-2222")], pods, expected_image=IMAGE)
    assert verdict.state == "failed"
    assert verdict.message.startswith(f"pod b container web runs docker-pullable://registry.local/web@{OTHER}")


def test_an_image_id_without_a_repository_digest_fails() -> None:
    pods = [pod("a", "web-2222", image_id="sha256:" + "c" * 64), pod("b", "web-2222")]
    verdict = judge_pods(deployment(), [replicaset("web-2222")], pods, expected_image=IMAGE)
    assert verdict.state == "failed"
    assert "without a repository digest" in verdict.message


def test_waits_for_missing_pods_unready_pods_and_image_ids() -> None:
    rs = [replicaset("web-2222")]
    assert judge_pods(deployment(), rs, [pod("a", "web-2222")]).message == "ReplicaSet web-2222: 1 of 2 pods listed"
    unready = judge_pods(deployment(), rs, [pod("a", "web-2222"), pod("b", "web-2222", ready=False)])
    assert unready.state == "waiting"
    assert (
        unready.message
        == "pod b of ReplicaSet web-2222 is not Ready (ContainersNotReady, container web: ImagePullBackOff)"
    )
    no_id = judge_pods(
        deployment(), rs, [pod("a", "web-2222", image_id=None), pod("b", "web-2222")], expected_image=IMAGE
    )
    assert (no_id.state, no_id.message) == ("waiting", "pod a: container web reports no imageID yet")
    assert judge_pods(deployment(), [], []).message == "Deployment web: its new ReplicaSet is not listed yet"


def test_terminating_finished_and_other_replicasets_pods_do_not_count() -> None:
    rs = [replicaset("web-1111", "registry.local/web:1.2.2", created="2026-12-06T09:00:00Z"), replicaset("web-2222")]
    pods = [
        pod("a", "web-2222"),
        pod("b", "web-2222", ready=False, deletionTimestamp="2026-12-06T10:01:00Z"),
        pod("c", "web-1111", ready=False),
        {**pod("d", "web-2222", ready=False), "status": {"phase": "Failed"}},
    ]
    assert judge_pods(deployment(), rs, pods).message == "ReplicaSet web-2222: 1 of 2 pods listed"
    assert judge_pods(deployment(), rs, [*pods, pod("e", "web-2222")]).state == "ready"


def test_no_digest_expected_checks_readiness_only_and_zero_replicas_need_no_pods() -> None:
    pods = [pod("a", "web-2222", image_id=f"registry.local/web@{OTHER}"), pod("b", "web-2222")]
    assert judge_pods(deployment(), [replicaset("web-2222")], pods, expected_image="1.2.3").state == "ready"
    assert judge_pods(deployment(replicas=0), [], []).state == "ready"


def test_a_named_container_is_the_one_checked() -> None:
    two = deployment()
    sidecar = {"name": "proxy", "image": "registry.local/proxy:1"}
    two["spec"]["template"]["spec"]["containers"].append(sidecar)
    rs = replicaset("web-2222")
    rs["spec"]["template"]["spec"]["containers"].append(sidecar)
    pods = []
    for name in ("a", "b"):
        p = pod(name, "web-2222")
        p["spec"]["containers"].append(sidecar)
        p["status"]["containerStatuses"].append({"name": "proxy", "imageID": f"registry.local/proxy@{OTHER}"})
        pods.append(p)
    assert judge_pods(two, [rs], pods, expected_image=IMAGE).state == "ready"
    assert judge_pods(two, [rs], pods, expected_image=DIGEST, container="proxy").state == "failed"


def test_digests_are_read_from_references_and_image_ids() -> None:
    assert expected_digest(IMAGE) == DIGEST
    assert expected_digest(DIGEST) == DIGEST
    assert expected_digest("registry.local/web:1.2.3") is None
    assert expected_digest(None) is None
    assert image_id_digest(f"docker-pullable://registry.local/web@{DIGEST}") == DIGEST
    assert image_id_digest("sha256:" + "c" * 64) is None
