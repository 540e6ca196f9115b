//go:build tools

// Package tools pins the developer tools `make lint` builds into bin/, so
// that their versions live in tools/go.sum, not in the main module's go.mod.
// It is a module of its own: the main module's ./... neither builds nor
// tests it, and usernode's dependencies do not gain the linters' ones.
package tools

import (
	_ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
)
