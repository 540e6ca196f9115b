// Package pause is the pod sandbox's pause process, with nothing from a
// registry (internal/images.Pause builds the image): Program, a few
// hundred bytes of machine code for amd64 and arm64, and, for any other
// architecture, the usernode binary itself when started as /pause (main,
// below), which costs each pod a Go runtime.
package pause

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/usernode/usernode/internal/reexec"
)

func init() { reexec.Register("/pause", main) }

// main holds the pod's namespaces open, reaps orphans when it is the pod's
// pid 1, and exits on SIGINT or SIGTERM, as Kubernetes' own pause does.
func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			if pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
