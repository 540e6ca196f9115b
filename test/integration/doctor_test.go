package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/internal/testutil"
	"github.com/usernode/usernode/internal/userns"
)

// doctorReport mirrors `usernode doctor --json`; decoding into it is part
// of what the test checks.
type doctorReport struct {
	User struct {
		Name string `json:"name"`
		UID  int    `json:"uid"`
	} `json:"user"`
	Checks []struct {
		ID       string `json:"id"`
		Category string `json:"category"`
		Title    string `json:"title"`
		Status   string `json:"status"`
		Found    string `json:"found"`
		Why      string `json:"why"`
		Fix      *struct {
			Debian string `json:"debian"`
			Fedora string `json:"fedora"`
		} `json:"fix"`
		Root bool `json:"root"`
	} `json:"checks"`
	Summary struct {
		Pass, Warn, Fail, Skip, Info int
		Mode                         string `json:"mode"`
		OS                           string `json:"os"`
	} `json:"summary"`
}

func parseDoctor(t *testing.T, r testutil.Result) doctorReport {
	t.Helper()
	var rep doctorReport
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("doctor --json is not JSON: %v\n%s", err, r)
	}
	if len(rep.Checks) == 0 {
		t.Fatalf("no checks\n%s", r)
	}
	for _, c := range rep.Checks {
		switch c.Status {
		case "PASS", "WARN", "FAIL", "SKIP", "INFO":
		default:
			t.Errorf("%s: status %q", c.ID, c.Status)
		}
		if c.ID == "" || c.Category == "" || c.Title == "" || c.Found == "" {
			t.Errorf("check with empty fields: %+v", c)
		}
		if (c.Status == "FAIL" || c.Status == "WARN") && c.Why == "" {
			t.Errorf("%s: %s without why", c.ID, c.Status)
		}
	}
	return rep
}

func (rep doctorReport) get(t *testing.T, id string) (status, found, fix string) {
	t.Helper()
	for _, c := range rep.Checks {
		if c.ID == id {
			if c.Fix != nil {
				fix = c.Fix.Debian
				if rep.Summary.OS == "fedora" {
					fix = c.Fix.Fedora
				}
			}
			return c.Status, c.Found, fix
		}
	}
	t.Fatalf("doctor reported no %s check", id)
	return
}

