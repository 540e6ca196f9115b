package sandbox

import (
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/pkg/network"
)

// msg is what the three processes tell each other over socketpairs, one
// JSON object per message.
type msg struct {
	Kind  string          `json:"kind"` // init, net, ready, error
	PID   int             `json:"pid,omitempty"`
	Net   *network.Config `json:"net,omitempty"`
	Error string          `json:"error,omitempty"`
	// Health is init's measure of the network after it configured it
	// again, in the "ready" that answers a later "net".
	Health *network.Health `json:"health,omitempty"`
	// Config goes first from each process to the one below it, rather than
	// in argv, where every `ps` would show it.
	Config *agentConfig `json:"config,omitempty"`
}

type channel struct {
	f   *os.File
	enc *json.Encoder
	dec *json.Decoder
}

func newChannel(f *os.File) *channel {
	return &channel{f: f, enc: json.NewEncoder(f), dec: json.NewDecoder(f)}
}

// socketpair returns our end and the end to hand to a child.
func socketpair() (*channel, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return newChannel(os.NewFile(uintptr(fds[0]), "sync")), os.NewFile(uintptr(fds[1]), "sync-child"), nil
}

func (c *channel) send(m msg) error { return c.enc.Encode(m) }

// recv waits for the next message; an "error" message from the other side
// comes back as an error.
func (c *channel) recv(want string) (msg, error) {
	var m msg
	if err := c.dec.Decode(&m); err != nil {
		return m, fmt.Errorf("waiting for %q: %w", want, err)
	}
	if m.Kind == "error" {
		return m, fmt.Errorf("%s", m.Error)
	}
	if m.Kind != want {
		return m, fmt.Errorf("got %q, want %q", m.Kind, want)
	}
	return m, nil
}

func (c *channel) Close() error { return c.f.Close() }
