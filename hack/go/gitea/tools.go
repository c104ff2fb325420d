//go:build tools

// Package tools pins the forge the pull-request tests run against: Gitea's server, built from the Go module
// proxy with CGO and the sqlite tags (hack/build-cluster-binaries gitea). Gitea's go.mod carries replace
// directives, which `go install pkg@version` refuses; go.mod copies them here instead.
package tools

import (
	_ "code.gitea.io/gitea"
)
