package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The runtime dir's lock: one holder at a time, and a lock taken on a
// file that a stopping holder removed meanwhile does not count (two nodes
// once ran at once that way).
func TestRuntimeLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	l, err := acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acquire(dir); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("a second acquire while held: %v", err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !isAt(f, path) {
		t.Error("the file the path names: isAt says no")
	}
	if err := l.release(); err != nil {
		t.Fatal(err)
	}
	if isAt(f, path) {
		t.Error("a removed lock file: isAt says yes")
	}
	// The path names a new file now: a lock on the old one is stale.
	l2, err := acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	if isAt(f, path) {
		t.Error("a file replaced at the path: isAt says yes")
	}
	if err := l2.release(); err != nil {
		t.Error(err)
	}
}
