package version

import "testing"

func TestFind(t *testing.T) {
	for in, want := range map[string]string{
		"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n": "1.6.20",
		"containerd github.com/containerd/containerd/v2 v2.2.1 dea7da5\n":               "2.2.1",
		"Kubernetes v1.37.2\n":          "1.37.2",
		"iptables v1.8.9 (nf_tables)\n": "1.8.9",
		"pasta 2023_02_27.c538ee8\nCopyright Red Hat\nGNU GPL, version 2 or later\n": "",
		"crio version 1.22.0\nVersion:  1.22.0\n":                                    "1.22.0",
		"INFO[0000] starting\nVersion:        1.28.1\nGitCommit: x":                  "1.28.1",
		"": "",
	} {
		if got := Find(in); got != want {
			t.Errorf("Find(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseAndLess(t *testing.T) {
	for in, want := range map[string]string{"1.6.20~ds1": "1.6.20", "v2.2.1": "2.2.1", "1.22": "1.22", "1.7.24-0ubuntu1": "1.7.24"} {
		v, err := Parse(in)
		if err != nil || v.String() != want {
			t.Errorf("Parse(%q) = %v, %v; want %s", in, v, err, want)
		}
	}
	for _, bad := range []string{"", "banana", "x1.2"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if !Less("1.3.9", "1.4") || Less("1.22.0", "1.22") || !Less("1.9", "1.22") || !Less("x", "1.0") {
		t.Error("Less")
	}
}
