//go:build tools

// Package tools pins etcd's server for the tests' kube-apiserver.
package tools

import _ "go.etcd.io/etcd/server/v3"
