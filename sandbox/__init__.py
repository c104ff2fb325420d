"""Local stand-ins for the outside systems, for tests and for people trying the tool on one machine.

``sandbox.apiserver`` runs a real kube-apiserver + etcd on 127.0.0.1, started the way envtest does.
"""
