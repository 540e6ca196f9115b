// Package cni writes the pod network's CNI config list into the node's
// /etc/cni/net.d (a per-run copy, rewritten at each `up`): a Linux bridge
// in the node's network namespace with host-local addresses, plus portmap
// for hostPort. Debian's containernetworking-plugins (1.1.1 in Debian 12,
// CNI spec 1.0.0) provides both; containerd's CRI plugin adds the loopback
// interface itself, so it is not listed.
//
// No firewall plugin: the node's network namespace is new, so its FORWARD
// chain accepts by default and nothing (Docker's DROP policy on a host)
// needs a hole punched.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/usernode/usernode/internal/atomicfile"
)

// Where the config list goes and the defaults it is written with.
const (
	// DefaultConfDir is where the node's containerd looks for CNI
	// configuration (its default conf_dir), inside the node.
	DefaultConfDir = "/etc/cni/net.d"
	// FileName sorts first: containerd loads only the first config in
	// lexical order.
	FileName       = "10-usernode.conflist"
	DefaultName    = "usernode"
	DefaultBridge  = "cni0"
	DefaultDataDir = "/var/lib/cni/networks"
	// SpecVersion is the newest CNI spec Debian 12's plugins (1.1.1) and
	// containerd 1.6's libcni both speak.
	SpecVersion = "1.0.0"
)

// Options says what the pod network looks like.
type Options struct {
	Name    string       // network name, default "usernode"
	Bridge  string       // default cni0
	Subnet  netip.Prefix // pod addresses: the node's spec.podCIDR (required)
	DataDir string       // host-local's allocations, default /var/lib/cni/networks
	// MTU of the bridge and pods' interfaces; 0 leaves the plugin's
	// default (1500), which fits any uplink since traffic is NATed at tap0.
	MTU int
	// NoMasq leaves pods' source addresses alone: with Flannel, traffic to
	// other nodes' pods must keep them (a reply to the node's own address
	// would leave through its host's NAT), and flanneld masquerades what
	// leaves the cluster.
	NoMasq bool
}

// ConfList is a CNI network configuration list.
type ConfList struct {
	CNIVersion string   `json:"cniVersion"`
	Name       string   `json:"name"`
	Plugins    []Plugin `json:"plugins"`
}

// Plugin holds the fields of the plugins used here (bridge, portmap);
// each uses its own and ignores the rest.
type Plugin struct {
	Type string `json:"type"`

	// bridge
	Bridge      string `json:"bridge,omitempty"`
	IsGateway   bool   `json:"isGateway,omitempty"`
	IPMasq      bool   `json:"ipMasq,omitempty"`
	HairpinMode bool   `json:"hairpinMode,omitempty"`
	MTU         int    `json:"mtu,omitempty"`
	IPAM        *IPAM  `json:"ipam,omitempty"`

	// portmap
	Capabilities map[string]bool `json:"capabilities,omitempty"`
}

// IPAM is the bridge plugin's address management section: host-local,
// handing out addresses from Ranges and adding Routes in each pod.
type IPAM struct {
	Type    string    `json:"type"`
	Ranges  [][]Range `json:"ranges"`
	Routes  []Route   `json:"routes,omitempty"`
	DataDir string    `json:"dataDir,omitempty"`
}

// Range is one subnet host-local allocates from: the node's pod CIDR.
type Range struct {
	Subnet string `json:"subnet"`
}

// Route is a route host-local adds in each pod, through the bridge (the
// pods' gateway).
type Route struct {
	Dst string `json:"dst"`
}

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Bridge == "" {
		o.Bridge = DefaultBridge
	}
	if !o.Subnet.IsValid() {
		return errors.New("cni: Subnet is required: the node's pod CIDR")
	}
	if o.DataDir == "" {
		o.DataDir = DefaultDataDir
	}
	if o.Subnet != o.Subnet.Masked() {
		return fmt.Errorf("pod subnet %v has host bits set (did you mean %v?)", o.Subnet, o.Subnet.Masked())
	}
	if !o.Subnet.Addr().Is4() {
		return errors.New("pod subnet: only IPv4 is configured for now")
	}
	if o.Subnet.Bits() > 30 {
		return fmt.Errorf("pod subnet %v is too small", o.Subnet)
	}
	return nil
}

// Config is the config list for o.
func Config(o Options) (*ConfList, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	return &ConfList{
		CNIVersion: SpecVersion,
		Name:       o.Name,
		Plugins: []Plugin{
			{
				Type:   "bridge",
				Bridge: o.Bridge,
				// The bridge gets the subnet's first address and is the pods'
				// default gateway; ipMasq SNATs pod traffic leaving the
				// subnet to the node's address, which slirp4netns or pasta
				// then carries out.
				IsGateway: true,
				IPMasq:    !o.NoMasq,
				// A pod reaching itself through its own Service comes back
				// through the same veth: without hairpin the bridge drops it.
				HairpinMode: true,
				MTU:         o.MTU,
				IPAM: &IPAM{
					Type:   "host-local",
					Ranges: [][]Range{{{Subnet: o.Subnet.String()}}},
					Routes: []Route{{Dst: "0.0.0.0/0"}},
					// Under /var/lib, which is writable and kept: addresses
					// stay allocated to still-running pods across a kubelet
					// restart.
					DataDir: o.DataDir,
				},
			},
			{
				Type:         "portmap",
				Capabilities: map[string]bool{"portMappings": true},
			},
		},
	}, nil
}

// Render is Config(o) as indented JSON.
func Render(o Options) ([]byte, error) {
	c, err := Config(o)
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Install writes the config list into confDir (the node's per-run
// /etc/cni/net.d) as FileName, and removes every other network config
// there. Those are the host's (copied with /etc): containerd would pick
// one that sorts first, and the host's networks mean nothing inside the
// node. It returns the path written.
func Install(confDir string, o Options) (string, error) {
	b, err := Render(o)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(confDir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		n := e.Name()
		if n == FileName || e.IsDir() {
			continue
		}
		switch filepath.Ext(n) {
		case ".conf", ".conflist", ".json":
			if err := os.Remove(filepath.Join(confDir, n)); err != nil {
				return "", err
			}
		}
	}
	path := filepath.Join(confDir, FileName)
	// containerd watches the directory: it must never see half a file.
	if err := atomicfile.Write(path, b, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// Gateway is the bridge's address in subnet (host-local's default gateway).
func Gateway(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}
