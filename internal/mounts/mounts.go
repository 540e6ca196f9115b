// Package mounts builds the node's view of the filesystem inside its mount
// namespace: the host's tree, with the directories the node components
// write made writable and kept under the node's state dir.
package mounts

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Propagate sets the propagation of the mount at path and all below it.
func Propagate(path string, flag uintptr) error {
	if err := unix.Mount("", path, "", flag|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("mount --make-r%s %s: %w", propName(flag), path, err)
	}
	return nil
}

func propName(flag uintptr) string {
	switch flag {
	case unix.MS_SHARED:
		return "shared"
	case unix.MS_SLAVE:
		return "slave"
	case unix.MS_PRIVATE:
		return "private"
	}
	return "?"
}

// Bind bind-mounts src onto dst (recursively).
func Bind(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	return nil
}

// Tmpfs mounts a fresh tmpfs on dst.
func Tmpfs(dst string, mode os.FileMode) error {
	if err := unix.Mount("tmpfs", dst, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("mode=%o", mode)); err != nil {
		return fmt.Errorf("tmpfs on %s: %w", dst, err)
	}
	return nil
}

// CopyUp replaces dir with a writable tmpfs copy of itself, so the host's
// files stay visible inside while changes stay inside. scratch must be an
// empty, writable directory (on a tmpfs the caller owns); it is where the
// copy is built before it is moved over dir. Files the user cannot read
// (/etc/shadow, say) are left out: the node has no use for them.
func CopyUp(dir, scratch string) (skipped []string, err error) {
	if err := Tmpfs(scratch, 0o755); err != nil {
		return nil, err
	}
	skipped, err = CopyTree(dir, scratch)
	if err == nil {
		err = unix.Mount(scratch, dir, "", unix.MS_MOVE, "")
		if err != nil {
			err = fmt.Errorf("moving the copy of %s into place: %w", dir, err)
		}
	}
	if err != nil {
		_ = unix.Unmount(scratch, unix.MNT_DETACH)
	}
	return skipped, err
}

// CopyTree copies src into dst (which exists), keeping modes and symlinks.
// It returns the paths it could not read instead of failing on them.
func CopyTree(src, dst string) (skipped []string, err error) {
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, walkErr error) error {
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if walkErr != nil {
			if errors.Is(walkErr, fs.ErrPermission) {
				skipped = append(skipped, p)
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			return walkErr
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		switch {
		case d.IsDir():
			if rel == "." {
				return os.Chmod(dst, mode.Perm())
			}
			return os.Mkdir(target, mode.Perm()|0o700)
		case mode&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case mode.IsRegular():
			if err := copyFile(p, target, mode.Perm()); err != nil {
				if errors.Is(err, fs.ErrPermission) {
					skipped = append(skipped, p)
					return nil
				}
				return err
			}
		}
		// Sockets, fifos and devices have no place in a copy of /etc.
		return nil
	})
	if err != nil {
		return skipped, err
	}
	// Directories were made writable for the copy; give them their modes.
	return skipped, filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == dst {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		if info, err := os.Lstat(filepath.Join(src, rel)); err == nil {
			return os.Chmod(p, info.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close() // the copy's error is the one to report
		return err
	}
	return out.Close()
}
