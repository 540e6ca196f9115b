package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/usernode/usernode/internal/userns"
)

type subidFile struct {
	path   string
	ranges []userns.Range
	bad    []userns.ParseError
	err    error
}

func (r *run) subid(kind string) subidFile {
	return r.memo("subid:"+kind, func() any {
		f := subidFile{path: "/etc/" + kind}
		f.ranges, f.bad, f.err = userns.ReadSubID(r.sys.path(f.path))
		return f
	}).(subidFile)
}

// subidProblem is why the user's ranges in one file are unusable, or "".
func (r *run) subidProblem(kind string) string {
	f := r.subid(kind)
	if f.err != nil {
		return "unreadable"
	}
	mine := userns.ForUser(f.ranges, r.sys.User, r.sys.UID)
	total := uint64(0)
	for _, m := range mine {
		total += uint64(m.Count)
		if len(userns.Overlaps(f.ranges, m)) > 0 {
			return "overlap"
		}
	}
	if total < userns.MinRange {
		return "short"
	}
	return ""
}

// freeRange is the lowest MinRange-sized block at or above 100000 (where
// useradd starts allocating) that no line of either file uses, so one
// block serves as both the uid and gid range.
func (r *run) freeRange() (uint64, bool) {
	var all []userns.Range
	for _, k := range []string{"subuid", "subgid"} {
		all = append(all, r.subid(k).ranges...)
	}
	slices.SortFunc(all, func(a, b userns.Range) int { return int(int64(a.Start) - int64(b.Start)) })
	start := uint64(100000)
	for moved := true; moved; {
		moved = false
		for _, x := range all {
			if uint64(x.Start) < start+userns.MinRange && start < x.End() {
				start, moved = x.End(), true
			}
		}
	}
	return start, start+userns.MinRange <= 1<<32
}

// subidFix adds a fresh range to every file where the user's range is
// missing or short, in one usermod call. Both checks return the same text
// so --fix prints it once.
func (r *run) subidFix() *Fix {
	s := r.sys
	start, ok := r.freeRange()
	if !ok {
		return same("# no free block of 65536 IDs below 4294967296 in /etc/subuid and /etc/subgid: free one by hand")
	}
	span := fmt.Sprintf("%d-%d", start, start+userns.MinRange-1)
	var pre []string
	args := []string{"usermod"}
	for _, k := range []string{"subuid", "subgid"} {
		f := r.subid(k)
		if errors.Is(f.err, fs.ErrNotExist) {
			// usermod refuses --add-subuids when the file is missing.
			pre = append(pre, "touch "+f.path)
		}
		switch r.subidProblem(k) {
		case "short", "unreadable":
			args = append(args, "--add-"+k+"s", span)
		case "overlap":
			for _, m := range userns.ForUser(f.ranges, s.User, s.UID) {
				args = append(args, "--del-"+k+"s", fmt.Sprintf("%d-%d", m.Start, m.End()-1))
			}
			args = append(args, "--add-"+k+"s", span)
		}
	}
	args = append(args, shellQuote(s.User))
	cmd := strings.Join(append(pre, strings.Join(args, " ")), "\n")
	return same(cmd)
}

