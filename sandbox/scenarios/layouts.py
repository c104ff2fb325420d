"""The files the sandbox's scenarios lay out in their GitOps repositories: Argo CD Applications, Kustomize bases
and overlays, plain Deployments with setter markers, the example Helm chart with values per environment."""

from __future__ import annotations

from pathlib import Path

IMAGE_REPOSITORY = "registry.sandbox.local"
EXAMPLE_CHART = Path(__file__).resolve().parents[2] / "deployments" / "examples" / "helm" / "charts" / "shop"


def changelog(app: str) -> str:
    return f"# {app}\n\n- 1.0.0: first release\n"


def application(app: str, env: str, revision: str) -> str:
    """The simulator's Argo CD Application for ``app`` in ``env`` (the simulator reads ``targetRevision``)."""
    return f"""\
# Argo CD Application for {app} in {env}. gitops-promote changes only targetRevision below.
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: {app}-{env}
  namespace: argocd
  labels:
    app.kubernetes.io/part-of: {app}
spec:
  project: default
  source:
    repoURL: https://git.sandbox.local/{app}.git
    path: overlays/{env}
    targetRevision: {revision}   # the release this environment runs
  destination:
    server: https://kubernetes.default.svc
    namespace: {app}-{env}
  syncPolicy:
    automated: {{prune: true, selfHeal: true}}
"""


def base_deployment(app: str) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
spec:
  replicas: 3
  template:
    spec:
      containers:
      - name: {app}
        image: {IMAGE_REPOSITORY}/{app}:latest
"""


def _overlay(app: str, env: str, replicas: int, comment: str) -> str:
    return f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../../base
images:
- name: {app}
  newTag: 1.0.0{comment}
patches:
- patch: |-
    - op: replace
      path: /spec/replicas
      value: {replicas}
  target:
    kind: Deployment
"""


def kustomize_layout(app: str) -> dict[str, str]:
    """Applications per environment, a Kustomize base and an overlay per environment, all at 1.0.0."""
    return {
        f"apps/staging/{app}.yaml": application(app, "staging", "v1.0.0"),
        f"apps/production/{app}.yaml": application(app, "production", "v1.0.0"),
        "base/deployment.yaml": base_deployment(app),
        "overlays/staging/kustomization.yaml": _overlay(app, "staging", 2, "   # staging's image"),
        "overlays/production/kustomization.yaml": _overlay(app, "production", 5, "  # Promote by updating tag"),
        "src/CHANGELOG.md": changelog(app),
    }


def helm_layout(app: str) -> dict[str, str]:
    """The example chart (deployments/examples/helm), and per environment a values file that CI and
    gitops-promote write (image.tag and a version label; the rest, anchors included, stays)."""
    files = {f"charts/{app}/{p.relative_to(EXAMPLE_CHART)}": p.read_text() for p in EXAMPLE_CHART.rglob("*.yaml")}
    for env in ("staging", "production"):
        files[f"envs/{env}/values.yaml"] = f"""\
# {app} in {env}. gitops-promote writes image.tag and the version label below; everything else is yours.
replicaCount: {2 if env == "staging" else 5}
image:
  repository: {IMAGE_REPOSITORY}/{app}
  tag: "1.0.0"   # promoted from the environment before
podLabels:
  app.kubernetes.io/version: "1.0.0"
defaults: &limits {{cpu: 500m, memory: 256Mi}}
resources:
  limits: *limits
"""
    return files | {"src/CHANGELOG.md": changelog(app)}


def branch_overlay(app: str) -> str:
    return f"""\
# {app}: each environment's branch carries this overlay; staging is merged into main to promote.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../base
images:
- name: {app}
  newName: {IMAGE_REPOSITORY}/{app}
  newTag: 1.0.0
"""


def policy_deployment(app: str, env: str) -> str:
    return f"""\
# {app} in {env}: the image below is written by gitops-promote's image policy (Flux setter marker).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
  namespace: {app}-{env}
spec:
  replicas: {2 if env == "staging" else 5}
  template:
    spec:
      containers:
        - name: {app}
          image: {IMAGE_REPOSITORY}/{app}:1.0.0 # {{"$imagepolicy": "flux-system:{app}-{env}"}}
"""


def deployment(app: str, image: str, replicas: int = 2, setter: str = "") -> str:
    """A complete Deployment (selector and labels) as the real controllers apply it."""
    marker = f' # {{"$imagepolicy": "{setter}"}}' if setter else ""
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      containers:
        - name: {app}
          image: {image}{marker}
"""


def real_base(app: str) -> dict[str, str]:
    return {"base/deployment.yaml": deployment(app, app), "base/kustomization.yaml": "resources:\n- deployment.yaml\n"}


def images(app: str, base: str, comment: str) -> str:
    """A Kustomize overlay of ``base`` that sets the app's image (the promotion and CI write ``newTag``)."""
    return f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- {base}
images:
- name: {app}
  newName: {IMAGE_REPOSITORY}/{app}
  newTag: 1.0.0   # {comment}
"""


def child_application(app: str, env: str, url: str, namespace: str) -> str:
    """A real Argo CD Application in Git, applied by a root Application (app of apps)."""
    return f"""\
# Argo CD Application for {app} in {env}. gitops-promote changes only targetRevision below.
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: {app}-{env}
  namespace: {namespace}
spec:
  project: default
  source:
    repoURL: {url}
    path: deploy
    targetRevision: v1.0.0   # the release this environment runs
  destination:
    server: https://kubernetes.default.svc
    namespace: {app}-{env}
  syncPolicy:
    automated: {{prune: true, selfHeal: true}}
"""
