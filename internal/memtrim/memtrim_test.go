package memtrim

import (
	"bufio"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// written lives in the binary's writable data: Trim must leave such
// mappings alone (MADV_DONTNEED on a private mapping drops its writes).
var written = []int{1, 2, 3}

// exeRss sums Rss over the binary's read-only mappings, in kB.
func exeRss(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, in := 0, false
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 5 && strings.Contains(fields[0], "-") {
			in = len(fields) >= 6 && fields[5] == exe && !strings.Contains(fields[1], "w")
			continue
		}
		if in && len(fields) >= 2 && fields[0] == "Rss:" {
			n, _ := strconv.Atoi(fields[1])
			total += n
		}
	}
	return total
}

func TestTrim(t *testing.T) {
	written[1] = 20
	before := exeRss(t)
	Trim()
	after := exeRss(t)
	t.Logf("binary's read-only pages mapped: %d kB before, %d kB after", before, after)
	if after > before {
		t.Errorf("Trim left more of the binary mapped: %d kB before, %d kB after", before, after)
	}
	if written[0] != 1 || written[1] != 20 || written[2] != 3 {
		t.Errorf("the binary's writable data changed: %v", written)
	}
}

func TestQuiet(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	Quiet()
	if p := debug.SetGCPercent(100); p != -1 {
		t.Errorf("GC percent after Quiet: %d, want -1 (off)", p)
	}
	if l := debug.SetMemoryLimit(-1); l <= quietHeadroom || l == 1<<63-1 {
		t.Errorf("memory limit after Quiet: %d, want the process's memory + %d", l, quietHeadroom)
	}
}
