package sandbox

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/usernode/usernode/pkg/network"
)

// The network helper's restart policy. The first restart comes quickly:
// the node has no route out until it does (pods lose all egress). A helper
// that keeps dying right after its start is not restarted for ever: after
// netMaxRapid such failures in a row the supervisor gives up and says so
// in the log and in status.
var (
	netFirstBackoff = 200 * time.Millisecond
	netMaxBackoff   = 5 * time.Second
	// netStableAfter is how long a helper must have run for its exit not
	// to count as rapid.
	netStableAfter = time.Minute
	netMaxRapid    = 5
)

// netWatch is the supervisor's watch over the network helper.
type netWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// watchNetwork starts restarting the network helper whenever it exits,
// for drivers that have one (network.Waiter). Its stop comes first in the
// teardown, so that the helper's end on our own stop is no failure.
func (r *run) watchNetwork() error {
	w, ok := r.net.(network.Waiter)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithCancel(r.ctx)
	r.netWatch = &netWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.netWatch.done)
		r.superviseNetwork(ctx, w.Wait())
	}()
	return nil
}

// superviseNetwork waits for the helper's exit and starts the driver
// again against the same namespace (the node's init, which holds it, is
// still alive), then has init redo the namespace's side.
func (r *run) superviseNetwork(ctx context.Context, exited <-chan error) {
	started := time.Now()
	rapid := 0
	backoff := netFirstBackoff
	for {
		var why error
		select {
		case <-ctx.Done():
			return
		case <-r.agentGone:
			return
		case why = <-exited:
		}
		// The node's end takes its namespace and the helper's device with
		// it, before the agent is reaped: no failure either. The link
		// of a process that has exited no longer resolves.
		if _, err := os.Stat(r.netNS.NetNS); err != nil {
			return
		}
		if time.Since(started) > netStableAfter {
			rapid, backoff = 0, netFirstBackoff
		}
		for {
			rapid++
			if rapid > netMaxRapid {
				msg := fmt.Sprintf("%d restarts in a row did not last %s; the last: %v", netMaxRapid, netStableAfter, why)
				r.log.Warnf("network: giving up on %s: the node has no network beyond itself until it is restarted (`usernode down`, `usernode up`): %s", r.opt.Network.Helper, msg)
				r.updateNetHelper(func(h *NetHelper) { h.GaveUp = msg; h.PID = 0 })
				return
			}
			n := r.updateNetHelper(func(h *NetHelper) { h.Restarts++; h.LastExit = oneLine(why); h.PID = 0; h.LastRestart = time.Now() })
			r.log.Warnf("network: %v; restart %d in %s", why, n, backoff)
			select {
			case <-ctx.Done():
				return
			case <-r.agentGone:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, netMaxBackoff)
			p, cfg, health, err := r.restartNetwork(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				why = err
				continue
			}
			exited = p.(network.Waiter).Wait()
			started = time.Now()
			r.log.Infof("network: %s restarted (restart %d, pid %s): %s", r.opt.Network.Helper, n, cfg.Extra["pid"], describeHealth(cfg, health))
			break
		}
	}
}

// restartNetwork starts a fresh Parent against the node's namespace and
// has init configure the inside again. On success the new Parent is the
// run's (the teardown closes it) and state.json says so.
func (r *run) restartNetwork(ctx context.Context) (network.Parent, *network.Config, *network.Health, error) {
	p, _ := r.opt.Network.New()
	cfg, err := p.Start(ctx, r.netNS, r.cfg.NetOptions)
	if err != nil {
		_ = p.Close() // stops whatever the failed Start left; always nil
		return nil, nil, nil, fmt.Errorf("starting %s again: %w", r.opt.Network.Helper, err)
	}
	m, err := r.reconfigure(ctx, cfg)
	if err != nil {
		_ = p.Close()
		return nil, nil, nil, fmt.Errorf("configuring the node's side again after restarting %s: %w", r.opt.Network.Helper, err)
	}
	r.netMu.Lock()
	old := r.net
	r.net, r.netCfg = p, cfg
	r.netMu.Unlock()
	_ = old.Close() // its helper has exited; Close only reaps what is left
	r.updateNetHelper(func(h *NetHelper) { h.PID = helperPID(cfg) })
	return p, cfg, m.Health, nil
}

// reconfigure sends cfg down to init, which runs the driver's Child half
// again, and returns init's answer. The agent stays the only way in: init
// answers through it, as at the start.
func (r *run) reconfigure(ctx context.Context, cfg *network.Config) (msg, error) {
	type answer struct {
		m   msg
		err error
	}
	got := make(chan answer, 1)
	go func() {
		if err := r.ch.send(msg{Kind: "net", Net: cfg}); err != nil {
			got <- answer{err: err}
			return
		}
		m, err := r.ch.recv("ready")
		got <- answer{m, err}
	}()
	select {
	case a := <-got:
		return a.m, a.err
	case <-ctx.Done():
		// The teardown kills the agent next, which ends the exchange.
		return msg{}, ctx.Err()
	}
}

// updateNetHelper changes the published NetHelper and returns its
// restart count.
func (r *run) updateNetHelper(f func(*NetHelper)) int {
	r.netMu.Lock()
	defer r.netMu.Unlock()
	st := *r.state
	h := *st.NetHelper
	f(&h)
	st.NetHelper, st.Network = &h, r.netCfg
	r.state = &st
	if err := writeState(r.cfg.RuntimeDir, &st); err != nil {
		r.log.Warnf("network: recording the helper's state for `status`: %v", err)
	}
	return h.Restarts
}

// stopNetWatch ends the watch; after it the run's Parent no longer
// changes.
func (r *run) stopNetWatch(wait bool) {
	if r.netWatch == nil {
		return
	}
	r.netWatch.cancel()
	if wait {
		<-r.netWatch.done
	}
}

func helperPID(cfg *network.Config) int {
	pid, _ := strconv.Atoi(cfg.Extra["pid"]) // absent: 0, no helper
	return pid
}

// describeHealth is one line for the log: what init found once it had
// configured the namespace again.
func describeHealth(cfg *network.Config, h *network.Health) string {
	if h == nil {
		return fmt.Sprintf("%s %s (not measured)", cfg.Interface, cfg.Address)
	}
	if !h.OK() {
		return "but " + strings.Join(h.Problems, "; ")
	}
	return fmt.Sprintf("%s up with %s, default via %s, %s answered in %s", cfg.Interface, cfg.Address, cfg.Gateway, h.Probe, h.RTT.Round(10*time.Microsecond))
}

func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