func checkSubID(r *run, kind string) Result {
	s := r.sys
	f := r.subid(kind)
	why := fmt.Sprintf("newuidmap/newgidmap map the node's IDs 0..65535 onto the user's subordinate range in %s; container images use IDs up to 65534, so a missing or short range makes the namespace or image unpacking fail.", f.path)
	fail := func(found string) Result {
		return Result{Status: Fail, Found: found, Why: why, Fix: r.subidFix(), Root: true}
	}
	switch {
	case errors.Is(f.err, fs.ErrNotExist):
		return fail(f.path + " does not exist")
	case f.err != nil:
		return fail(fmt.Sprintf("cannot read %s: %v", f.path, f.err))
	}
	var ownBad, otherBad []string
	for _, b := range f.bad {
		owner, _, _ := strings.Cut(b.Text, ":")
		desc := fmt.Sprintf("line %d %q: %s", b.Line, b.Text, b.Err)
		if owner == s.User || owner == strconv.Itoa(s.UID) {
			ownBad = append(ownBad, desc)
		} else {
			otherBad = append(otherBad, desc)
		}
	}
	mine := userns.ForUser(f.ranges, s.User, s.UID)
	var descs []string
	total := uint64(0)
	for _, m := range mine {
		total += uint64(m.Count)
		descs = append(descs, fmt.Sprintf("%s:%d:%d (line %d)", m.Owner, m.Start, m.Count, m.Line))
	}
	for _, m := range mine {
		if ov := userns.Overlaps(f.ranges, m); len(ov) > 0 {
			var with []string
			for _, o := range ov {
				with = append(with, fmt.Sprintf("%s:%d:%d (line %d)", o.Owner, o.Start, o.Count, o.Line))
			}
			return fail(fmt.Sprintf("%s:%d:%d (line %d) overlaps %s: the other account's containers could read and write this node's files", m.Owner, m.Start, m.Count, m.Line, joinAnd(with)))
		}
	}
	switch {
	case len(mine) == 0 && len(ownBad) > 0:
		return fail(fmt.Sprintf("the entry for %s in %s is malformed: %s", s.User, f.path, strings.Join(ownBad, "; ")))
	case len(mine) == 0:
		return fail(fmt.Sprintf("no entry for %s (uid %d) in %s", s.User, s.UID, f.path))
	case total < userns.MinRange:
		return fail(fmt.Sprintf("%s: %d IDs, need at least %d", strings.Join(descs, ", "), total, userns.MinRange))
	}
	found := strings.Join(descs, ", ") + fmt.Sprintf(": %d IDs", total)
	if bad := append(ownBad, otherBad...); len(bad) > 0 {
		return Result{Status: Warn, Found: found + fmt.Sprintf("; %s has %d malformed %s, which newuidmap ignores: %s", f.path, len(bad), plural(len(bad), "line", "lines"), strings.Join(bad, "; ")),
			Why: "A malformed line is ignored, so whatever account it was meant for has no range; usermod keeps it when it rewrites the file.",
			Fix: same("# edit " + f.path + " (vipw -s does not cover it): fix or delete the malformed lines named above"), Root: true}
	}
	return Result{Status: Pass, Found: found}
}

func checkIDMapHelpers(_ context.Context, r *run) Result {
	s := r.sys
	why := "Only the setuid (or file-capability) helpers newuidmap and newgidmap may write a uid/gid map wider than the user's own ID; without them the node gets a single ID and cannot run containers."
	fix := &Fix{Debian: "apt-get install -y uidmap", Fedora: "dnf install -y shadow-utils"}
	var found, bad, unset []string
	for _, name := range []string{"newuidmap", "newgidmap"} {
		p, ok := s.LookPath(name)
		if !ok {
			bad = append(bad, name+" not found")
			continue
		}
		fi, err := s.Stat(p)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		if fi.Mode&fs.ModeSetuid != 0 && fi.UID == 0 {
			found = append(found, p+" (setuid root)")
			continue
		}
		caps, err := s.FileCaps(p)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s is not setuid root and its capabilities cannot be read: %v", p, err))
		case caps:
			found = append(found, p+" (file capabilities)")
		default:
			bad = append(bad, p+" is neither setuid root nor has file capabilities")
			unset = append(unset, shellQuote(p))
		}
	}
	if len(bad) > 0 {
		if len(unset) == len(bad) {
			// Installed but stripped of its privilege (a copied binary, a
			// filesystem mounted nosuid): reinstalling would not help.
			fix = same("chown root:root " + strings.Join(unset, " ") + "\nchmod u+s " + strings.Join(unset, " "))
		}
		return Result{Status: Fail, Found: strings.Join(append(bad, found...), "; "), Why: why, Fix: fix, Root: true}
	}
	return Result{Status: Pass, Found: strings.Join(found, ", ")}
}
