package userns

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/internal/reexec"
)

const (
	trialEntry      = "usernode-userns-trial"
	vxlanTrialEntry = "usernode-vxlan-trial"
)

func init() {
	reexec.Register(trialEntry, trialChild)
	reexec.Register(vxlanTrialEntry, vxlanTrialChild)
}

// Trial creates a user namespace mapped over the caller's full subordinate
// ranges, plus a network namespace, and checks from inside that the mapping
// took: uid 0, the subordinate IDs usable, a network namespace of its own.
// Errors carry the kernel's or the helper's own words.
func Trial(ctx context.Context) error {
	m, err := CurrentMapping()
	if err != nil {
		return err
	}
	hostNet, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	return runTrial(ctx, m, trialEntry, "_USERNODE_TRIAL_HOSTNET="+hostNet, fmt.Sprintf("_USERNODE_TRIAL_MAX=%d", m.SubUID.Count))
}

// TrialVXLAN does in a user and network namespace of the caller's what a
// multi-node node's Flannel does in its own: it makes a VXLAN device on
// port and brings it up, and sets rp_filter to loose (2).
func TrialVXLAN(ctx context.Context, port uint16) error {
	m, err := CurrentMapping()
	if err != nil {
		return err
	}
	return runTrial(ctx, m, vxlanTrialEntry, fmt.Sprintf("_USERNODE_TRIAL_PORT=%d", port))
}

// runTrial runs the reexec entry in a new user and network namespace
// mapped with m, with env added, and returns its output as the error when
// it fails.
func runTrial(ctx context.Context, m *Mapping, entry string, env ...string) error {
	cmd := reexec.Command(entry)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := Start(cmd, unix.CLONE_NEWUSER|unix.CLONE_NEWNET, m); err != nil {
		return err
	}
	var werr error
	done := make(chan struct{})
	go func() { werr = cmd.Wait(); close(done) }()
	var err error
	select {
	case <-done:
		err = werr
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done // Wait's error is the kill's; ctx's says why
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("inside the trial namespace: %s (%v)", strings.TrimSpace(out.String()), err)
	}
	return nil
}

func trialChild() {
	fail := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, f+"\n", a...)
		os.Exit(1)
	}
	if err := WaitMapped(); err != nil {
		fail("%v", err)
	}
	if os.Getuid() != 0 || os.Getgid() != 0 {
		fail("uid %d gid %d inside, want 0 0", os.Getuid(), os.Getgid())
	}
	if ns, _ := os.Readlink("/proc/self/ns/net"); ns == os.Getenv("_USERNODE_TRIAL_HOSTNET") {
		fail("no network namespace of its own")
	}
	// Becoming the highest subordinate ID proves the whole range is mapped,
	// not only the caller's own uid.
	var top int
	if _, err := fmt.Sscan(os.Getenv("_USERNODE_TRIAL_MAX"), &top); err != nil {
		fail("bad _USERNODE_TRIAL_MAX=%q: %v", os.Getenv("_USERNODE_TRIAL_MAX"), err)
	}
	if err := unix.Setresgid(top, top, top); err != nil {
		fail("setgid(%d) to the top of the subgid range: %v", top, err)
	}
	if err := unix.Setresuid(top, top, top); err != nil {
		fail("setuid(%d) to the top of the subuid range: %v", top, err)
	}
}

func vxlanTrialChild() {
	fail := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, f+"\n", a...)
		os.Exit(1)
	}
	if err := WaitMapped(); err != nil {
		fail("%v", err)
	}
	var port int
	if _, err := fmt.Sscan(os.Getenv("_USERNODE_TRIAL_PORT"), &port); err != nil {
		fail("bad _USERNODE_TRIAL_PORT: %v", err)
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		fail("lo: %v", err)
	}
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "trial.1"}, VxlanId: 1, Port: port, Learning: false}
	if err := netlink.LinkAdd(vx); err != nil {
		fail("creating a VXLAN device: %v", err)
	}
	if err := netlink.LinkSetUp(vx); err != nil {
		fail("bringing the VXLAN device up on UDP %d: %v", port, err)
	}
	for _, k := range []string{"all", "default"} {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+k+"/rp_filter", []byte("2"), 0); err != nil {
			fail("setting rp_filter=2: %v", err)
		}
	}
}
