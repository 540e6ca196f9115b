// Package userns reads subordinate ID ranges and maps them into new user
// namespaces with the setuid newuidmap/newgidmap helpers.
package userns

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// MinRange is the smallest subordinate range usernode accepts: container
// images routinely use IDs up to 65534 (nobody), and a shorter range makes
// image unpacking fail late with EINVAL from chown.
const MinRange = 65536

// Range is one line of /etc/subuid or /etc/subgid.
type Range struct {
	Owner string // user name or decimal uid, as written in the file
	Start uint32
	Count uint32
	Line  int
}

// End is one past the last ID of the range.
func (r Range) End() uint64 { return uint64(r.Start) + uint64(r.Count) }

// ParseError names a line that could not be read, so that callers can
// report it instead of failing on the whole file.
type ParseError struct {
	Line int
	Text string
	Err  string
}

func (e ParseError) Error() string { return fmt.Sprintf("line %d %q: %s", e.Line, e.Text, e.Err) }

// ParseSubID reads the subuid/subgid format ("owner:start:count" per line,
// '#' comments). Malformed lines are returned as errors alongside the good
// ranges, because one bad line must not hide the user's valid entry.
func ParseSubID(r io.Reader) ([]Range, []ParseError) {
	var ranges []Range
	var bad []ParseError
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Split(text, ":")
		if len(f) != 3 {
			bad = append(bad, ParseError{n, text, "want owner:start:count"})
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		switch {
		case f[0] == "":
			bad = append(bad, ParseError{n, text, "empty owner"})
		case err1 != nil:
			bad = append(bad, ParseError{n, text, "start is not a number in 0..4294967295"})
		case err2 != nil || count == 0:
			bad = append(bad, ParseError{n, text, "count is not a positive number"})
		case start+count > 1<<32:
			bad = append(bad, ParseError{n, text, "range runs past 4294967295"})
		default:
			ranges = append(ranges, Range{Owner: f[0], Start: uint32(start), Count: uint32(count), Line: n})
		}
	}
	if err := sc.Err(); err != nil {
		bad = append(bad, ParseError{n + 1, "", err.Error()})
	}
	return ranges, bad
}

// ReadSubID parses the file at path. A missing file is reported as an
// os.ErrNotExist error so callers can give the "create it" fix.
func ReadSubID(path string) ([]Range, []ParseError, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	ranges, bad := ParseSubID(f)
	return ranges, bad, nil
}

// ForUser returns the ranges that belong to the user, matched by name or by
// decimal uid as shadow-utils does.
func ForUser(ranges []Range, name string, uid int) []Range {
	id := strconv.Itoa(uid)
	var out []Range
	for _, r := range ranges {
		if r.Owner == name || r.Owner == id {
			out = append(out, r)
		}
	}
	return out
}

// Overlaps returns the ranges of other owners that share IDs with mine.
func Overlaps(all []Range, mine Range) []Range {
	var out []Range
	for _, r := range all {
		if r.Owner == mine.Owner || r.Line == mine.Line {
			continue
		}
		if uint64(r.Start) < mine.End() && uint64(mine.Start) < r.End() {
			out = append(out, r)
		}
	}
	return out
}
