// Package log is how usernode talks to the person running it. It owns the
// "usernode:" prefix, so no other package prints it (or anything) on its
// own: libraries take a *Logger and the CLI decides where it goes and how
// much it shows.
//
//   - Infof and Warnf are for the user, always shown.
//   - V(n).Infof is debug output, shown with -v n or more.
//   - Phase times a long step: `done := l.Phase("sandbox"); ...; done()`
//     prints "usernode: sandbox      123ms", so every progress line of
//     `up` has the same shape and the same clock.
//
// A nil *Logger discards everything, so tests and callers that do not care
// pass nil.
package log

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Prefix starts every line.
const Prefix = "usernode: "

// Logger writes prefixed lines to one writer. Safe for concurrent use.
type Logger struct {
	mu        sync.Mutex
	w         io.Writer
	verbosity int
	now       func() time.Time
}

// New returns a logger that writes to w and shows V(n) lines for
// n <= verbosity.
func New(w io.Writer, verbosity int) *Logger {
	return &Logger{w: w, verbosity: verbosity, now: time.Now}
}

// Discard drops everything.
var Discard = (*Logger)(nil)

// Writer is where the lines go, for callers that stream a child's output
// (the detached `up`'s log) to the same place.
func (l *Logger) Writer() io.Writer {
	if l == nil {
		return io.Discard
	}
	return l.w
}

func (l *Logger) line(prefix, format string, args ...any) {
	if l == nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		// A log line that cannot be written has nowhere else to go.
		_, _ = fmt.Fprint(l.w, Prefix, prefix, s, "\n")
	}
}

// Infof tells the user something.
func (l *Logger) Infof(format string, args ...any) { l.line("", format, args...) }

// Warnf tells the user something is wrong but usernode goes on.
func (l *Logger) Warnf(format string, args ...any) { l.line("WARNING: ", format, args...) }

// Verbose is a logger gated on a verbosity level.
type Verbose struct {
	l  *Logger
	on bool
}

// V returns a logger that prints only when the user asked for level n
// (-v n) or more.
func (l *Logger) V(n int) Verbose {
	return Verbose{l: l, on: l != nil && n <= l.verbosity}
}

// Enabled reports whether V's lines are shown, for callers whose message
// costs something to build.
func (v Verbose) Enabled() bool { return v.on }

// Infof prints when enabled.
func (v Verbose) Infof(format string, args ...any) {
	if v.on {
		v.l.line("", format, args...)
	}
}

// Phase starts timing a step and returns the function that ends it, which
// prints the step's name and how long it took, with an optional detail.
func (l *Logger) Phase(name string) func(detail ...string) {
	if l == nil {
		return func(...string) {}
	}
	start := l.now()
	return func(detail ...string) {
		ms := float64(l.now().Sub(start).Microseconds()) / 1000
		if len(detail) > 0 {
			l.line("", "%-10s %6.0fms (%s)", name, ms, strings.Join(detail, ", "))
			return
		}
		l.line("", "%-10s %6.0fms", name, ms)
	}
}
