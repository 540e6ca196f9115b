//go:build tools

// Package tools records the etcd command hack/build-k8s.sh builds (the main
// package of go.etcd.io/etcd/server/v3), so `go mod tidy` keeps its modules.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
