package lxcusernic

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

func TestAllowed(t *testing.T) {
	u := &user.User{Username: "alice", Uid: "4242", Gid: "4242"}
	f := filepath.Join(t.TempDir(), "lxc-usernet")
	if err := os.WriteFile(f, []byte("# comment\nbob veth lxcbr0 10\nalice veth otherbr 10\nalice veth lxcbr0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Allowed(f, u, "lxcbr0")
	if err == nil || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "alice veth lxcbr0 10") {
		t.Fatalf("not allowed: %v; want the file and the line to add named", err)
	}
	if err := os.WriteFile(f, []byte("alice veth lxcbr0 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Allowed(f, u, "lxcbr0"); err != nil {
		t.Fatal(err)
	}
	if err := Allowed(filepath.Join(t.TempDir(), "missing"), u, "lxcbr0"); err == nil || !strings.Contains(err.Error(), "alice veth lxcbr0 10") {
		t.Fatalf("missing file: %v", err)
	}
}
