package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/pkg/network"
)

// NetStatus is the node's network as `status` measures it now: the
// helper process, and the interface seen from inside the node.
type NetStatus struct {
	Driver    string `json:"driver"`
	Interface string `json:"interface,omitempty"`
	Address   string `json:"address,omitempty"`
	// Helper is the helper's name and PID, HelperAlive whether that
	// process is running now; Restarts, LastExit and GaveUp are the
	// supervisor's (NetHelper). A driver without a helper (lxc-user-nic)
	// has none of these.
	Helper      string `json:"helper,omitempty"`
	HelperPID   int    `json:"helperPID,omitempty"`
	HelperAlive bool   `json:"helperAlive"`
	Restarts    int    `json:"restarts"`
	LastExit    string `json:"lastExit,omitempty"`
	GaveUp      string `json:"gaveUp,omitempty"`
	// Inside is the measure from inside the node's network namespace.
	Inside *network.Health `json:"inside,omitempty"`
	// Healthy sums it up; Problems says what is wrong, with the fix
	// where there is one.
	Healthy  bool     `json:"healthy"`
	Problems []string `json:"problems,omitempty"`
}

const netCheckEntry = "usernode-sandbox-netcheck"

func init() { reexec.Register(netCheckEntry, netCheckMain) }

// NetworkStatus measures st's network now. It enters the node's user and
// network namespaces (nsenter, as `enter` does) to look at the interface
// and ask the gateway; it takes at most about a second more than the
// process start when the gateway does not answer.
func NetworkStatus(ctx context.Context, st *State) *NetStatus {
	cfg := st.Network
	if cfg == nil {
		return nil
	}
	ns := &NetStatus{Driver: cfg.Driver, Interface: cfg.Interface}
	if cfg.Address.IsValid() {
		ns.Address = cfg.Address.String()
	}
	if h := st.NetHelper; h != nil {
		ns.Helper, ns.HelperPID, ns.Restarts, ns.LastExit, ns.GaveUp = h.Name, h.PID, h.Restarts, h.LastExit, h.GaveUp
		ns.HelperAlive = h.PID > 0 && helperRuns(h.PID, st.Supervisor)
		switch {
		case h.GaveUp != "":
			ns.Problems = append(ns.Problems, fmt.Sprintf("the supervisor gave up restarting %s: %s; restart the node (`usernode down`, `usernode up`)", h.Name, h.GaveUp))
		case !ns.HelperAlive && h.PID > 0:
			ns.Problems = append(ns.Problems, fmt.Sprintf("%s (pid %d) is not running; the supervisor restarts it", h.Name, h.PID))
		case !ns.HelperAlive:
			ns.Problems = append(ns.Problems, fmt.Sprintf("%s is being restarted (restart %d)", h.Name, h.Restarts))
		}
	}
	if cfg.Interface != "" {
		h, err := measureInside(ctx, st)
		if err != nil {
			ns.Problems = append(ns.Problems, "measuring inside the node: "+err.Error())
		} else {
			ns.Inside = h
			ns.Problems = append(ns.Problems, h.Problems...)
			if !h.Present && st.NetHelper == nil {
				ns.Problems = append(ns.Problems, fmt.Sprintf("network driver %s has no helper process that would make %s again: restart the node (`usernode down`, `usernode up`)", cfg.Driver, cfg.Interface))
			}
		}
	}
	ns.Healthy = len(ns.Problems) == 0
	return ns
}

// helperRuns says whether pid is a running child of the supervisor: the
// helper, and not a process that got its PID since (the supervisor reaps
// its children, so a reused PID has another parent). Its name is no
// test: Debian's pasta is a link to passt, which execs passt.avx2 on CPUs
// with AVX2 (measured: comm "passt.avx2" here).
func helperRuns(pid, supervisor int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return false
	}
	// After the name: state, ppid.
	f := strings.Fields(s[end+1:])
	// A zombie has exited; the supervisor has not reaped it yet.
	return len(f) > 1 && f[0] != "Z" && f[1] == fmt.Sprint(supervisor)
}

// measureInside runs this binary's netcheck entry inside the node's user
// and network namespaces (not its mount namespace: the binary's path is
// the host's) with st.Network on stdin, and reads its Health.
func measureInside(ctx context.Context, st *State) (*network.Health, error) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, errors.New("nsenter not found in PATH: install util-linux")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	in, err := json.Marshal(st.Network)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, nsenter, "--target", fmt.Sprint(st.Init), "--user", "--net", "--", self)
	c.Env = append(os.Environ(), reexec.EntryEnv+"="+netCheckEntry)
	c.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	c.Stdout, c.Stderr = &out, &stderr
	if err := c.Run(); err != nil {
		return nil, fmt.Errorf("%s: %v: %s", filepath.Base(nsenter), err, strings.TrimSpace(stderr.String()))
	}
	var h network.Health
	if err := json.Unmarshal(out.Bytes(), &h); err != nil {
		return nil, fmt.Errorf("netcheck said %q: %w", out.String(), err)
	}
	return &h, nil
}

// netCheckMain runs in the node's network namespace as its root: it
// measures the interface of the Config on stdin and prints the Health.
func netCheckMain() {
	var cfg network.Config
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "netcheck: reading the network config:", err)
		os.Exit(2)
	}
	h := network.Measure(&cfg, time.Second)
	if err := json.NewEncoder(os.Stdout).Encode(&h); err != nil {
		os.Exit(1)
	}
}

// Summary is `status`'s text for the network: a line that says healthy
// or not, with the helper's PID and restarts, then one indented line per
// problem and the helper's last exit.
func (n *NetStatus) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  network: %s", n.Driver)
	if n.Interface != "" {
		fmt.Fprintf(&b, " %s %s", n.Interface, n.Address)
	}
	if n.Healthy {
		b.WriteString(": healthy")
	} else {
		b.WriteString(": UNHEALTHY")
	}
	var d []string
	if n.Helper != "" {
		if n.HelperAlive {
			d = append(d, fmt.Sprintf("%s pid %d", n.Helper, n.HelperPID))
		} else {
			d = append(d, n.Helper+" not running")
		}
	}
	if h := n.Inside; h != nil && h.Present {
		s := "up"
		if !h.Up {
			s = "down"
		}
		d = append(d, n.Interface+" "+s)
		if h.DefaultRoute {
			d = append(d, "default route")
		}
		if h.ProbeOK {
			d = append(d, fmt.Sprintf("%s answered in %s", h.Probe, h.RTT.Round(10*time.Microsecond)))
		}
	}
	if n.Helper != "" {
		d = append(d, fmt.Sprintf("restarts %d", n.Restarts))
	}
	if len(d) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(d, ", "))
	}
	b.WriteString("\n")
	for _, p := range n.Problems {
		fmt.Fprintf(&b, "    %s\n", p)
	}
	if n.LastExit != "" && n.GaveUp == "" { // the give-up quotes it already
		fmt.Fprintf(&b, "    last exit of %s: %s\n", n.Helper, n.LastExit)
	}
	return b.String()
}
