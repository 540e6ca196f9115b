package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/usernode/usernode/bench/internal/host"
)

// report writes the Markdown tables, built in memory and written at once
// so that the log lines on stderr do not break them up.
func (b *bench) report(w io.Writer) {
	var out strings.Builder
	fmt.Fprintf(&out, "Multi-node on this machine: %d interleaved rounds, medians; throughput runs %g s each, the RTT the median of up to %d 1-byte ping-pongs on one connection (TCP_NODELAY, first %d left out, %g s at most).\n",
		len(b.joins), *secs, rttMax, rttWarm, *secs)
	fmt.Fprintf(&out, "Kernel %s, %d CPUs, load average %s at the start. Ratios are against the first row (the bound).\n", host.Kernel(), host.NumCPU(), b.info.load)
	fmt.Fprintf(&out, "usernode %s, %s, TCP congestion control in a fresh namespace: %s, pods' MTU %s.\n\n", orDash(b.info.usernode), orDash(b.info.kubelet), orDash(b.info.cc), orDash(b.info.podMTU))
	b.podTable(&out)
	b.joinTable(&out)
	fmt.Fprintf(&out, "\nTotal time %s.\n", time.Since(t0).Round(time.Second))
	_, _ = io.WriteString(w, out.String()) // stdout gone: nothing left to tell
}

func (b *bench) podTable(out *strings.Builder) {
	fmt.Fprintln(out, "### Pod to pod: TCP between the tool's client and server")
	fmt.Fprintln(out)
	hdr, sep := "| |", "|---|"
	for _, m := range metrics {
		hdr += fmt.Sprintf(" %s (%s) |", m.name, m.unit)
		sep += "---|"
	}
	fmt.Fprintln(out, hdr)
	fmt.Fprintln(out, sep)
	var base []float64
	for i, s := range b.scenarios {
		row := "| " + s.name + " |"
		for mi, m := range metrics {
			v := host.Median(b.res[s.name][mi])
			if i == 0 {
				base = append(base, v)
			}
			row += " " + cell(v, base[mi], m.unit) + " |"
		}
		fmt.Fprintln(out, row)
	}
	fmt.Fprintln(out)
	for _, s := range b.scenarios {
		fmt.Fprintf(out, "- %s: %s\n", s.name, s.note)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "The client is always on host A's side (pod mnb-a1, or the bound's namespace A), the server on B's (the pod on B's node, or namespace B); in the one-node row the server is a second pod on A's node.")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "UDP datagrams dropped for a full socket receive buffer in the hosts' namespaces (RcvbufErrors of A and B, of all UDP they received) during the across-hosts runs, the run with the median loss:")
	fmt.Fprintln(out)
	for mi, m := range metrics {
		fmt.Fprintf(out, "- %s: %s\n", m.name, medianLoss(b.udpLoss[mi]))
	}
	fmt.Fprintln(out)
}

func (b *bench) joinTable(out *strings.Builder) {
	fmt.Fprintln(out, "### `usernode join` on host B: seconds from running the command")
	fmt.Fprintln(out)
	hdr, sep := "| |", "|---|"
	for r := range b.joins {
		hdr += fmt.Sprintf(" round %d |", r+1)
		sep += "---|"
	}
	fmt.Fprintln(out, hdr+" median |")
	fmt.Fprintln(out, sep+"---|")
	for _, row := range []struct {
		name string
		get  func(joinTimes) float64
	}{
		{"`usernode join -d` returned (it waits for Ready)", func(j joinTimes) float64 { return j.returned }},
		{"worker Ready, seen by kubectl on host A (watch)", func(j joinTimes) float64 { return j.ready }},
		{"a pod on the worker Running (created once `join` returned)", func(j joinTimes) float64 { return j.pod }},
	} {
		line := "| " + row.name + " |"
		var v []float64
		for _, j := range b.joins {
			v = append(v, row.get(j))
			line += fmt.Sprintf(" %.1f |", row.get(j))
		}
		fmt.Fprintln(out, line+fmt.Sprintf(" %.1f |", host.Median(v)))
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Each round starts from nothing on host B: the previous round's worker was stopped with `usernode down --purge` and its Node deleted.")
}

// medianLoss is the run whose share of drops is the median.
func medianLoss(l []udpLoss) string {
	if len(l) == 0 {
		return "–"
	}
	s := append([]udpLoss(nil), l...)
	share := func(x udpLoss) float64 { return float64(x.dropped) / float64(max(1, x.delivered+x.dropped)) }
	sort.Slice(s, func(i, j int) bool { return share(s[i]) < share(s[j]) })
	return s[len(s)/2].String()
}

func cell(v, base float64, unit string) string {
	f := "%.2f"
	if unit == "µs" {
		f = "%.1f"
	}
	s := fmt.Sprintf(f, v)
	if base > 0 && v > 0 {
		s += fmt.Sprintf(" (%.2f×)", v/base)
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
