// Package slirp4netns is the default network driver: a TAP device inside
// the namespace, backed by slirp4netns's user-mode TCP/IP stack on the host.
// It needs nothing from root beyond a usable /dev/net/tun.
package slirp4netns

import (
	"context"
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
	// Name is how users pick this driver (--network slirp4netns, the
	// default) and how it is registered with pkg/network.
	Name = "slirp4netns"
	// DefaultMTU is slirp4netns's maximum: the largest MTU cuts the per-
	// packet cost of its user-space stack, which is what limits throughput.
	DefaultMTU = 65520
	ifname     = "tap0"
)

func init() {
	network.Register(network.Driver{Name: Name, Helper: "slirp4netns", Package: "slirp4netns",
		Find: func() (string, error) { return network.LookHelper(Name, "slirp4netns", "slirp4netns") }, NeedsTun: true, HostLoopback: true,
		New: func() (network.Parent, network.Child) { return &Parent{}, Child{} }})
}

var _ network.Waiter = (*Parent)(nil)

// Parent runs slirp4netns on the host side.
type Parent struct {
	helper *nsutil.Helper
	exitW  *os.File
}

// Start runs slirp4netns against ns's network namespace and returns once
// slirp4netns reports on its ready fd that the TAP device is configured
// (or after 10 s, or when it exits). The exit fd it also gets is held
// open until Close.
func (p *Parent) Start(ctx context.Context, ns network.NS, opts network.Options) (*network.Config, error) {
	bin, err := network.LookHelper(Name, "slirp4netns", "slirp4netns")
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
	if mtu < 576 || mtu > 65521 {
		return nil, fmt.Errorf("network driver %s: MTU %d out of range 576..65521", Name, mtu)
	}
	api := filepath.Join(ns.StateDir, "slirp4netns.sock")
	address, gateway, dns := network.Layout(opts.Subnet)
	// --cidr moves slirp4netns's whole layout (.100, .2, .3) into the
	// node's subnet.
	args := []string{"--configure", fmt.Sprintf("--mtu=%d", mtu), "--cidr=" + address.Masked().String(), "--ready-fd=3", "--exit-fd=4", "--enable-seccomp"}
	if ns.PID > 0 {
		args = append(args, "--enable-sandbox")
	}
	if !opts.AllowHostLoopback {
		args = append(args, "--disable-host-loopback")
	}
	// sun_path holds 108 bytes; a deep StateDir would make slirp4netns fail
	// late, so go without the API socket (nothing in usernode needs it).
	if len(api) < 100 {
		// A restart after the helper died finds its socket file; not
		// there is the usual case.
		_ = os.Remove(api)
		args = append(args, "--api-socket="+api)
	}
	if ns.UserNS != "" {
		args = append(args, "--userns-path="+ns.UserNS)
	}
	// slirp4netns 1.2.0's sandbox joins the user namespace of the target
	// PID; with --netns-type=path there is none and it dies with
	// "setegid(0)". So name the PID, whose netns is ns.NetNS.
	if ns.PID > 0 {
		args = append(args, fmt.Sprint(ns.PID), ifname)
	} else {
		args = append(args, "--netns-type=path", ns.NetNS, ifname)
	}

	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		_ = readyW.Close() // a pipe end: closing frees it, nothing to lose
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{readyW, exitR}
	h, err := nsutil.StartHelper(Name, cmd, filepath.Join(ns.StateDir, "slirp4netns.log"))
	// The child has its own copies of these pipe ends now; the parent's
	// close only frees the descriptor and cannot fail in a way that
	// matters.
	_ = readyW.Close()
	_ = exitR.Close()
	if err != nil {
		_ = exitW.Close()
		return nil, err
	}
	p.helper, p.exitW = h, exitW
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.WaitReady(wctx, readyR); err != nil {
		_ = p.Close() // always nil; the wait's error is the one to report
		return nil, fmt.Errorf("network driver %s: %w", Name, err)
	}
	cfg := &network.Config{Driver: Name, Interface: ifname, Address: address, Gateway: gateway,
		DNS: []netip.Addr{dns}, MTU: mtu, Extra: map[string]string{"pid": fmt.Sprint(cmd.Process.Pid)}}
	if len(api) < 100 {
		cfg.Extra["apiSocket"] = api
	}
	return cfg, nil
}

// Wait returns a channel that receives how slirp4netns ended once it has
// (network.Waiter): the TAP device goes with it.
func (p *Parent) Wait() <-chan error {
	if p.helper == nil {
		return nil
	}
	return p.helper.Wait()
}

// Close closes the exit fd, which slirp4netns takes as the order to quit.
func (p *Parent) Close() error {
	if p.helper != nil {
		p.helper.Stop(func() { _ = p.exitW.Close() })
	}
	if p.exitW != nil {
		// Again after Stop, for a Start that failed before the helper
		// ran; closing a pipe twice only returns os.ErrClosed.
		_ = p.exitW.Close()
	}
	return nil
}

// Child only brings up lo: slirp4netns --configure did the rest.
type Child struct{}

// Configure brings up lo and waits up to 5 s for the TAP device to carry
// the address slirp4netns gave it, so that what runs next has a network.
func (Child) Configure(cfg *network.Config) error {
	if err := nsutil.LoUp(); err != nil {
		return err
	}
	return nsutil.WaitLink(cfg.Interface, cfg.Address, 5*time.Second)
}
