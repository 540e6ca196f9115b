package mounts

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCopyTree(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "ssl", "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "hosts"), []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "ssl", "certs", "ca.pem"), []byte("PEM"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../proc/self/mounts", filepath.Join(src, "mtab")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "ro"), 0o555); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(src, "shadow")
	if err := os.WriteFile(secret, []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}

	skipped, err := CopyTree(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "hosts")); string(b) != "127.0.0.1 localhost\n" {
		t.Errorf("hosts = %q", b)
	}
	if fi, err := os.Stat(filepath.Join(dst, "ssl", "certs", "ca.pem")); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("ca.pem: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "mtab")); l != "../proc/self/mounts" {
		t.Errorf("mtab link = %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "ro")); fi == nil || fi.Mode().Perm() != 0o555 {
		t.Errorf("ro dir mode = %v", fi)
	}
	// Root reads anything, so only a non-root run sees the unreadable file
	// skipped.
	if os.Geteuid() != 0 {
		if len(skipped) != 1 || skipped[0] != secret {
			t.Errorf("skipped = %v, want [%s]", skipped, secret)
		}
	}
}
