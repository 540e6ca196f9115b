// Package pasta is the network driver backed by pasta (Debian package
// passt): like slirp4netns a TAP device in the namespace, but pasta maps
// the namespace's TCP/UDP onto host sockets instead of running a full
// TCP/IP stack, and splices local traffic.
package pasta

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/network/internal/nsutil"
)

const (
	Name       = "pasta"
	DefaultMTU = 65520
	ifname     = "eth0"
)

func init() {
	network.Register(network.Driver{Name: Name, Helper: "pasta", Package: "passt",
		Find: func() (string, error) { return network.LookHelper(Name, "pasta", "passt") }, NeedsTun: true, HostLoopback: true,
		New: func() (network.Parent, network.Child) { return &Parent{}, Child{} }})
}

type Parent struct {
	helper *nsutil.Helper
}

func (p *Parent) Start(ctx context.Context, ns network.NS, opts network.Options) (*network.Config, error) {
	bin, err := network.LookHelper(Name, "pasta", "passt")
	if err != nil {
		return nil, err
	}
	if err := nsutil.CheckTun(); err != nil {
		return nil, fmt.Errorf("network driver %s: %w", Name, err)
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	// pasta copies the host's address and gateway into the namespace by
	// default. Then the host's own address, seen from inside, is the
	// namespace's and the host is unreachable by it; a private subnet in
	// slirp4netns's layout keeps the host's addresses reachable.
	address, gateway, dns := network.Layout(opts.Subnet)
	pidFile := filepath.Join(ns.StateDir, "pasta.pid")
	os.Remove(pidFile)
	args := []string{"--foreground", "--quiet", "--stderr", "--config-net",
		"--ipv4-only",
		// usernode forwards ports itself (pkg/port); pasta must not bind
		// any port on either side.
		"-t", "none", "-u", "none", "-T", "none", "-U", "none",
		"-a", address.Addr().String(), "-n", fmt.Sprint(address.Bits()), "-g", gateway.String(),
		"--dns-forward", dns.String(), "-m", fmt.Sprint(mtu), "-I", ifname, "-P", pidFile,
		"--netns", ns.NetNS}
	if ns.UserNS != "" {
		args = append(args, "--userns", ns.UserNS)
	}
	// pasta maps connections to the gateway address onto the host's
	// loopback unless told not to.
	if !opts.AllowHostLoopback {
		args = append(args, "--no-map-gw")
	}
	cmd := exec.Command(bin, args...)
	h, err := nsutil.StartHelper(Name, cmd, filepath.Join(ns.StateDir, "pasta.log"))
	if err != nil {
		return nil, err
	}
	p.helper = h
	// pasta writes its PID file once the namespace side is configured, at
	// the point where it would otherwise daemonize.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if st, err := os.Stat(pidFile); err == nil && st.Size() > 0 {
			break
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			p.Close()
			return nil, err
		}
		select {
		case <-h.Done():
			p.Close()
			return nil, fmt.Errorf("network driver %s: %w", Name, h.Exited())
		case <-wctx.Done():
			p.Close()
			return nil, fmt.Errorf("network driver %s: not ready: %w (log: %s)", Name, wctx.Err(), h.LogTail())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return &network.Config{Driver: Name, Interface: ifname, Address: address, Gateway: gateway,
		DNS: []netip.Addr{dns}, MTU: mtu, Extra: map[string]string{"pid": fmt.Sprint(cmd.Process.Pid)}}, nil
}

func (p *Parent) Close() error {
	if p.helper != nil {
		p.helper.Stop(func() { _ = p.helper.Cmd.Process.Signal(os.Interrupt) })
	}
	return nil
}

type Child struct{}

func (Child) Configure(cfg *network.Config) error {
	if err := nsutil.LoUp(); err != nil {
		return err
	}
	return nsutil.WaitLink(cfg.Interface, cfg.Address, 5*time.Second)
}
