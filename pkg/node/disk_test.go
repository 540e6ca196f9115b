package node

import (
	"path/filepath"
	"strings"
	"testing"
)

// DiskOf measures a state dir that does not exist yet at its nearest
// parent, as `up` must before it makes it.
func TestDiskOfMissingDir(t *testing.T) {
	dir := t.TempDir()
	d, err := DiskOf(filepath.Join(dir, "not", "yet"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Total == 0 || d.Free > d.Total || !strings.HasSuffix(d.Path, "not/yet") {
		t.Errorf("DiskOf = %+v", d)
	}
}

func TestDiskOfRefusesRelativeNonsense(t *testing.T) {
	// A path whose every parent is missing ends at "/" or ".", which
	// exist: DiskOf never loops.
	if _, err := DiskOf("no/such/relative/dir"); err != nil {
		t.Errorf("relative path: %v", err)
	}
}
