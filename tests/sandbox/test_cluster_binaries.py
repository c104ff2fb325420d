"""A cluster builds only the controllers it runs: the README's first command (an Argo CD demo) does not wait for
Flux's two builds on a fresh machine, nor a Flux cluster for Argo CD's."""

from __future__ import annotations

import pytest

from sandbox.cluster import ClusterBinaries, ClusterBinariesUnavailableError, RealCluster

pytestmark = [pytest.mark.kube, pytest.mark.real_controllers]


def test_an_argocd_cluster_asks_for_no_flux_binaries(real_cluster: object) -> None:
    # real_cluster: the session's cluster made sure every binary is built, so this only reads the cache.
    binaries = ClusterBinaries.ensure(flux=False, argocd=True)
    assert binaries.flux is None and binaries.flux_crds is None
    assert binaries.argocd is not None and not binaries.missing()
    with pytest.raises(ClusterBinariesUnavailableError, match=r"flux=True needs ClusterBinaries.ensure\(flux=True\)"):
        RealCluster(binaries=binaries, flux=True)
    with pytest.raises(KeyError):
        binaries.program("source-controller")


def test_a_flux_cluster_asks_for_no_argocd_binaries(real_cluster: object) -> None:
    binaries = ClusterBinaries.ensure()
    assert binaries.flux is not None and binaries.flux_crds is not None and binaries.argocd is None
    assert not binaries.missing()
    with pytest.raises(ClusterBinariesUnavailableError, match=r"argocd=True needs"):
        RealCluster(binaries=binaries, argocd=True)
