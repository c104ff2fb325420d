//go:build tools

// Package tools pins the Kubernetes programs the tests run: kube-apiserver, kube-controller-manager and
// kube-scheduler (built together in one `go build`) and KWOK (the same dependency graph, so its k8s.io
// libraries are the ones already compiled). k8s.io/kubernetes replaces its staging modules with ./staging
// paths, which `go install pkg@version` refuses; go.mod gives each its published v0.N.M twin instead.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
