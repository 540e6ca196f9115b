// Command usernode runs Kubernetes node components as an unprivileged user.
package main

import (
	"os"

	_ "github.com/usernode/usernode/internal/pause" // started as /pause in every pod sandbox
	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/pkg/cmd"
)

func main() {
	// Namespace entry points re-exec this binary under their own argv[0].
	if reexec.Init() {
		return
	}
	os.Exit(cmd.Main(os.Args[1:]))
}
