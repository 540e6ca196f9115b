package cmd

import (
	"context"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/doctor"
)

func init() {
	register(func() *cobra.Command {
		var asJSON, fix bool
		var cf configFlags
		c := &cobra.Command{
			Use:   "doctor",
			Short: "Check that this host can run a rootless node, and say how to fix what is missing",
			Long: "doctor checks cgroup v2 delegation, the systemd user session, subordinate IDs, sysctls,\n" +
				"kernel features, the binaries a node needs, and finally creates the node's namespaces once.\n" +
				"It exits 1 when any check fails (with --json and --fix too). --fix prints (never runs) a\n" +
				"shell script of the fixes that need root, for an administrator to review. Colour is used\n" +
				"only on a terminal, and never when NO_COLOR is set. The CRI runtimes are looked for as `up`\n" +
				"would (config.yaml's or the flags' --bin-dir, --containerd) and judged by its --cri.",
			Args: cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				sys, err := doctor.Host()
				if err != nil {
					return err
				}
				model, err := cf.load()
				if err != nil {
					return err
				}
				sys.UseModel(model)
				ctx := c.Context()
				if ctx == nil {
					ctx = context.Background()
				}
				rep := doctor.Run(ctx, sys)
				out := c.OutOrStdout()
				switch {
				case fix:
					err = rep.WriteScript(out)
				case asJSON:
					err = rep.WriteJSON(out)
				default:
					err = rep.WriteTable(out, colourOK(out))
				}
				if err != nil {
					return err
				}
				if rep.Failed() {
					return ExitError{Code: 1}
				}
				return nil
			},
		}
		c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
		c.Flags().BoolVar(&fix, "fix", false, "print a shell script of the root fixes (it is not run)")
		c.MarkFlagsMutuallyExclusive("json", "fix")
		cf.add(c.Flags(), cluster.RuntimeFlags)
		return c
	})
}

// colourOK is true for a terminal, unless NO_COLOR is set (no-color.org).
func colourOK(w any) bool {
	if _, set := os.LookupEnv("NO_COLOR"); set {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
