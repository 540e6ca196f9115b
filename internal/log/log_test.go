package log

import (
	"bytes"
	"testing"
	"time"
)

func TestLines(t *testing.T) {
	var b bytes.Buffer
	l := New(&b, 1)
	l.Infof("node %q Ready", "a")
	l.Warnf("DEGRADED MODE: %s\nsecond line", "no delegation")
	l.V(1).Infof("shown at -v 1")
	l.V(2).Infof("hidden at -v 1")
	want := "usernode: node \"a\" Ready\n" +
		"usernode: WARNING: DEGRADED MODE: no delegation\n" +
		"usernode: WARNING: second line\n" +
		"usernode: shown at -v 1\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	if New(&b, 0).V(1).Enabled() {
		t.Fatal("V(1) enabled at verbosity 0")
	}
}

func TestPhase(t *testing.T) {
	var b bytes.Buffer
	l := New(&b, 0)
	t0 := time.Unix(0, 0)
	clock := []time.Time{t0, t0.Add(1234 * time.Millisecond)}
	l.now = func() time.Time { c := clock[0]; clock = clock[1:]; return c }
	l.Phase("sandbox")("net slirp4netns")
	if got, want := b.String(), "usernode: sandbox      1234ms (net slirp4netns)\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestNilDiscards(t *testing.T) {
	var l *Logger
	l.Infof("x")
	l.V(3).Infof("x")
	l.Phase("x")()
	if l.Writer() == nil {
		t.Fatal("nil logger has no writer")
	}
}
