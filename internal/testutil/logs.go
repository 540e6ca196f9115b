package testutil

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// tailLines is how much of each log a failed test prints: CI keeps only
// the run's output, not the checkout's files, so the tails are what a
// flake leaves to diagnose it by.
const tailLines = 30

// SaveLogs keeps a node's logs when t has failed: it prints the tail of
// each component's and the supervisor's log, and copies the whole log dir
// to bin/test-logs/<test>/<node>/ in the checkout. Call it before a
// `down --purge` deletes the state dir. It does nothing when t passed.
func (e *Env) SaveLogs(t testing.TB, node string) {
	t.Helper()
	if !t.Failed() {
		return
	}
	src := filepath.Join(e.DataHome, "usernode", node, "var", "log", "usernode")
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Logf("node %s's logs: %v", node, err)
		return
	}
	var dst string
	if root, err := moduleRoot(); err == nil {
		dst = filepath.Join(root, "bin", "test-logs", safeName(t.Name()), node)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			dst = ""
		}
	}
	for _, ent := range ents {
		if !ent.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, ent.Name()))
		if err != nil {
			t.Logf("node %s's %s: %v", node, ent.Name(), err)
			continue
		}
		t.Logf("node %s's %s, last %d lines:\n%s", node, ent.Name(), tailLines, tail(b, tailLines))
		if dst != "" {
			_ = os.WriteFile(filepath.Join(dst, ent.Name()), b, 0o644)
		}
	}
	if dst != "" {
		t.Logf("node %s's logs kept in %s", node, dst)
	}
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	i := len(b)
	for ; n > 0 && i > 0; n-- {
		i = bytes.LastIndexByte(b[:i], '\n')
		if i < 0 {
			i = 0
		}
	}
	return strings.TrimPrefix(string(b[i:]), "\n")
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// safeName makes a subtest's name (slashes, spaces) one path element.
func safeName(name string) string { return unsafeChars.ReplaceAllString(name, "_") }