func TestDoctor(t *testing.T) {
	u := testutil.Integration(t)
	env := u.NewEnv(t)
	bin := testutil.Binary(t)

	r := env.Run(t, 2*time.Minute, bin, "doctor", "--json")
	if r.Code != 1 {
		t.Errorf("exit code %d, want 1 (cgroup v2 FAILs on this host)\n%s", r.Code, r)
	}
	rep := parseDoctor(t, r)
	if rep.User.UID != u.UID || rep.User.Name != u.Name {
		t.Errorf("report is for %+v, want %s (%d)", rep.User, u.Name, u.UID)
	}
	if rep.Summary.Fail == 0 {
		t.Errorf("summary %+v: want FAILs", rep.Summary)
	}

	// statfs is a second opinion on what doctor read from mountinfo.
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		t.Fatal(err)
	}
	status, found, fix := rep.get(t, "cgroup.v2")
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		if status != "PASS" {
			t.Errorf("cgroup.v2 = %s (%s) on a cgroup2 host", status, found)
		}
	} else {
		if status != "FAIL" || !strings.Contains(found, "hybrid") && !strings.Contains(found, "v1 only") {
			t.Errorf("cgroup.v2 = %s %q, want FAIL naming the hybrid or v1 layout", status, found)
		}
		if !strings.Contains(fix, "systemd.unified_cgroup_hierarchy=1") {
			t.Errorf("cgroup.v2 fix %q lacks the kernel argument", fix)
		}
		if rep.Summary.Mode == "full" {
			t.Errorf("mode %q with cgroup v2 missing", rep.Summary.Mode)
		}
	}
	for id, want := range map[string]string{
		"subid.subuid":     "PASS",
		"subid.subgid":     "PASS",
		"subid.helpers":    "PASS",
		"kernel.userns":    "PASS",
		"kernel.tun":       "PASS", // hack/test-user.sh makes it 0666
		"trial.namespaces": "PASS",
		// A VXLAN device made as the user, in its own namespaces: the
		// kernel has vxlan, as multi-node needs.
		"trial.vxlan":       "PASS",
		"sysctl.ip_forward": "INFO",
	} {
		if status, found, _ := rep.get(t, id); status != want {
			t.Errorf("%s = %s (%s), want %s", id, status, found, want)
		}
	}

	// The runtimes as `up` would find them: CRI-O only in the bin dir
	// (`make test` builds it there), containerd 1.x from Debian; each
	// named with its version and modes, both able to run this host.
	t.Run("runtimes", func(t *testing.T) {
		bins := testutil.K8sBin(t)
		r := env.Run(t, 2*time.Minute, bin, "doctor", "--json", "--cri", "crio", "--bin-dir", bins)
		var doc struct {
			Checks []struct {
				ID, Status, Found string
				Runtimes          []struct {
					Name, Version, Path, Modes string
					Found, Runs, Configured    bool
					Missing                    []string
				}
			}
		}
		if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil {
			t.Fatalf("doctor --json: %v\n%s", err, r)
		}
		for _, c := range doc.Checks {
			if c.ID != "binary.cri" {
				continue
			}
			if c.Status != "PASS" || len(c.Runtimes) != 2 {
				t.Fatalf("binary.cri = %s, %d runtimes:\n%s", c.Status, len(c.Runtimes), c.Found)
			}
			for _, rt := range c.Runtimes {
				want := map[string]string{"containerd": "1.", "crio": "1.36"}[rt.Name]
				if !rt.Found || !rt.Runs || !strings.HasPrefix(rt.Version, want) || rt.Modes != "full and degraded mode" || len(rt.Missing) > 0 || rt.Configured != (rt.Name == "crio") {
					t.Errorf("runtime %+v, want %s %s*, found and running in full and degraded mode", rt, rt.Name, want)
				}
			}
			if crio := c.Runtimes[1]; crio.Path != filepath.Join(bins, "crio") {
				t.Errorf("crio at %s, want the --bin-dir's", crio.Path)
			}
			return
		}
		t.Fatalf("no binary.cri:\n%s", r)
	})

	t.Run("table", func(t *testing.T) {
		r := env.Run(t, 2*time.Minute, bin, "doctor")
		if r.Code != 1 || !strings.Contains(r.Stdout, "FAIL  cgroup v2 at /sys/fs/cgroup") {
			t.Errorf("table:\n%s", r)
		}
		if strings.Contains(r.Stdout, "\x1b[") {
			t.Error("colour escapes on a pipe")
		}
	})

	t.Run("nosubid", func(t *testing.T) {
		r := runDoctorAs(t, "usernode-nosubid", bin, "doctor", "--json")
		if r.Code != 1 {
			t.Errorf("exit %d, want 1\n%s", r.Code, r)
		}
		rep := parseDoctor(t, r)
		status, found, fix := rep.get(t, "subid.subuid")
		if status != "FAIL" || !strings.Contains(found, "no entry for usernode-nosubid") {
			t.Errorf("subid.subuid = %s %q", status, found)
		}
		m := regexp.MustCompile(`usermod --add-subuids (\d+)-(\d+) --add-subgids (\d+)-(\d+) usernode-nosubid`).FindStringSubmatch(fix)
		if m == nil {
			t.Fatalf("subid.subuid fix %q", fix)
		}
		// The proposed block must be free in both files.
		start, _ := strconv.ParseUint(m[1], 10, 32)
		end, _ := strconv.ParseUint(m[2], 10, 32)
		if end-start+1 != userns.MinRange {
			t.Errorf("proposed range %s-%s is not %d IDs", m[1], m[2], userns.MinRange)
		}
		for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
			ranges, _, err := userns.ReadSubID(f)
			if err != nil {
				t.Fatal(err)
			}
			if ov := userns.Overlaps(ranges, userns.Range{Owner: "usernode-nosubid", Start: uint32(start), Count: userns.MinRange, Line: -1}); len(ov) > 0 {
				t.Errorf("proposed range %s-%s overlaps %+v in %s", m[1], m[2], ov, f)
			}
		}
		if status, found, _ := rep.get(t, "trial.namespaces"); status != "FAIL" {
			t.Errorf("trial without subids = %s (%s)", status, found)
		}

		sc := runDoctorAs(t, "usernode-nosubid", bin, "doctor", "--fix")
		if !strings.HasPrefix(sc.Stdout, "#!/bin/sh\n") || !strings.Contains(sc.Stdout, "\nset -eu\n") {
			t.Errorf("--fix is not a sh script:\n%s", sc)
		}
		if !strings.Contains(sc.Stdout, "\n"+m[0]+"\n") {
			t.Errorf("--fix lacks %q:\n%s", m[0], sc)
		}
		if strings.Count(sc.Stdout, "usermod") != 1 {
			t.Errorf("--fix should have one usermod line:\n%s", sc.Stdout)
		}
		if out, err := exec.Command("sh", "-n", "-c", sc.Stdout).CombinedOutput(); err != nil {
			t.Errorf("sh -n rejects the script: %v %s", err, out)
		}
	})

	t.Run("shortsubid", func(t *testing.T) {
		rep := parseDoctor(t, runDoctorAs(t, "usernode-shortsubid", bin, "doctor", "--json"))
		if status, found, fix := rep.get(t, "subid.subuid"); status != "FAIL" || !strings.Contains(found, "1000 IDs, need at least 65536") || !strings.Contains(fix, "usermod --add-subuids") {
			t.Errorf("subid.subuid = %s %q fix %q", status, found, fix)
		}
	})
}

// runDoctorAs runs bin as another account made by `make test-user`.
func runDoctorAs(t *testing.T, name, bin string, args ...string) testutil.Result {
	t.Helper()
	return testutil.Account(t, name).NewEnv(t).Run(t, 2*time.Minute, bin, args...)
}
