package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/usernode/usernode/internal/log"

	"github.com/usernode/usernode/internal/memtrim"
	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/cgroup"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/sandbox"
)

// The node side's entry point and the files it shares with the host side
// through the runtime dir.
const (
	Entry      = "usernode-node"
	SpecFile   = sandbox.RuntimeDirInside + "/node.json"
	StatusFile = sandbox.RuntimeDirInside + "/status.json"
)

// Spec is what the host side hands the node side: the resolved model and
// where the tools are.
type Spec struct {
	Cluster  *cluster.Cluster   `json:"cluster"`
	Binaries component.Binaries `json:"binaries"`
	// Runtime is the CRI runtime's binary as `up` probed it.
	Runtime component.RuntimeInfo `json:"runtime"`
}

func init() { reexec.Register(Entry, insideMain) }

func insideMain() {
	// The host writes the spec once the sandbox is up, which is after this
	// process started.
	var b []byte
	var err error
	for i := 0; i < 300; i++ {
		if b, err = os.ReadFile(SpecFile); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	l := log.New(os.Stderr, 0)
	var spec Spec
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	if err != nil {
		l.Infof("reading the node spec: %v", err)
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	plan, err := Prepare(spec, l)
	if err != nil {
		writeFailed(err)
		l.Infof("%v", err)
		os.Exit(1)
	}
	// Certificates and image archives were made in memory; this process
	// now only supervises for as long as the node runs.
	debug.FreeOSMemory()
	// Once every component is ready, what starting them mapped goes back
	// (internal/memtrim): the restarts, probes and status writes that
	// follow map in only what they run.
	plan.OnReady = memtrim.Trim
	if err := supervise.New(*plan, l).Run(ctx); err != nil {
		l.Infof("%v", err)
		os.Exit(1)
	}
}

func writeFailed(err error) {
	b, _ := json.Marshal(supervise.Status{Phase: "failed", Error: err.Error()})
	// Best effort: the process exits 1 right after, with err in its log.
	_ = os.WriteFile(StatusFile, b, 0o600)
}

// checkNodeIP makes sure the model's node IP is the one the network driver
// gave the node's interface: every component binds or advertises it.
func checkNodeIP(want netip.Addr) error {
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	var have []string
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				ip, _ := netip.AddrFromSlice(n.IP.To4())
				if ip == want {
					return nil
				}
				have = append(have, ip.String())
			}
		}
	}
	if len(have) == 0 {
		return fmt.Errorf("the node has no non-loopback IPv4 address: start it with a network driver (--net slirp4netns)")
	}
	return fmt.Errorf("the node's address is %s, not %s as the cluster model says: the network driver did not honour nodeSubnet", strings.Join(have, ", "), want)
}

// Prepare renders the node inside its namespaces and returns the plan
// that starts it.
func Prepare(spec Spec, l *log.Logger) (*supervise.Plan, error) {
	if err := checkNodeIP(spec.Cluster.Self().IP); err != nil {
		return nil, err
	}
	degraded := cgroup.Host{UID: 0, PID: "self"}.Detect().Mode != cgroup.Full
	// /proc/self/exe, not the binary's path: that may be under /tmp, which
	// the node cannot see. Only where internal/pause has no program.
	steps, err := Plan(spec.Cluster, Build{Binaries: spec.Binaries, Degraded: degraded, Pause: "/proc/self/exe", Log: l})
	if err != nil {
		return nil, err
	}
	return &supervise.Plan{LogDir: LogDir, StatusFile: StatusFile, Steps: steps}, nil
}
