package api

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"

	"github.com/usernode/usernode/pkg/port"
)

// refuser fails every Add with err.
type refuser struct{ err error }

func (r refuser) Add(context.Context, port.Spec) error    { return r.err }
func (r refuser) Remove(context.Context, port.Spec) error { return nil }
func (r refuser) List() []port.Spec                       { return nil }
func (r refuser) Close() error                            { return nil }

// A port in use stays port.ErrInUse across the API (a node's start waits
// only that out), with the forwarder's words; any other error does not.
func TestAddErrorsCrossTheAPI(t *testing.T) {
	for _, tc := range []struct {
		err   error
		inUse bool
	}{
		{port.InUse("host port 127.0.0.1:6443/tcp is already in use by another program: pick another host port"), true},
		{errors.New("host IP 198.51.100.7 is not an address of this host"), false},
	} {
		sock := filepath.Join(t.TempDir(), "port.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- Serve(l, refuser{tc.err}) }()
		err = NewClient(sock).Add(context.Background(), port.Spec{Proto: "tcp", HostPort: 6443, ChildPort: 6443})
		l.Close()
		if serr := <-done; serr != nil {
			t.Errorf("Serve: %v", serr)
		}
		if err == nil || err.Error() != tc.err.Error() {
			t.Errorf("Add's error %v, want %q", err, tc.err)
		}
		if errors.Is(err, port.ErrInUse) != tc.inUse {
			t.Errorf("%v: errors.Is(ErrInUse) = %v, want %v", err, !tc.inUse, tc.inUse)
		}
	}
}
