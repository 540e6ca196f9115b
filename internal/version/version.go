// Package version is the one place usernode reads program versions: from a
// `--version` output, and into something comparable. Every tool prints its
// own way ("containerd github.com/containerd/containerd 1.6.20~ds1 ...",
// "Kubernetes v1.37.2", CRI-O's "Version: 1.28.1" after log lines), and
// distributions add suffixes (~ds1, -0ubuntu1) that are not versions.
package version

import (
	"fmt"
	"regexp"
	"strings"

	utilversion "k8s.io/apimachinery/pkg/util/version"
)

var re = regexp.MustCompile(`\bv?(\d+)\.(\d+)(?:\.(\d+))?`)

// Find is the version in a --version output, "MAJOR.MINOR[.PATCH]" without
// a leading v or a distribution suffix, or "" if there is none. It reads
// the first line, or a "Version:" line: other lines are licence text whose
// numbers ("GPL 3.0") are not versions.
func Find(out string) string {
	for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if i != 0 && !strings.HasPrefix(strings.ToLower(strings.TrimSpace(l)), "version") {
			continue
		}
		if m := re.FindStringSubmatch(l); m != nil {
			v := m[1] + "." + m[2]
			if m[3] != "" {
				v += "." + m[3]
			}
			return v
		}
	}
	return ""
}

// Parse reads a version as programs and packages write it ("1.6.20~ds1",
// "v2.2.1", "1.22"), ignoring what follows the numbers.
func Parse(s string) (*utilversion.Version, error) {
	m := re.FindStringSubmatch(s)
	if m == nil || !strings.HasPrefix(strings.TrimPrefix(s, "v"), m[1]) {
		return nil, fmt.Errorf("version %q: want MAJOR.MINOR[.PATCH]", s)
	}
	return utilversion.ParseGeneric(strings.TrimPrefix(m[0], "v"))
}

// Less compares two versions; one that does not parse is the lesser.
func Less(a, b string) bool {
	va, ea := Parse(a)
	vb, eb := Parse(b)
	if ea != nil || eb != nil {
		return ea != nil && eb == nil
	}
	return va.LessThan(vb)
}
