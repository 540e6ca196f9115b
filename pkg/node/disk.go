package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// MinStartFree is the free space `up` asks of the state dir's filesystem.
// A fresh node running make test-faults' two-pod workload used 130 MiB of
// it (etcd's first 64 MB WAL segment and its database, the imported pause
// and busybox images, the components' logs), and pods' images and
// writable layers need room beyond that.
const MinStartFree = 512 << 20

// lowFree is where status starts to warn: below it, the next image
// import or a busy etcd can fill the filesystem.
const lowFree = 256 << 20

// Disk is the state dir's filesystem, as measured now.
type Disk struct {
	Path  string `json:"path"`
	Free  uint64 `json:"freeBytes"`
	Total uint64 `json:"totalBytes"`
	// Warning is set when the filesystem is full or nearly so: what fails
	// then, and what to do.
	Warning string `json:"warning,omitempty"`
}

// DiskOf measures the filesystem that holds dir, or its nearest existing
// parent (a node not yet made has no state dir).
func DiskOf(dir string) (*Disk, error) {
	p := dir
	var fs unix.Statfs_t
	for {
		err := unix.Statfs(p, &fs)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.ENOENT) || filepath.Dir(p) == p {
			return nil, &os.PathError{Op: "statfs", Path: p, Err: err}
		}
		p = filepath.Dir(p)
	}
	// Bavail, not Bfree: the blocks reserved for root are not the user's.
	d := &Disk{Path: dir, Free: fs.Bavail * uint64(fs.Bsize), Total: fs.Blocks * uint64(fs.Bsize)}
	switch {
	case d.Free < 1<<20:
		d.Warning = fmt.Sprintf("the filesystem holding %s is FULL: etcd, the runtime and the kubelet fail their writes until space is freed (the node recovers by itself once it is; nothing is lost)", dir)
	case d.Free < lowFree || d.Free < d.Total/20:
		d.Warning = fmt.Sprintf("the filesystem holding %s is nearly full (%s free): the kubelet evicts pods below 1%% free (kubelet.EvictionHard), and a full disk stops etcd; free space there", dir, mib(d.Free))
	}
	return d, nil
}

// checkStartSpace is `up`'s refusal of a state dir with too little room
// to start a node, before anything is written.
func checkStartSpace(dir string) error {
	d, err := DiskOf(dir)
	if err != nil {
		return err
	}
	if d.Free < MinStartFree {
		return fmt.Errorf("the filesystem holding the state dir %s has %s free; a node needs at least %s to start: free space there, or put the node on another filesystem with --state-dir (`usernode down --purge` removes a node's state)",
			dir, mib(d.Free), mib(MinStartFree))
	}
	return nil
}

func mib(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }
