package main

import (
	"fmt"
	"strings"

	"github.com/usernode/usernode/bench/internal/host"
)

// mem is what a mechanism's processes hold when the rounds are done.
type mem struct {
	rss, pss float64 // MB, summed
	parts    []string
}

func memOf(ig *ingress) (mem, bool) {
	ps := ig.procs()
	if len(ps) == 0 {
		return mem{}, false
	}
	var m mem
	for _, p := range ps {
		rss, pss := smaps(p.pid)
		m.rss += rss / 1024
		m.pss += pss / 1024
		m.parts = append(m.parts, fmt.Sprintf("%s %.1f/%.1f", p.role, rss/1024, pss/1024))
	}
	return m, true
}

// addedRTT is the median over rounds of a row's round trip minus host
// loopback's in the same round.
func addedRTT(in map[string][][]float64, loopback, name string, mi int) float64 {
	var d []float64
	for r, v := range in[name][mi] {
		if b := in[loopback][mi]; r < len(b) && v > 0 && b[r] > 0 {
			d = append(d, v-b[r])
		}
	}
	return host.Median(d)
}

func writeIngress(out *strings.Builder, igs []*ingress, in map[string][][]float64) {
	if len(igs) == 0 {
		return
	}
	lo := igs[0].name
	med := func(name string, mi int) float64 { return host.Median(in[name][mi]) }
	mems := map[string]mem{}

	fmt.Fprintln(out, "### Port forwarding: host 127.0.0.1:PORT -> the node's namespace")
	fmt.Fprintln(out)
	hdr, sep := "| |", "|---|"
	for _, m := range ingressMetrics[:4] {
		hdr += " " + m.name + " (" + m.unit + ") |"
		sep += "---|"
	}
	fmt.Fprintln(out, hdr+" RSS, all its processes (MB) | PSS, all its processes (MB) |")
	fmt.Fprintln(out, sep+"---|---|")
	for _, ig := range igs {
		row := "| " + ig.name + " | "
		for mi, m := range ingressMetrics[:4] {
			row += cell(med(ig.name, mi), med(lo, mi), m)
		}
		if m, ok := memOf(ig); ok {
			mems[ig.name] = m
			row += fmt.Sprintf("%.1f | %.1f |", m.rss, m.pss)
		} else {
			row += "– | – |"
		}
		fmt.Fprintln(out, row)
	}
	fmt.Fprintln(out)
	for _, ig := range igs {
		fmt.Fprintf(out, "- %s: %s", ig.name, ig.note)
		if m, ok := mems[ig.name]; ok {
			fmt.Fprintf(out, "; RSS/PSS MB: %s", strings.Join(m.parts, ", "))
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintln(out)

	for _, c := range clients {
		fmt.Fprintf(out, "#### %s: %s\n\n", c.name, c.note)
		hdr, sep := "| |", "|---|"
		for _, mi := range c.metrics {
			m := ingressMetrics[mi]
			hdr += " " + m.name + " (" + m.unit + ") |"
			sep += "---|"
		}
		fmt.Fprintln(out, hdr+" RTT added to host loopback's, median (µs) |")
		fmt.Fprintln(out, sep+"---|")
		rttMI := c.metrics[2]
		for i, ig := range igs {
			row := "| " + ig.name + " | "
			for _, mi := range c.metrics {
				row += cell(med(ig.name, mi), med(lo, mi), ingressMetrics[mi])
			}
			if i == 0 {
				row += "– |"
			} else {
				row += fmt.Sprintf("%+.1f |", addedRTT(in, lo, ig.name, rttMI))
			}
			fmt.Fprintln(out, row)
		}
		fmt.Fprintln(out)
	}
	writeTargets(out, igs, in, mems)
}

// writeTargets checks usernode's default row against each RootlessKit row,
// with issue 16's targets.
func writeTargets(out *strings.Builder, igs []*ingress, in map[string][][]float64, mems map[string]mem) {
	lo, un := igs[0].name, "usernode"
	var rks []string
	for _, ig := range igs {
		if strings.HasPrefix(ig.name, "rootlesskit") {
			rks = append(rks, ig.name)
		}
	}
	if _, ok := in[un]; !ok || len(rks) == 0 {
		return
	}
	med := func(name string, mi int) float64 { return host.Median(in[name][mi]) }
	fmt.Fprintln(out, "#### usernode (the user's defaults) against the targets")
	fmt.Fprintln(out)
	hdr, sep := "| target |", "|---|"
	for _, rk := range rks {
		hdr += " vs " + rk + " |"
		sep += "---|"
	}
	fmt.Fprintln(out, hdr+" met? |")
	fmt.Fprintln(out, sep+"---|")
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "no"
	}
	ratio := func(label string, mi int, least float64) {
		row, ok := "| "+label+" ≥ "+fmt.Sprint(least)+"× |", true
		for _, rk := range rks {
			r := med(un, mi) / med(rk, mi)
			ok = ok && r >= least
			row += fmt.Sprintf(" %.2f× |", r)
		}
		fmt.Fprintln(out, row+" "+yes(ok)+" |")
	}
	ratio("iperf3 -P1 host->ns", 0, 1.3)
	ratio("iperf3 -P1 ns->host", 1, 1.3)
	ratio("iperf3 -P4 host->ns", 2, 1.0)
	ratio("iperf3 -P4 ns->host", 3, 1.0)
	for _, c := range clients {
		ratio(c.name+", connections/s c=8", c.metrics[1], 2)
	}
	for _, c := range clients {
		mi := c.metrics[2]
		a, a10 := addedRTT(in, lo, un, mi), addedRTT(in, lo, un, c.metrics[3])
		row, ok := fmt.Sprintf("| %s, added RTT (median) below RootlessKit's and ≤ 25 µs: usernode %+.1f µs (10th percentile %+.1f) |", c.name, a, a10), a <= 25
		for _, rk := range rks {
			b := addedRTT(in, lo, rk, mi)
			ok = ok && a < b
			row += fmt.Sprintf(" %+.1f µs (%+.1f) |", b, addedRTT(in, lo, rk, c.metrics[3]))
		}
		fmt.Fprintln(out, row+" "+yes(ok)+" |")
	}
	if m, have := mems[un]; have {
		row, ok := fmt.Sprintf("| PSS of all its processes below RootlessKit's (+ slirp4netns): usernode %.1f MB |", m.pss), true
		for _, rk := range rks {
			r := mems[rk]
			ok = ok && m.pss < r.pss
			row += fmt.Sprintf(" %.1f MB |", r.pss)
		}
		fmt.Fprintln(out, row+" "+yes(ok)+" |")
	}
	fmt.Fprintln(out)
}
