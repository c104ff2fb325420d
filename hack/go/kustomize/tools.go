//go:build tools

// Package tools pins the kustomize CLI (v5.8.1: v5.8.3 needs Go 1.27) that Argo CD's repo server runs.
package tools

import _ "sigs.k8s.io/kustomize/kustomize/v5"
