// Package nsutil holds what the network drivers share: starting helper
// processes that die with the supervisor, checking /dev/net/tun, and the
// namespace-side configuration done with netlink.
package nsutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// TunPath is the device slirp4netns and pasta open. They hard-code it, so
// it is a variable only for error messages.
const TunPath = "/dev/net/tun"

// CheckTun fails early, with the fix, when the user cannot open the TUN
// device: the helpers would otherwise die with a bare "open: Permission
// denied" after the namespace was half set up.
func CheckTun() error {
	f, err := os.OpenFile(TunPath, os.O_RDWR, 0)
	if err == nil {
		_ = f.Close() // opened only to test access; nothing written
		return nil
	}
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("cannot open %s: %w: the device must be usable by non-root users (Debian's default is mode 0666; as root run `chmod 0666 %s`)", TunPath, err, TunPath)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("cannot open %s: %w: the kernel needs the tun module (as root: `modprobe tun`)", TunPath, err)
	}
	return fmt.Errorf("cannot open %s: %w", TunPath, err)
}

// Helper is a running helper process whose stderr goes to a log file.
type Helper struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
	err     error
	once    sync.Once
}

// StartHelper starts cmd so that it gets SIGKILL when the supervisor dies.
// Pdeathsig fires when the *thread* that forked exits, so fork from a
// locked thread; Go never ends an unlocked thread, so unlocking afterwards
// keeps it alive for the process's lifetime.
func StartHelper(name string, cmd *exec.Cmd, logPath string) (*Helper, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	h := &Helper{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() { h.err = cmd.Wait(); close(h.done) }()
	return h, nil
}

// Done is closed when the helper has exited.
func (h *Helper) Done() <-chan struct{} { return h.done }

// Wait returns a channel that receives Exited's error once the helper has
// exited (network.Waiter).
func (h *Helper) Wait() <-chan error {
	ch := make(chan error, 1)
	go func() { <-h.done; ch <- h.Exited() }()
	return ch
}

// Exited describes how the helper ended, with the tail of its log.
func (h *Helper) Exited() error {
	return fmt.Errorf("%s exited (%v): %s", h.Name, h.err, h.LogTail())
}

// LogTail returns the last lines the helper wrote, for error messages.
func (h *Helper) LogTail() string {
	b, _ := os.ReadFile(h.LogPath)
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return "(no output)"
	}
	return strings.ReplaceAll(string(b), "\n", "; ")
}

// Stop asks the helper to exit (via polite, if given), then kills it. It
// waits for the exit so that nothing is left behind when it returns.
func (h *Helper) Stop(polite func()) {
	h.once.Do(func() {
		if polite != nil {
			polite()
			select {
			case <-h.done:
				return
			case <-time.After(2 * time.Second):
			}
		}
		_ = h.Cmd.Process.Signal(syscall.SIGKILL)
		<-h.done
	})
}

// WaitReady waits for a byte on ready, the helper's exit, or ctx.
func (h *Helper) WaitReady(ctx context.Context, ready *os.File) error {
	got := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := ready.Read(b[:])
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			<-h.done // EOF: it closed the fd by exiting
			return h.Exited()
		}
		return nil
	case <-h.done:
		return h.Exited()
	case <-ctx.Done():
		return fmt.Errorf("%s not ready: %w (log: %s)", h.Name, ctx.Err(), h.LogTail())
	}
}

// LoUp brings up the namespace's loopback interface.
func LoUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}

// WaitLink waits until the interface exists, is up and has addr: helpers
// such as pasta configure it asynchronously.
func WaitLink(name string, addr netip.Prefix, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		last = checkLink(name, addr)
		if last == nil || time.Now().After(deadline) {
			return last
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkLink(name string, addr netip.Prefix) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %s is down", name)
	}
	if !addr.IsValid() {
		return nil
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip == addr.Addr() {
			return nil
		}
	}
	return fmt.Errorf("interface %s has no address %s", name, addr)
}

// ConfigureStatic sets the address, MTU and default route on an interface
// the host side moved into the namespace.
func ConfigureStatic(name string, addr netip.Prefix, gw netip.Addr, mtu int) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	if mtu > 0 {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, name, err)
		}
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
	if err := netlink.AddrReplace(l, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %s on %s: %w", gw, name, err)
	}
	return nil
}
