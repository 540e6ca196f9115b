package integration

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// failuresSaid are the failures a test chose to say again after the whole
// run. CI shows the last lines of a run; a failure said in the middle of
// a long suite (the fault suite's, before TestFaultsDiskFull's few
// minutes of output) was cut out of what CI showed, and its cause lost.
var failuresSaid struct {
	sync.Mutex
	msgs []string
}

// sayAgainAtEnd records msg, from test t, to be printed after every
// test of the package has run.
func sayAgainAtEnd(t testing.TB, msg string) {
	failuresSaid.Lock()
	defer failuresSaid.Unlock()
	failuresSaid.msgs = append(failuresSaid.msgs, t.Name()+": "+msg)
}

func TestMain(m *testing.M) {
	code := m.Run()
	failuresSaid.Lock()
	if len(failuresSaid.msgs) > 0 {
		fmt.Fprintf(os.Stderr, "\nwhat failed, said again at the end of the run:\n%s\n", strings.Join(failuresSaid.msgs, "\n"))
	}
	failuresSaid.Unlock()
	os.Exit(code)
}

// lastLines is the last n non-empty lines of s, on one line, quoted.
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("%q", strings.Join(lines, " | "))
}
