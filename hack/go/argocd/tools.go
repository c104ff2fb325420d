//go:build tools

// Package tools keeps the wrapper's pins in one place for hack/build-cluster-binaries: the slim Argo CD binary
// is the main package in cmd/argocd-slim (application controller, repo server, git askpass).
package tools

import _ "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
