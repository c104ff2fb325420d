#!/usr/bin/env bash
# Build kube-apiserver and etcd from the Go module proxy, once, into a cache outside the repository.
# k8s.io/kubernetes carries replace directives for its staging modules, so `go install pkg@version`
# refuses it; a throwaway wrapper module that pins every staging module to its published v0.N.M builds it.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${PROMOTE_KUBE_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitops-promote/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}}"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

if [[ -x "$CACHE/kube-apiserver" && -x "$CACHE/etcd" ]]; then
  echo "$CACHE"
  exit 0
fi
command -v go >/dev/null || { echo "error: Go is required to build kube-apiserver (install Go 1.25+)" >&2; exit 1; }

mkdir -p "$CACHE"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
staging="v0.${KUBE_VERSION#v1.}"

build_kube() {
  local dir="$work/kube"
  mkdir -p "$dir" && cd "$dir"
  go mod init promote.local/kubewrapper >/dev/null 2>&1
  # Every k8s.io module that kubernetes' own go.mod replaces with ./staging/... gets its tagged twin.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" |
      awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >>go.mod
  cat >tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
  go mod tidy >/dev/null 2>&1 || go mod tidy
  echo "building kube-apiserver ${KUBE_VERSION} (several minutes on 2 cores)..." >&2
  go build -trimpath -ldflags="-s -w" -o "$CACHE/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$CACHE/kube-apiserver.tmp" "$CACHE/kube-apiserver"
}

build_etcd() {
  local dir="$work/etcd"
  mkdir -p "$dir" && cd "$dir"
  go mod init promote.local/etcdwrapper >/dev/null 2>&1
  cat >tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >/dev/null 2>&1
  go mod tidy >/dev/null 2>&1 || go mod tidy
  echo "building etcd ${ETCD_VERSION}..." >&2
  go build -trimpath -ldflags="-s -w" -o "$CACHE/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$CACHE/etcd.tmp" "$CACHE/etcd"
}

[[ -x "$CACHE/etcd" ]] || build_etcd
[[ -x "$CACHE/kube-apiserver" ]] || build_kube
echo "$CACHE"
