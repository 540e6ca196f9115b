package main

// The measuring tool. The harness's own binary, static, is copied into
// every pod and run in the bound's namespaces too: `multinode serve` is
// the server everywhere, `multinode send|recv|rtt|probe` the client, so
// every row of the table is measured by the same code and only the path
// between the two ends differs.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/usernode/usernode/bench/internal/host"
)

const (
	bulkPort = 5201 // throughput: the client says which way the bytes go
	echoPort = 7777 // RTT and reachability: echoes whatever it reads
	bufSize  = 256 << 10
	rttWarm  = 1000  // round trips left out of the median (connection warm-up)
	rttMax   = 20000 // round trips per RTT run at most, as bench/netbench
)

// Header bytes on the bulk port.
const (
	opSend = 'S' // the client sends until it closes; the server replies with the count
	opRecv = 'R' // the server sends for the given milliseconds, then closes
)

// toolModes are the first arguments that make this binary the tool.
var toolModes = map[string]func(args []string) error{
	"serve": serve, "send": clientMode, "recv": clientMode, "rtt": clientMode, "probe": clientMode,
}

// result is what a client prints: one JSON line the harness parses.
type result struct {
	Value float64 `json:"value"` // Gbit/s, or µs for rtt
	N     int64   `json:"n"`     // bytes moved, or round trips timed
}

func serve(_ []string) error {
	bulk, err := net.Listen("tcp", fmt.Sprintf(":%d", bulkPort))
	if err != nil {
		return err
	}
	echo, err := net.Listen("tcp", fmt.Sprintf(":%d", echoPort))
	if err != nil {
		return err
	}
	go acceptLoop(echo, serveEcho)
	acceptLoop(bulk, serveBulk)
	return nil
}

func acceptLoop(l net.Listener, h func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go h(c)
	}
}

// serveEcho sends back what it reads: with 1-byte messages, a ping-pong.
func serveEcho(c net.Conn) {
	defer c.Close()
	_ = c.(*net.TCPConn).SetNoDelay(true) // Go's default already; kept explicit
	b := make([]byte, 512)
	for {
		n, err := c.Read(b)
		if err != nil {
			return
		}
		if _, err := c.Write(b[:n]); err != nil {
			return
		}
	}
}

// serveBulk: the 5-byte header is the op and, for opRecv, the duration.
// Errors end the connection; the client sees them as a short count.
func serveBulk(c net.Conn) {
	defer c.Close()
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	buf := make([]byte, bufSize)
	switch hdr[0] {
	case opSend:
		// Counted by hand with a large buffer: io.Discard's 8 KiB reads
		// would cost more syscalls than the fast rows can afford.
		var n uint64
		for {
			k, err := c.Read(buf)
			n += uint64(k)
			if err != nil {
				break
			}
		}
		_ = binary.Write(c, binary.BigEndian, n) // a failure shows as the client's read error
	case opRecv:
		end := time.Now().Add(time.Duration(binary.BigEndian.Uint32(hdr[1:])) * time.Millisecond)
		for time.Now().Before(end) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}

func clientMode(args []string) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	addr := fs.String("addr", "", "the server's IP")
	secs := fs.Float64("t", 3, "seconds (send, recv: the run; rtt: at most)")
	wait := fs.Duration("timeout", time.Minute, "probe: how long to keep trying")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("-addr is required")
	}
	d := time.Duration(*secs * float64(time.Second))
	var r result
	var err error
	switch args[0] {
	case "send":
		r, err = send(*addr, d)
	case "recv":
		r, err = recv(*addr, d)
	case "rtt":
		r, err = rtt(*addr, d)
	case "probe":
		err = probe(*addr, *wait)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

func dial(ip string, port int) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), 10*time.Second)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// send: the client writes for d; the rate is what the server counted over
// the time until its count came back, so bytes still in flight at the
// end are not credited.
func send(ip string, d time.Duration) (result, error) {
	c, err := dial(ip, bulkPort)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	buf := make([]byte, bufSize)
	t0 := time.Now()
	if _, err := c.Write([]byte{opSend, 0, 0, 0, 0}); err != nil {
		return result{}, err
	}
	for end := t0.Add(d); time.Now().Before(end); {
		if _, err := c.Write(buf); err != nil {
			return result{}, err
		}
	}
	if err := c.CloseWrite(); err != nil {
		return result{}, err
	}
	var n uint64
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		return result{}, fmt.Errorf("the server's count: %w", err)
	}
	return result{Value: float64(n) * 8 / time.Since(t0).Seconds() / 1e9, N: int64(n)}, nil
}

// recv: the server writes for d, the client counts until EOF.
func recv(ip string, d time.Duration) (result, error) {
	c, err := dial(ip, bulkPort)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	hdr := []byte{opRecv, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], uint32(d.Milliseconds()))
	t0 := time.Now()
	if _, err := c.Write(hdr); err != nil {
		return result{}, err
	}
	buf := make([]byte, bufSize)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return result{}, err
		}
	}
	return result{Value: float64(n) * 8 / time.Since(t0).Seconds() / 1e9, N: n}, nil
}

// rtt: the median of 1-byte ping-pongs on one connection, as
// bench/netbench measures it, bounded by d so a slow path does not
// stretch the round.
func rtt(ip string, d time.Duration) (result, error) {
	c, err := dial(ip, echoPort)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	_ = c.SetNoDelay(true) // Go's default already; kept explicit
	b := []byte{1}
	var us []float64
	for i, end := 0, time.Now().Add(d); i < rttMax && (i < rttWarm+100 || time.Now().Before(end)); i++ {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return result{}, err
		}
		if _, err := c.Read(b); err != nil {
			return result{}, err
		}
		if i >= rttWarm {
			us = append(us, float64(time.Since(t0).Nanoseconds())/1e3)
		}
	}
	return result{Value: host.Median(us), N: int64(len(us))}, nil
}

// probe waits until the echo server answers: the first packets across the
// hosts may wait for Flannel to learn the peer's lease.
func probe(ip string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := pingOnce(ip)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no echo from %s:%d within %s: %w", ip, echoPort, wait, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func pingOnce(ip string) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(echoPort)), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second)) // a failure shows as the read's
	if _, err := c.Write([]byte{1}); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}
