package userns

import (
	"strings"
	"testing"
)

func TestParseSubID(t *testing.T) {
	in := `# comment
alice:100000:65536
1001:165536:65536
bad line
bob:x:10
carol:10:0
dave:4294967295:2

`
	ranges, bad := ParseSubID(strings.NewReader(in))
	if len(ranges) != 2 {
		t.Fatalf("ranges = %+v, want 2", ranges)
	}
	if len(bad) != 4 {
		t.Fatalf("bad = %+v, want 4", bad)
	}
	if bad[0].Line != 4 || !strings.Contains(bad[0].Error(), "owner:start:count") {
		t.Errorf("first error = %v", bad[0])
	}
	if got := ForUser(ranges, "nobody", 1001); len(got) != 1 || got[0].Start != 165536 {
		t.Errorf("ForUser by uid = %+v", got)
	}
	if got := ForUser(ranges, "alice", 1000); len(got) != 1 || got[0].Count != 65536 {
		t.Errorf("ForUser by name = %+v", got)
	}
}

func TestOverlaps(t *testing.T) {
	ranges, _ := ParseSubID(strings.NewReader("a:100000:65536\nb:165530:6\nc:165536:65536\n"))
	if got := Overlaps(ranges, ranges[0]); len(got) != 1 || got[0].Owner != "b" {
		t.Errorf("overlaps of a = %+v, want b only", got)
	}
	if got := Overlaps(ranges, ranges[2]); len(got) != 0 {
		t.Errorf("overlaps of c = %+v, want none", got)
	}
}
