package pause

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The program is a valid static ELF for its machine, small, and what the
// node puts in the pause image runs with nothing else in it.
func TestProgramELF(t *testing.T) {
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		p := Program(arch)
		// The figure issue 15 is about is memory per pod; the file's size
		// bounds the text it maps. 1 KiB: a page, with room to grow.
		if len(p) == 0 || len(p) > 1024 {
			t.Errorf("%s: %d bytes, want 1..1024", arch, len(p))
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(p))
		if err != nil {
			t.Errorf("%s: %v", arch, err)
			continue
		}
		if f.Machine != machine || f.Type != elf.ET_EXEC || f.Entry != base+TextOffset {
			t.Errorf("%s: machine %v type %v entry %#x", arch, f.Machine, f.Type, f.Entry)
		}
		for _, ph := range f.Progs {
			if ph.Type == elf.PT_INTERP || ph.Type == elf.PT_DYNAMIC {
				t.Errorf("%s: has %v: not static", arch, ph.Type)
			}
			if ph.Type == elf.PT_LOAD && (ph.Filesz != uint64(len(p)) || ph.Flags&elf.PF_W != 0) {
				t.Errorf("%s: PT_LOAD %+v for a %d-byte file", arch, ph.ProgHeader, len(p))
			}
		}
	}
	if Program("riscv64") != nil {
		t.Error("riscv64 has no program: the node must fall back to usernode's /pause")
	}
}

// The bytes in program.go are testdata/pause_ARCH.S assembled, so the
// source is what runs. Needs binutils for the architecture (gcc brings
// the host's; binutils-aarch64-linux-gnu the arm64 one on amd64).
func TestProgramMatchesSource(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			prefix := map[string]string{"amd64": "x86_64-linux-gnu-", "arm64": "aarch64-linux-gnu-"}[arch]
			as, objcopy := tool(prefix+"as", arch), tool(prefix+"objcopy", arch)
			if as == "" || objcopy == "" {
				t.Skipf("no %sas and objcopy (binutils) to assemble testdata/pause_%s.S", prefix, arch)
			}
			dir := t.TempDir()
			obj, bin := filepath.Join(dir, "pause.o"), filepath.Join(dir, "pause.bin")
			if out, err := exec.Command(as, "-o", obj, "testdata/pause_"+arch+".S").CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", as, err, out)
			}
			if out, err := exec.Command(objcopy, "-O", "binary", "-j", ".text", obj, bin).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", objcopy, err, out)
			}
			want, err := os.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			if got := Program(arch)[TextOffset:]; !bytes.Equal(got, want) {
				t.Errorf("program.go's %s text differs from the assembled source:\n got %x\nwant %x", arch, got, want)
			}
		})
	}
}

// tool finds a binutils program: by its cross name, or unprefixed when
// arch is the host's.
func tool(name, arch string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if arch == runtime.GOARCH {
		if p, err := exec.LookPath(name[strings.LastIndex(name, "-")+1:]); err == nil {
			return p
		}
	}
	return ""
}

// native writes this architecture's program to a file and returns its
// path; the tests below run it for real.
func native(t *testing.T) string {
	t.Helper()
	p := Program(runtime.GOARCH)
	if p == nil {
		t.Skipf("no pause program for %s", runtime.GOARCH)
	}
	path := filepath.Join(t.TempDir(), "pause")
	if err := os.WriteFile(path, p, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(native(t), "-v").Output()
	if err != nil || string(out) != Version {
		t.Errorf("pause -v: %q, %v; want %q, exit 0", out, err, Version)
	}
}

// rtSigtimedwait is the syscall the program sleeps in, by number, as
// /proc/PID/syscall shows it.
var rtSigtimedwait = map[string]int{"amd64": 128, "arm64": 137}[runtime.GOARCH]

// waitSleeping waits until the process is asleep in rt_sigtimedwait,
// which it enters after blocking SIGINT, SIGTERM and SIGCHLD: from then on
// those are queued for it, not acted on by default (SIGTERM would kill it
// before). While it sleeps the kernel shows the waited-for signals as
// unblocked (SigBlk 0), so the syscall is the sign, or, where
// /proc/PID/syscall is missing, wchan or the mask between two waits.
func waitSleeping(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		sc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		f := strings.Fields(string(sc))
		if len(f) > 0 && f[0] == strconv.Itoa(rtSigtimedwait) || strings.Contains(string(wchan), "sigtimedwait") ||
			strings.Contains(string(st), "SigBlk:\t0000000000014002\n") {
			return
		}
		last = fmt.Sprintf("syscall %q, wchan %q", sc, wchan)
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("pid %d never slept in rt_sigtimedwait (%s)", pid, last)
}

// SIGTERM and SIGINT stop it with status 0; SIGCHLD with nothing to reap,
// and signals it does not wait for and that are ignored by default, leave
// it running (it still answers SIGTERM after them).
func TestSignals(t *testing.T) {
	bin := native(t)
	for _, tc := range []struct {
		name   string
		before []syscall.Signal
		stop   syscall.Signal
	}{
		{"SIGTERM", nil, syscall.SIGTERM},
		{"SIGINT", nil, syscall.SIGINT},
		{"SIGCHLD, SIGWINCH, SIGURG then SIGTERM", []syscall.Signal{syscall.SIGCHLD, syscall.SIGWINCH, syscall.SIGURG, syscall.SIGCHLD}, syscall.SIGTERM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill() }() // after Wait: a no-op
			waitSleeping(t, cmd.Process.Pid)
			for _, s := range tc.before {
				if err := cmd.Process.Signal(s); err != nil {
					t.Fatal(err)
				}
			}
			if len(tc.before) > 0 {
				waitSleeping(t, cmd.Process.Pid) // back asleep, not exited
			}
			if err := cmd.Process.Signal(tc.stop); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("after %v: %v (%v), want exit status 0", tc.stop, err, cmd.ProcessState)
			}
		})
	}
}

