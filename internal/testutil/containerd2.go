package testutil

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Containerd2 is the containerd 2.x binary (hack/build-containerd.sh's
// build) in the directory `make test` names in USERNODE_CONTAINERD2; its
// ctr and shim are beside it. Without it the test is skipped and says how
// to get it, except in CI (CI=true), where it fails, as K8sBin does.
func Containerd2(t testing.TB) string {
	t.Helper()
	dir, skip, fatal := containerd2Dir(testing.Short(), os.Getenv)
	switch {
	case fatal != "":
		t.Fatal(fatal)
	case skip != "":
		t.Skip(skip)
	}
	bin := filepath.Join(dir, "containerd")
	if fi, err := os.Stat(bin); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o001 == 0 {
		t.Fatalf("USERNODE_CONTAINERD2=%s holds no containerd that other users may run (%v): %s", dir, err, containerd2Fix)
	}
	return bin
}

const containerd2Fix = "run `make test`, which builds it and sets it, or set USERNODE_CONTAINERD2 to the directory `hack/build-containerd.sh DIR` prints (DIR readable by the test user, not under /tmp)"

// containerd2Dir is Containerd2's decision: the directory, or why the test
// skips or fails.
func containerd2Dir(short bool, getenv func(string) string) (dir, skip, fatal string) {
	if short {
		return "", "runs containerd 2.x: run without -short (make test)", ""
	}
	if dir = getenv("USERNODE_CONTAINERD2"); dir != "" {
		return dir, "", ""
	}
	if ci, _ := strconv.ParseBool(getenv("CI")); ci {
		return "", "", "CI is set but USERNODE_CONTAINERD2 is not, so the tests of containerd 2.x would be skipped: " + containerd2Fix
	}
	return "", "needs containerd 2.x in USERNODE_CONTAINERD2: " + containerd2Fix, ""
}
