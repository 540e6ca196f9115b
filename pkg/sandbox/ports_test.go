package sandbox

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usernode/usernode/pkg/port"
)

// busyPort answers Add with port.ErrInUse until free, then with err.
type busyPort struct {
	free  time.Time
	err   error
	tries atomic.Int32
}

func (b *busyPort) Add(context.Context, port.Spec) error {
	b.tries.Add(1)
	if time.Now().Before(b.free) {
		return port.InUse("host port 127.0.0.1:6443/tcp is already in use by another program: pick another host port")
	}
	return b.err
}

func TestAddPortWaitsOutAPortBriefly(t *testing.T) {
	sp := port.Spec{Proto: "tcp", HostPort: 6443, ChildPort: 6443}
	ctx := context.Background()

	// Held for a moment (another up's check): forwarded once it is let go.
	b := &busyPort{free: time.Now().Add(200 * time.Millisecond)}
	if err := addPort(ctx, b, sp, 2*time.Second); err != nil {
		t.Errorf("a port held 200 ms: %v", err)
	}
	if b.tries.Load() < 2 {
		t.Errorf("a port held 200 ms was asked for %d times", b.tries.Load())
	}

	// Held throughout: the forwarder's error, which names the port.
	b = &busyPort{free: time.Now().Add(time.Hour)}
	began := time.Now()
	err := addPort(ctx, b, sp, 300*time.Millisecond)
	if !errors.Is(err, port.ErrInUse) || time.Since(began) < 300*time.Millisecond {
		t.Errorf("a port held throughout: %v after %s", err, time.Since(began))
	}

	// Any other failure is said at once.
	b = &busyPort{err: errors.New("host IP 198.51.100.7 is not an address of this host")}
	if err := addPort(ctx, b, sp, time.Hour); err == nil || b.tries.Load() != 1 {
		t.Errorf("another failure: %v after %d tries", err, b.tries.Load())
	}

	// A stop during the wait ends it.
	b = &busyPort{free: time.Now().Add(time.Hour)}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	began = time.Now()
	if err := addPort(cctx, b, sp, time.Hour); err == nil || time.Since(began) > 5*time.Second {
		t.Errorf("stopped while waiting: %v after %s", err, time.Since(began))
	}
}
