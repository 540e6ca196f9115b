// Package atomicfile replaces files so that no reader ever sees half of
// one: containerd watches /etc/cni/net.d, `usernode status` reads the
// status file while the supervisor rewrites it, and a crash in the middle
// of writing a key or a kubeconfig must leave the old one.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes b to a temporary file beside path, with mode from its
// creation (a key is never readable by others, not even for a moment),
// syncs it and renames it over path.
func Write(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
