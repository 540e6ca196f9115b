package cmd

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/internal/memtrim"
	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/api"
	"github.com/usernode/usernode/pkg/port/builtin"
	"github.com/usernode/usernode/pkg/sandbox"
)

// SandboxEntries are the drivers of this build for the sandbox's agent and
// init: every registered network driver and the built-in port forwarder.
// main registers them (sandbox.RegisterEntries); the commands that start a
// sandbox give Run the same ones (sandboxOpt).
func SandboxEntries() sandbox.Entries {
	return sandbox.Entries{Network: network.Lookup, Ports: portDriver()}
}

func portDriver() *sandbox.PortDriver {
	return &sandbox.PortDriver{
		NewForwarder: func(netns string, o sandbox.PortOptions) (port.Forwarder, error) {
			return builtin.New(netns, builtin.Options{BusyPoll: o.BusyPoll, KeepSourceIP: o.KeepSourceIP})
		},
		Serve: func(l net.Listener, f port.Forwarder) error {
			return api.ServeHandler(l, trimAfter(api.Handler(f)))
		},
		Client: func(sock string) sandbox.PortClient { return api.NewClient(sock) },
	}
}

// sandboxOpt is what a command runs a sandbox with: the network driver
// named net, the port forwarder, and l for its progress lines.
func sandboxOpt(net string, l *log.Logger) (sandbox.Opt, error) {
	d, err := network.Lookup(net)
	if err != nil {
		return sandbox.Opt{}, err
	}
	return sandbox.Opt{Network: d, Ports: portDriver(), Log: l}, nil
}

// trimIdle is how long the port API stays quiet before the agent trims
// its memory: the supervisor adds a sandbox's ports one request after
// another right after the start, `usernode port add` one at a time.
const trimIdle = time.Second

// trimAfter runs memtrim.Trim once the API has been idle for trimIdle
// after a request. The API's code (net/http, JSON) is the agent's biggest
// and it runs only then: measured, adding the ports after the agent's own
// trim mapped 5.5 MB of the binary back into it for good.
func trimAfter(h http.Handler) http.Handler {
	var mu sync.Mutex
	var t *time.Timer
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		mu.Lock()
		defer mu.Unlock()
		if t == nil {
			t = time.AfterFunc(trimIdle, memtrim.Trim)
		} else {
			t.Reset(trimIdle)
		}
	})
}
