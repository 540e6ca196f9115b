package userns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
)

// Mapping is how the caller's IDs map into a new user namespace: the caller
// becomes 0 and its subordinate range becomes 1..Count.
type Mapping struct {
	User           string
	UID, GID       int
	SubUID, SubGID Range
	NewUIDMap      string
	NewGIDMap      string
}

// Paths of the files read; variables so that tests can point them at
// fixtures.
var (
	SubUIDFile = "/etc/subuid"
	SubGIDFile = "/etc/subgid"
)

// CurrentMapping reads the caller's subordinate ranges and finds the setuid
// helpers. Each failure names its fix, because this is the first thing a new
// user hits.
func CurrentMapping() (*Mapping, error) {
	u, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("cannot look up the current user: %w", err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	m := &Mapping{User: u.Username, UID: uid, GID: gid}
	if m.SubUID, err = pick(SubUIDFile, u.Username, uid); err != nil {
		return nil, err
	}
	if m.SubGID, err = pick(SubGIDFile, u.Username, uid); err != nil {
		return nil, err
	}
	for _, h := range []struct {
		name string
		dst  *string
	}{{"newuidmap", &m.NewUIDMap}, {"newgidmap", &m.NewGIDMap}} {
		p, err := exec.LookPath(h.name)
		if err != nil {
			return nil, fmt.Errorf("%s not found in PATH: install it (Debian/Ubuntu: sudo apt-get install uidmap; Fedora/RHEL: sudo dnf install shadow-utils)", h.name)
		}
		*h.dst = p
	}
	return m, nil
}

func pick(path, name string, uid int) (Range, error) {
	fix := fmt.Sprintf("sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s (pick a range no other user has; see `usernode doctor --fix`)", name)
	ranges, bad, err := ReadSubID(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Range{}, fmt.Errorf("%s does not exist, so %s has no subordinate IDs: %s", path, name, fix)
	}
	if err != nil {
		return Range{}, fmt.Errorf("reading %s: %w", path, err)
	}
	mine := ForUser(ranges, name, uid)
	if len(mine) == 0 {
		hint := ""
		if len(bad) > 0 {
			hint = fmt.Sprintf(" (%d malformed line(s), first: %v)", len(bad), bad[0])
		}
		return Range{}, fmt.Errorf("%s has no entry for %s (uid %d)%s: %s", path, name, uid, hint, fix)
	}
	// newuidmap accepts several ranges, but a contiguous block of at least
	// MinRange is what images need; take the largest.
	best := mine[0]
	for _, r := range mine[1:] {
		if r.Count > best.Count {
			best = r
		}
	}
	if best.Count < MinRange {
		return Range{}, fmt.Errorf("%s gives %s only %d IDs (line %d); at least %d are needed for container images: %s", path, name, best.Count, best.Line, MinRange, fix)
	}
	return best, nil
}

// Apply writes the mapping for the process pid, which must be in a new user
// namespace that has not been mapped yet.
func (m *Mapping) Apply(pid int) error {
	p := strconv.Itoa(pid)
	if err := run(m.NewUIDMap, p, "0", strconv.Itoa(m.UID), "1", "1", u32(m.SubUID.Start), u32(m.SubUID.Count)); err != nil {
		return err
	}
	return run(m.NewGIDMap, p, "0", strconv.Itoa(m.GID), "1", "1", u32(m.SubGID.Start), u32(m.SubGID.Count))
}

// Size is the number of IDs inside the namespace.
func (m *Mapping) Size() uint32 { return min(m.SubUID.Count, m.SubGID.Count) + 1 }

func u32(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func run(bin string, args ...string) error {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		return fmt.Errorf("%s %s: %v: %s (is %s setuid root? Debian: sudo apt-get install --reinstall uidmap)", bin, strings.Join(args, " "), err, msg, bin)
	}
	return nil
}
