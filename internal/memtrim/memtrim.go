// Package memtrim hands back what a long-lived helper process of the
// sandbox (the agent, init, the supervisor of `sandbox run`) holds only
// because of its start: the Go heap its setup left behind, and the pages
// of the usernode binary it mapped while starting.
//
// Every usernode process is the whole static binary (~35 MB). Starting
// one runs every package's init and the command's setup, and the kernel
// maps the binary's pages around each one touched (fault-around, 64 KiB
// at a time): measured on a sandbox, 14-15 MB of the binary stayed mapped
// in each of the supervisor, the agent and init (RSS), of which they
// then use a few hundred KiB (a wait on a signal, a pipe or an epoll
// set). Unmapping the binary's read-only mappings (MADV_DONTNEED on a
// private file mapping drops the mapping, not the file's pages: they stay
// in the page cache, clean and reclaimable, and fault back in from there
// when the process runs that code again) leaves each process with what it
// actually runs afterwards.
package memtrim

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"

	"golang.org/x/sys/unix"
)

// Trim returns the heap's free memory to the kernel and unmaps the
// binary's read-only pages. It is for a process that has finished its
// setup and now mostly waits; it never fails (what cannot be trimmed stays
// as it was).
func Trim() {
	debug.FreeOSMemory()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// start-end perms offset dev inode path
		fields := bytes.Fields(s.Bytes())
		if len(fields) < 6 || string(fields[5]) != exe || bytes.IndexByte(fields[1], 'w') >= 0 {
			continue // not the binary, or written to: DONTNEED would lose the writes
		}
		r := bytes.SplitN(fields[0], []byte{'-'}, 2)
		if len(r) != 2 {
			continue
		}
		start, err1 := strconv.ParseUint(string(r[0]), 16, 64)
		end, err2 := strconv.ParseUint(string(r[1]), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		// Unmapped pages fault back in from the page cache; the call
		// fails only for a range that is not mapped, which then holds
		// nothing either.
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED)
	}
}

// quietHeadroom is what a Quiet process may allocate before its collector
// runs: the 4 MiB that Go's default (GOGC=100) lets a small heap grow to
// before its first collection, so Quiet never holds more than the default
// would.
const quietHeadroom = 4 << 20

// Quiet leaves the garbage collector off until the process's Go memory
// has grown by quietHeadroom from now. Go otherwise collects at least
// every two minutes, and that collection alone, in a process that
// allocates nothing, maps the collector's code and the binary's tables
// back in: measured, init went from 4.7 to 7.9 MB RSS and the supervisor
// of `sandbox run` from 5.4 to 9.2 MB at their first forced collection.
// For processes that only wait (init, that supervisor), after Trim; not
// for one whose live heap may grow past the limit (the agent's UDP flows),
// where the collector would then run back to back.
func Quiet() {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	debug.SetMemoryLimit(int64(m.Sys-m.HeapReleased) + quietHeadroom)
	debug.SetGCPercent(-1)
}
