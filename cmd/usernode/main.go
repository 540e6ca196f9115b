// Command usernode runs Kubernetes node components as an unprivileged user.
package main

import (
	"os"

	_ "github.com/usernode/usernode/internal/pause" // started as /pause in every pod sandbox
	"github.com/usernode/usernode/internal/reexec"
	"github.com/usernode/usernode/pkg/cmd"
	"github.com/usernode/usernode/pkg/sandbox"
)

func main() {
	// Namespace entry points re-exec this binary under their own argv[0].
	// The sandbox's get this build's drivers as values, here, before one
	// of them runs.
	sandbox.RegisterEntries(cmd.SandboxEntries())
	if reexec.Init() {
		return
	}
	os.Exit(cmd.Main(os.Args[1:]))
}
