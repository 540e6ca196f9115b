package main

import (
	"os"
	"runtime/debug"
	"testing"
	"time"
)

// hack/build-k8s.sh runs this beside its build.
func TestSettleGC(t *testing.T) {
	t.Setenv(SettledGOGCEnv, "25")
	t.Setenv(SettleAfterEnv, "50ms")
	before := debug.SetGCPercent(50)
	defer debug.SetGCPercent(before)
	settleGC()
	for _, e := range []string{SettledGOGCEnv, SettleAfterEnv} {
		if v, ok := os.LookupEnv(e); ok {
			t.Errorf("%s=%q is still set: the daemon's children would inherit it", e, v)
		}
	}
	if p := debug.SetGCPercent(50); p != 50 {
		t.Fatalf("GC target %d right after start, want GOGC's 50 until the settle time", p)
	}
	time.Sleep(300 * time.Millisecond)
	if p := debug.SetGCPercent(50); p != 25 {
		t.Fatalf("GC target %d after the settle time, want 25", p)
	}
}

func TestSettleGCBadValueLeavesGOGC(t *testing.T) {
	t.Setenv(SettledGOGCEnv, "low")
	before := debug.SetGCPercent(50)
	defer debug.SetGCPercent(before)
	settleGC()
	time.Sleep(100 * time.Millisecond)
	if p := debug.SetGCPercent(50); p != 50 {
		t.Fatalf("GC target %d, want GOGC's 50 kept", p)
	}
}
