package flannel

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/usernode/usernode/internal/testutil"
)

// modeEnv runs the test binary as the kernel test's helper, inside a user
// and network namespace of the test user's own.
const modeEnv = "_USERNODE_FLANNEL_TEST_MODE"

func TestMain(m *testing.M) {
	switch os.Getenv(modeEnv) {
	case "":
		os.Exit(m.Run())
	case "outer":
		os.Exit(outer())
	case "inner":
		inner()
		os.Exit(0)
	}
	os.Exit(2)
}

// watchResult is what the helper saw.
type watchResult struct {
	Err                              string
	AtStart, AfterRemake, Unwatched  bool // tx checksum offload on?
	RemadeIndex, OriginalIndex, Logs int
	Remade                           int // calls of the remade hook
}

// TestKeepTxChecksumOff: a VXLAN device made on a lower device, as
// flanneld makes flannel.1 on tap0; the lower device deleted (the network
// helper's restart), which takes the VXLAN device with it; both made
// again, as the helper and flanneld do. The watch turns offload off on the
// new device; a device of another name is left alone. As the test user,
// in a user and network namespace of its own.
func TestKeepTxChecksumOff(t *testing.T) {
	u := testutil.Integration(t)
	env := u.NewEnv(t)
	env.Extra = append(env.Extra, modeEnv+"=outer")
	r := env.Run(t, time.Minute, testutil.SelfCopy(t))
	var res watchResult
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("helper: %v\n%s", err, r)
	}
	t.Logf("helper: %+v", res)
	if res.Err != "" {
		t.Fatal(res.Err)
	}
	if res.AtStart || res.AfterRemake {
		t.Errorf("tx checksum offload on: at start %v, on the device made again %v; want off both times", res.AtStart, res.AfterRemake)
	}
	if res.RemadeIndex == res.OriginalIndex {
		t.Errorf("the device was not made again (index %d both times)", res.RemadeIndex)
	}
	if !res.Unwatched {
		t.Errorf("a device of another name had its offload turned off too")
	}
	if res.Remade != 1 {
		t.Errorf("the remade hook ran %d times for one new device, want 1", res.Remade)
	}
	if res.Logs < 1 {
		t.Errorf("the fix on the new device was not logged")
	}
}

// outer re-runs the binary in new user and network namespaces, mapping
// the user's own uid to 0 (no subordinate IDs needed).
func outer() int {
	c := exec.Command("/proc/self/exe")
	c.Env = append(os.Environ(), modeEnv+"=inner")
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	if err := c.Run(); err != nil {
		_ = json.NewEncoder(os.Stdout).Encode(watchResult{Err: "new user and network namespace: " + err.Error()}) // the test reads it, or fails on no JSON
	}
	return 0
}

func inner() {
	var res watchResult
	defer func() { _ = json.NewEncoder(os.Stdout).Encode(res) }() // as above
	fail := func(format string, a ...any) { res.Err = fmt.Sprintf(format, a...) }
	makeVXLAN := func(name string, vni int) (int, error) {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "low-" + name}, PeerName: "peer-" + name}); err != nil {
			return 0, fmt.Errorf("veth: %w", err)
		}
		low, err := netlink.LinkByName("low-" + name)
		if err != nil {
			return 0, err
		}
		v := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name}, VxlanId: vni, VtepDevIndex: low.Attrs().Index, Port: 8472}
		if err := netlink.LinkAdd(v); err != nil {
			return 0, fmt.Errorf("vxlan: %w", err)
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			return 0, err
		}
		return l.Attrs().Index, nil
	}
	idx, err := makeVXLAN("flannel.1", 1)
	if err != nil {
		fail("%v", err)
		return
	}
	res.OriginalIndex = idx
	if on, err := TxChecksumOn("flannel.1"); err != nil || !on {
		fail("a new VXLAN device should have tx checksum offload on (what the watch is for): on=%v err=%v", on, err)
		return
	}
	var logs []string
	logf := func(format string, a ...any) { logs = append(logs, fmt.Sprintf(format, a...)) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	remade := 0
	if err := KeepTxChecksumOff(ctx, "flannel.1", logf, func() { remade++ }); err != nil {
		fail("%v", err)
		return
	}
	res.AtStart, _ = TxChecksumOn("flannel.1")
	low, _ := netlink.LinkByName("low-flannel.1")
	if err := netlink.LinkDel(low); err != nil {
		fail("deleting the lower device: %v", err)
		return
	}
	if _, err := netlink.LinkByName("flannel.1"); err == nil {
		fail("the VXLAN device outlived its lower device: the kernel did not do what the watch expects")
		return
	}
	if res.RemadeIndex, err = makeVXLAN("flannel.1", 1); err != nil {
		fail("%v", err)
		return
	}
	if _, err := makeVXLAN("other.1", 2); err != nil {
		fail("%v", err)
		return
	}
	// The watch acts on the netlink event; this waits for it, not a
	// measure of it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		res.AfterRemake, _ = TxChecksumOn("flannel.1")
		if !res.AfterRemake || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // an event for other.1 would be handled by now
	res.Unwatched, _ = TxChecksumOn("other.1")
	res.Remade = remade
	for _, l := range logs {
		if strings.Contains(l, "made again") {
			res.Logs++
		}
	}
}
