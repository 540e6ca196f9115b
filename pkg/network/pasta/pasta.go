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
	// Name is how users pick this driver (--network pasta) and how it is
	// registered with pkg/network.
	Name = "pasta"
	// DefaultMTU is pasta's maximum, the same as slirp4netns's: fewer,
	// larger packets through the user-space copy.
	DefaultMTU = 65520
	ifname     = "eth0"
)

func init() {
	network.Register(network.Driver{Name: Name, Helper: "pasta", Package: "passt",
		Find: func() (string, error) { return network.LookHelper(Name, "pasta", "passt") }, NeedsTun: true, HostLoopback: true,
		New: func() (network.Parent, network.Child) { return &Parent{}, Child{} }})
}

var _ network.Waiter = (*Parent)(nil)

// Parent runs pasta on the host side.
type Parent struct {
	helper *nsutil.Helper
}

// Start runs pasta against ns's network namespace, in its foreground mode
// so that it stays the supervisor's child, and returns once pasta has
// written its PID file: pasta writes it after configuring the namespace's
// side, where it would otherwise daemonize.
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
	// A PID file left by an earlier run would read as ready at once. Not
	// there is the usual case; anything else shows when pasta writes it.
	_ = os.Remove(pidFile)
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
			_ = p.Close() // always nil
			return nil, err
		}
		select {
		case <-h.Done():
			_ = p.Close()
			return nil, fmt.Errorf("network driver %s: %w", Name, h.Exited())
		case <-wctx.Done():
			_ = p.Close()
			return nil, fmt.Errorf("network driver %s: not ready: %w (log: %s)", Name, wctx.Err(), h.LogTail())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return &network.Config{Driver: Name, Interface: ifname, Address: address, Gateway: gateway,
		DNS: []netip.Addr{dns}, MTU: mtu, Extra: map[string]string{"pid": fmt.Sprint(cmd.Process.Pid)}}, nil
}

// Wait returns a channel that receives how pasta ended once it has
// (network.Waiter): the TAP device goes with it.
func (p *Parent) Wait() <-chan error {
	if p.helper == nil {
		return nil
	}
	return p.helper.Wait()
}

// Close interrupts pasta (SIGINT, its clean exit), kills it if it is
// still there 2 s later, and returns once it has exited.
func (p *Parent) Close() error {
	if p.helper != nil {
		p.helper.Stop(func() { _ = p.helper.Cmd.Process.Signal(os.Interrupt) })
	}
	return nil
}

// Child only brings up lo: pasta --config-net configured the interface.
type Child struct{}

// Configure brings up lo and waits up to 5 s for the interface to carry
// the address pasta gave it, so that what runs next has a network.
func (Child) Configure(cfg *network.Config) error {
	if err := nsutil.LoUp(); err != nil {
		return err
	}
	return nsutil.WaitLink(cfg.Interface, cfg.Address, 5*time.Second)
}
