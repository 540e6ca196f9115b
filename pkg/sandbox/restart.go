package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Restart is how the supervisor builds a sandbox again after it died:
// a process of the sandbox's own (the agent, init, the node's first
// process) killed by a signal, with no stop asked for. A first process
// that exits, even failing, ended the node on purpose and is not
// restarted; nor is a sandbox that died before it was first up (its
// build is what failed, and the error says why).
//
// The state dir is kept, so the node comes back with its cluster: for
// `usernode up`, the same etcd, PKI and images.
type Restart struct {
	// Backoff is the wait before the first restart; it doubles after
	// each quick death, up to MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// Quick is how long a sandbox must stay up for its death not to count
	// as quick. After MaxQuick restarts in a row that each followed a
	// quick death, the next quick death ends the node with an error.
	Quick    time.Duration
	MaxQuick int
}

// DefaultRestart is `usernode up`'s policy. The first restart comes after
// a second: the node's pods are down until it is back (a warm `up`
// measures 5-10 s to Ready here). Five deaths each within two minutes of
// the start give up, as systemd's StartLimitBurst does, rather than
// building a sandbox that cannot stay up for ever.
var DefaultRestart = Restart{Backoff: time.Second, MaxBackoff: 30 * time.Second, Quick: 2 * time.Minute, MaxQuick: 5}

// Restarts is the supervisor's account of the sandbox's deaths, published
// in State for `usernode status`.
type Restarts struct {
	Count     int       `json:"count"`
	LastDeath string    `json:"lastDeath,omitempty"`
	LastAt    time.Time `json:"lastAt,omitzero"`
	// Next is when the sandbox is built again, while the supervisor waits
	// to (the State then has no agent or init).
	Next time.Time `json:"next,omitzero"`
}

// restarts decides, death by death, when to build the sandbox again.
type restarts struct {
	count, quick int
	backoff      time.Duration
	last         string
	lastAt       time.Time
}

// next records a death and returns the wait before the next build, or
// why it gives up. up is how long the sandbox had been up; never says it
// was not up at all (building it again failed).
func (rs *restarts) next(p Restart, up time.Duration, never bool, death string) (time.Duration, string) {
	if never || up < p.Quick {
		rs.quick++
	} else {
		// A sandbox that stayed up starts the count again.
		rs.quick, rs.backoff = 0, 0
	}
	rs.count++
	rs.last, rs.lastAt = death, time.Now()
	if rs.quick > p.MaxQuick {
		return 0, fmt.Sprintf("the node's sandbox died %d times in a row, each within %s of its start (last: %s); giving up: `usernode logs` shows why, `usernode up` starts it again", rs.quick, p.Quick, death)
	}
	switch {
	case rs.backoff == 0:
		rs.backoff = p.Backoff
	case rs.backoff < p.MaxBackoff:
		rs.backoff = min(2*rs.backoff, p.MaxBackoff)
	}
	return rs.backoff, ""
}

// state is the account for State, nil before the first death.
func (rs *restarts) state() *Restarts {
	if rs.count == 0 {
		return nil
	}
	return &Restarts{Count: rs.count, LastDeath: rs.last, LastAt: rs.lastAt}
}

// sleepOrStop waits d, or less if ctx ends or the supervisor is told to
// stop: false then.
func sleepOrStop(ctx context.Context, d time.Duration) bool {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-sigs:
	}
	return false
}

// deathOf names how a sandbox process with exit code code (128+signal)
// died.
func deathOf(code int) string {
	return "a process of the sandbox was killed by " + unix.SignalName(unix.Signal(code-128))
}