// As a pid namespace's init, as in a pod sharing its process namespace,
// it reaps the orphans the kernel hands it: a process whose parent exited
// is re-parented to it, and once that process exits no zombie remains.
// The namespace is a user namespace's, so no privilege is needed.
func TestReapsOrphans(t *testing.T) {
	if testing.Short() {
		t.Skip("user and pid namespaces")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("no nsenter (util-linux)")
	}
	cmd := exec.Command(native(t))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EINVAL) {
			t.Skipf("cannot make a user namespace here: %v", err)
		}
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitSleeping(t, pid)

	// A shell in the namespace starts cat in the background and exits:
	// cat, blocked reading the pipe, becomes pause's child.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sh := exec.Command(nsenter, "--target", strconv.Itoa(pid), "--user", "--pid", "--preserve-credentials",
		"--", "/bin/sh", "-c", "cat <&3 >/dev/null 2>&1 &")
	sh.ExtraFiles = []*os.File{r}
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	kids := children(t, pid)
	if len(kids) != 1 {
		t.Fatalf("pause's children after the shell exited: %v, want the orphaned cat", kids)
	}
	orphan := kids[0]

	if err := w.Close(); err != nil { // cat reads EOF and exits
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", orphan))
		if errors.Is(err, os.ErrNotExist) && len(children(t, pid)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan))
			t.Fatalf("pid %d not reaped: %s", orphan, st)
		}
		time.Sleep(time.Millisecond)
	}
	waitSleeping(t, pid)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("pause after reaping, SIGTERM: %v, want exit status 0", err)
	}
}

// children lists pid's children (zombies included) from /proc.
func children(t *testing.T, pid int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

// The arm64 program, where qemu-user can run it (qemu-user-static): its
// version and its exit on SIGTERM once asleep (qemu's -strace shows when).
func TestArm64UnderQemu(t *testing.T) {
	if runtime.GOARCH == "arm64" {
		t.Skip("native here: the tests above run it")
	}
	var qemu string
	for _, n := range []string{"qemu-aarch64-static", "qemu-aarch64"} {
		if p, err := exec.LookPath(n); err == nil {
			qemu = p
			break
		}
	}
	if qemu == "" {
		t.Skip("no qemu-aarch64 (qemu-user-static)")
	}
	bin := filepath.Join(t.TempDir(), "pause")
	if err := os.WriteFile(bin, Program("arm64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(qemu, bin, "-v").Output(); err != nil || string(out) != Version {
		t.Errorf("pause -v: %q, %v; want %q, exit 0", out, err, Version)
	}
	cmd := exec.Command(qemu, "-strace", bin)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	var seen []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(seen, []byte("rt_sigtimedwait(")) {
		n, err := stderr.Read(buf)
		seen = append(seen, buf[:n]...)
		if err != nil {
			t.Fatalf("qemu -strace ended before rt_sigtimedwait: %v: %s", err, seen)
		}
	}
	if !bytes.Contains(seen, []byte("wait4(")) {
		t.Errorf("no wait4 before sleeping: %s", seen)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, stderr) // until it exits; Wait wants the pipe read first
	if err := cmd.Wait(); err != nil {
		t.Errorf("arm64 pause, SIGTERM: %v, want exit status 0: %s", err, seen)
	}
}
