package sandbox

import (
	"strings"
	"testing"
	"time"
)

func TestRestartsBackoffAndGiveUp(t *testing.T) {
	p := Restart{Backoff: time.Second, MaxBackoff: 4 * time.Second, Quick: time.Minute, MaxQuick: 3}
	var rs restarts
	if rs.state() != nil {
		t.Fatal("an account before any death")
	}
	// Quick deaths: the wait doubles up to MaxBackoff, and the death after
	// MaxQuick restarts gives up, naming the last death.
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		d, giveUp := rs.next(p, 10*time.Second, false, "killed")
		if giveUp != "" || d != want {
			t.Fatalf("quick death %d: wait %s, give up %q; want %s", i+1, d, giveUp, want)
		}
	}
	if st := rs.state(); st == nil || st.Count != 3 || st.LastDeath != "killed" || st.LastAt.IsZero() {
		t.Errorf("account after 3 deaths: %+v", st)
	}
	_, giveUp := rs.next(p, 0, true, "building it again failed: port in use")
	if !strings.Contains(giveUp, "4 times in a row") || !strings.Contains(giveUp, "port in use") {
		t.Errorf("fourth quick death: give up %q", giveUp)
	}
}

func TestRestartsStableRunStartsAgain(t *testing.T) {
	p := Restart{Backoff: time.Second, MaxBackoff: 8 * time.Second, Quick: time.Minute, MaxQuick: 2}
	var rs restarts
	rs.next(p, time.Second, false, "a")
	rs.next(p, time.Second, false, "b")
	// A sandbox that stayed up past Quick: its death waits the first
	// backoff again and does not count toward giving up.
	for i := range 2 {
		d, giveUp := rs.next(p, 2*time.Minute, false, "c")
		if giveUp != "" || d != time.Second {
			t.Fatalf("death %d after a stable run: wait %s, give up %q", i, d, giveUp)
		}
	}
	if d, giveUp := rs.next(p, time.Second, false, "d"); giveUp != "" || d != 2*time.Second {
		t.Errorf("quick death after a stable run: wait %s, give up %q", d, giveUp)
	}
	if st := rs.state(); st.Count != 5 {
		t.Errorf("count %d, want every death counted (5)", st.Count)
	}
}

func TestDeathOf(t *testing.T) {
	if got := deathOf(137); !strings.Contains(got, "SIGKILL") {
		t.Errorf("deathOf(137) = %q", got)
	}
}
