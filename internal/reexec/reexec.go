// Package reexec lets usernode run parts of itself in new namespaces by
// re-executing /proc/self/exe under another argv[0], with no shell between.
// A Go program cannot unshare a user namespace once its runtime has started
// threads, so every namespace entry point is a fresh exec.
package reexec

import (
	"os"
	"os/exec"
)

var entries = map[string]func(){}

// Register names an entry point. Call it from init().
func Register(name string, f func()) {
	if _, dup := entries[name]; dup {
		panic("reexec: duplicate entry " + name)
	}
	entries[name] = f
}

// EntryEnv names the entry point instead of argv[0], for a re-exec that
// another program starts: nsenter runs this binary with its path as
// argv[0]. Init removes it, so that it does not reach what the entry
// point starts.
const EntryEnv = "_USERNODE_REEXEC_ENTRY"

// Init runs the entry point named by argv[0] (or EntryEnv), if any, and
// reports whether it did. main() returns straight away when it did.
func Init() bool {
	name := os.Args[0]
	if e, ok := os.LookupEnv(EntryEnv); ok {
		name = e
		_ = os.Unsetenv(EntryEnv) // fails only for an invalid name
	}
	if f, ok := entries[name]; ok {
		f()
		return true
	}
	return false
}

// Command prepares a re-exec of this binary as the named entry point.
func Command(name string, args ...string) *exec.Cmd {
	return &exec.Cmd{Path: "/proc/self/exe", Args: append([]string{name}, args...)}
}
