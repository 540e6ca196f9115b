package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteJSON writes the report. The schema is stable: fields are added,
// never renamed or removed. "fix" is always an object with "debian" and
// "fedora" keys (equal when the fix is the same), absent when there is
// nothing to run.
func (rep Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	// Fixes are shell text: keep & and < readable.
	e.SetEscapeHTML(false)
	return e.Encode(rep)
}

var colours = map[Status]string{Pass: "\x1b[32m", Warn: "\x1b[33m", Fail: "\x1b[31;1m", Skip: "\x1b[2m", Info: "\x1b[36m"}

const reset = "\x1b[0m"

// WriteTable writes the report for people: one line per check, and for
// anything not passing, why it matters and the fix for this host's
// distribution (both families when it is not recognised).
func (rep Report) WriteTable(w io.Writer, colour bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "usernode doctor for %s (uid %d)\n", rep.User.Name, rep.User.UID)
	cat := ""
	for _, r := range rep.Checks {
		if r.Category != cat {
			cat = r.Category
			fmt.Fprintf(&b, "\n%s\n", strings.ToUpper(cat))
		}
		st := string(r.Status)
		if colour {
			st = colours[r.Status] + st + reset
		}
		fmt.Fprintf(&b, "  %s  %s\n", st, r.Title)
		for _, l := range strings.Split(r.Found, "\n") {
			fmt.Fprintf(&b, "        %s\n", l)
		}
		if r.Status == Pass || r.Status == Skip {
			continue
		}
		if r.Why != "" {
			fmt.Fprintf(&b, "        why: %s\n", r.Why)
		}
		if r.Fix != nil {
			who := "fix"
			if r.Root {
				who = "fix (as root)"
			}
			writeFix := func(label, text string) {
				fmt.Fprintf(&b, "        %s%s:\n", who, label)
				for _, l := range strings.Split(text, "\n") {
					fmt.Fprintf(&b, "          %s\n", l)
				}
			}
			switch {
			case r.Fix.Debian == r.Fix.Fedora:
				writeFix("", r.Fix.Debian)
			case rep.family != "":
				writeFix(" on "+familyName(rep.family), r.Fix.For(rep.family))
			default:
				writeFix(" on Debian/Ubuntu", r.Fix.Debian)
				writeFix(" on Fedora/RHEL", r.Fix.Fedora)
			}
		}
	}
	s := rep.Summary
	fmt.Fprintf(&b, "\n%d passed, %d warnings, %d failed, %d skipped, %d info: ", s.Pass, s.Warn, s.Fail, s.Skip, s.Info)
	switch s.Mode {
	case "full":
		b.WriteString("ready for a node with resource limits.\n")
	case "degraded":
		b.WriteString("a node runs here in degraded mode only (no pod resource limits). `usernode doctor --fix` prints the root fixes.\n")
	default:
		b.WriteString("a node cannot run here until the failures are fixed. `usernode doctor --fix` prints the root fixes.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func familyName(f string) string {
	if f == "fedora" {
		return "Fedora/RHEL"
	}
	return "Debian/Ubuntu"
}

// WriteScript writes the root fixes of every non-passing check as a shell
// script for an administrator to review and run; doctor never runs it.
// Identical fixes (both subid checks share one usermod) appear once.
func (rep Report) WriteScript(w io.Writer) error {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	fmt.Fprintf(&b, "# Fixes from `usernode doctor --fix` for user %s (uid %d). Review before running as root.\n", sanitizeComment(rep.User.Name), rep.User.UID)
	switch rep.family {
	case "":
		b.WriteString("# This distribution was not recognised: these are the Debian/Ubuntu commands.\n")
	default:
		fmt.Fprintf(&b, "# Commands for %s.\n", familyName(rep.family))
	}
	b.WriteString("set -eu\n")
	seen := map[string]bool{}
	n := 0
	for _, r := range rep.Checks {
		if r.Status == Pass || r.Status == Skip || r.Status == Info || r.Fix == nil || !r.Root {
			continue
		}
		text := r.Fix.For(rep.family)
		if text == "" || seen[text] {
			continue
		}
		seen[text] = true
		n++
		fmt.Fprintf(&b, "\n# %s %s: %s\n", r.Status, r.ID, sanitizeComment(r.Found))
		b.WriteString(text)
		b.WriteString("\n")
	}
	if n == 0 {
		b.WriteString("\n# nothing to fix as root\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// sanitizeComment keeps a finding (which may quote file contents) on one
// comment line, so it cannot become a command.
func sanitizeComment(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r < 0x20 {
			return ' '
		}
		return r
	}, s)
}
