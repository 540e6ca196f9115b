package node

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/usernode/usernode/internal/log"

	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/internal/userns"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/api"
	"github.com/usernode/usernode/pkg/sandbox"

	"golang.org/x/sys/unix"
)

// Status is `usernode status`.
type Status struct {
	Sandbox *sandbox.State    `json:"sandbox"`
	Node    *supervise.Status `json:"node"`
	Ports   []port.Spec       `json:"ports"`
	// Nodes are the cluster's nodes as the API server reports them now
	// (a worker sees only its own), or NodesError why they could not be
	// read.
	Nodes      []ClusterNode `json:"nodes,omitempty"`
	NodesError string        `json:"nodesError,omitempty"`
	// Exposure is the ports usernode opened for the cluster's Services
	// and pods, and those it could not, with why.
	Exposure *Exposure `json:"exposure,omitempty"`
	// Runtime is the CRI runtime the node runs, as `up` probed it before
	// starting it (node.json): the binary a running daemon was started
	// from, read without a process or a dial into the node, and there
	// while the node is still starting.
	Runtime *component.RuntimeInfo `json:"runtime,omitempty"`
	// Network is the node's network as measured now: the helper, the
	// interface inside the node, a probe through it, the restarts.
	Network *sandbox.NetStatus `json:"network,omitempty"`
	// Disk is the state dir's filesystem as measured now, with a warning
	// when it is full or nearly so.
	Disk *Disk `json:"disk,omitempty"`

	spec *Spec
}

// Spec is what `up` wrote for the running node (node.json), nil before
// it has.
func (s *Status) Spec() *Spec { return s.spec }

// GetStatus reads a running node's state.
func GetStatus(ctx context.Context, c sandbox.Config) (*Status, error) {
	st, err := sandbox.Running(c.RuntimeDir)
	if err != nil {
		return nil, err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	out := &Status{Sandbox: st, Node: &supervise.Status{Phase: "starting"}}
	out.Network = sandbox.NetworkStatus(ctx, st)
	// The running node's own state dir (a later `status` may not have
	// been given its --state-dir). A statfs that fails leaves the line out.
	out.Disk, _ = DiskOf(st.StateDir)
	if ns, err := supervise.ReadStatus(PathsOf(c).Status()); err == nil {
		out.Node = ns
	}
	if st.PortSocket != "" {
		out.Ports, _ = api.NewClient(st.PortSocket).List(ctx)
	}
	out.Exposure, _ = readExposure(PathsOf(c).exposure())
	if b, err := os.ReadFile(PathsOf(c).spec()); err == nil {
		var spec Spec
		if json.Unmarshal(b, &spec) == nil {
			out.spec = &spec
			// A node.json from before Probe carries no runtime.
			if spec.Runtime.Name != "" {
				out.Runtime = &spec.Runtime
			}
		}
	}
	if out.Node.Phase == "ready" {
		cl, cs, err := runningCluster(c)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			out.Nodes, err = listNodes(actx, cs, cl.Self().Name)
			cancel()
		}
		if err != nil {
			out.NodesError = err.Error()
		}
	}
	return out, nil
}

const purgeEntry = "usernode-purge"

func init() { reexec.Register(purgeEntry, purgeMain) }

// Purge removes a stopped node's state dir. Images and container files in
// it belong to subordinate IDs the user cannot delete as themselves, so
// the removal runs as root of a user namespace with the full mapping.
func Purge(c sandbox.Config) error {
	if _, err := sandbox.Supervisor(c.RuntimeDir); err == nil {
		return errRunning(c.Name)
	}
	if _, err := os.Stat(c.StateDir); os.IsNotExist(err) {
		return nil
	}
	m, err := userns.CurrentMapping()
	if err != nil {
		return err
	}
	cmd := reexec.Command(purgeEntry, c.StateDir)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := userns.Start(cmd, unix.CLONE_NEWUSER, m); err != nil {
		return err
	}
	return cmd.Wait()
}

func purgeMain() {
	if err := userns.WaitMapped(); err != nil {
		os.Exit(1)
	}
	if err := os.RemoveAll(os.Args[1]); err != nil {
		log.New(os.Stderr, 0).Infof("%v", err)
		os.Exit(1)
	}
}

type errRunning string

func (e errRunning) Error() string {
	return "node " + string(e) + " is running: `usernode down` first"
}
