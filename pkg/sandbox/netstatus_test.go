package sandbox

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/pkg/network"
)

func TestNetStatusSummary(t *testing.T) {
	n := &NetStatus{Driver: "slirp4netns", Interface: "tap0", Address: "10.0.2.100/24", Helper: "slirp4netns", HelperPID: 42, HelperAlive: true,
		Restarts: 1, LastExit: "slirp4netns exited (signal: killed): (no output)", Healthy: true,
		Inside: &network.Health{Interface: "tap0", Present: true, Up: true, Address: true, DefaultRoute: true, Probe: "ARP 10.0.2.2", ProbeOK: true, RTT: 312 * time.Microsecond}}
	got := n.Summary()
	want := "  network: slirp4netns tap0 10.0.2.100/24: healthy (slirp4netns pid 42, tap0 up, default route, ARP 10.0.2.2 answered in 310µs, restarts 1)\n" +
		"    last exit of slirp4netns: slirp4netns exited (signal: killed): (no output)\n"
	if got != want {
		t.Errorf("healthy:\n got %q\nwant %q", got, want)
	}
	n = &NetStatus{Driver: "lxc-user-nic", Interface: "eth0", Address: "10.0.3.200/24",
		Inside:   &network.Health{Interface: "eth0", Problems: []string{"interface eth0 is missing: Link not found"}},
		Problems: []string{"interface eth0 is missing: Link not found", "network driver lxc-user-nic has no helper process that would make eth0 again: restart the node (`usernode down`, `usernode up`)"}}
	got = n.Summary()
	if !strings.HasPrefix(got, "  network: lxc-user-nic eth0 10.0.3.200/24: UNHEALTHY\n") || !strings.Contains(got, "\n    network driver lxc-user-nic has no helper process") {
		t.Errorf("veth gone:\n%s", got)
	}
}

// helperRuns tells the helper, a child of the supervisor, from a process
// that took its PID, and from its zombie.
func TestHelperRuns(t *testing.T) {
	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if !helperRuns(c.Process.Pid, os.Getpid()) {
		t.Error("a running child not recognised")
	}
	if helperRuns(c.Process.Pid, os.Getppid()) {
		t.Error("a child of another process taken for the helper")
	}
	if err := c.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: a zombie.
	deadline := time.Now().Add(5 * time.Second)
	for helperRuns(c.Process.Pid, os.Getpid()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if helperRuns(c.Process.Pid, os.Getpid()) {
		t.Error("a zombie counted as running")
	}
	_ = c.Wait() // killed: the error is that signal
	if helperRuns(c.Process.Pid, os.Getpid()) {
		t.Error("a reaped child counted as running")
	}
}
