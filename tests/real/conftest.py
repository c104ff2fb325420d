"""Fixtures shared by the real-controller tests (tests/conftest.py starts the cluster itself)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from sandbox.cluster import RealCluster
from tests.conftest import make_real_namespace


@pytest.fixture
def production_namespace(
    request: pytest.FixtureRequest, real_cluster: RealCluster, real_admin: k8s.ApiClient, real_namespace: str
) -> Iterator[str]:
    """Production's namespace, beside staging's (``real_namespace``), with the same verifier binding."""
    with make_real_namespace(request, real_cluster, real_admin, f"{real_namespace}-prod", show_logs=False) as name:
        yield name
