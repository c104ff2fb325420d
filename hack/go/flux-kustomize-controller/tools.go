//go:build tools

// Package tools pins Flux's kustomize-controller. Its own go.mod replaces ./api with a local path, which
// `go install pkg@version` refuses; this module uses the tagged api module and repeats the other replaces.
package tools

import _ "github.com/fluxcd/kustomize-controller"
