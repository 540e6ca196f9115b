// Package api serves a port.Forwarder over a unix socket: JSON over HTTP,
// so `curl --unix-socket` works too.
//
//	GET    /v1/ports          -> [Spec...]
//	POST   /v1/ports   Spec   -> 201, or {"error": "..."} with 4xx
//	DELETE /v1/ports   Spec   -> 204, or {"error": "..."} with 4xx
//
// The socket file's mode (0600, made by the supervisor) is the access
// control: whoever can connect can expose ports on the host.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/usernode/usernode/pkg/port"
)

const path = "/v1/ports"

type errorBody struct {
	Error string `json:"error"`
	// InUse says the error matches port.ErrInUse, for a client that
	// waits a taken port out.
	InUse bool `json:"inUse,omitempty"`
}

// Handler returns the HTTP handler for f.
func Handler(f port.Forwarder) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, f.List())
	})
	mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
		s, ok := readSpec(w, r)
		if !ok {
			return
		}
		if err := f.Add(r.Context(), s); err != nil {
			writeJSON(w, http.StatusConflict, errorBody{Error: err.Error(), InUse: errors.Is(err, port.ErrInUse)})
			return
		}
		writeJSON(w, http.StatusCreated, s)
	})
	mux.HandleFunc("DELETE "+path, func(w http.ResponseWriter, r *http.Request) {
		s, ok := readSpec(w, r)
		if !ok {
			return
		}
		if err := f.Remove(r.Context(), s); err != nil {
			writeJSON(w, http.StatusNotFound, errorBody{Error: err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func readSpec(w http.ResponseWriter, r *http.Request) (port.Spec, bool) {
	var s port.Spec
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&s); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "bad port spec: " + err.Error()})
		return s, false
	}
	return s, true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// The status is sent; a failed body write means the client went away
	// and there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// Serve answers API requests on l until l is closed. It returns nil then.
func Serve(l net.Listener, f port.Forwarder) error {
	return ServeHandler(l, Handler(f))
}

// ServeHandler is Serve with h (Handler, or a wrapper of it) answering.
func ServeHandler(l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	err := srv.Serve(l)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Client talks to Serve over a unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the API socket at socketPath.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socketPath)
	}}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *Client) do(ctx context.Context, method string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://usernode"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("port API at %s: %w (is the node running?)", c.socket, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var e errorBody
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			if e.InUse {
				return port.InUse(e.Error)
			}
			return errors.New(e.Error)
		}
		return fmt.Errorf("port API: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Add asks the running node to forward s; the node's error (port in use,
// already forwarded) comes back as this call's error.
func (c *Client) Add(ctx context.Context, s port.Spec) error {
	return c.do(ctx, http.MethodPost, s, nil)
}

// Remove asks the running node to stop forwarding s.
func (c *Client) Remove(ctx context.Context, s port.Spec) error {
	return c.do(ctx, http.MethodDelete, s, nil)
}

// List returns the ports the running node forwards, in the node's order.
func (c *Client) List(ctx context.Context) ([]port.Spec, error) {
	var out []port.Spec
	err := c.do(ctx, http.MethodGet, nil, &out)
	return out, err
}
