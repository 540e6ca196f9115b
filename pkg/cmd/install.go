package cmd

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/install"
)

func init() {
	register(installCommand)
	register(uninstallCommand)
}

func installCommand() *cobra.Command {
	var o install.Options
	var cf configFlags
	var printOnly, enable, now bool
	c := &cobra.Command{
		Use:   "install",
		Short: "Write a systemd user unit that runs the node with a delegated cgroup (full mode)",
		Long: `Write ~/.config/systemd/user/usernode.service (usernode-NAME.service for
other names) and reload the user manager. The unit runs ` + "`usernode up`" + ` in the
foreground with Delegate=yes, so the node gets its own cgroup v2 subtree
and pod limits are enforced; it is Type=notify: ` + "`systemctl --user start usernode`" + `
returns once the node is Ready.

Flags given here are passed to ` + "`usernode up`" + `; the rest comes from the config
file when the unit starts. --enable starts the node with the user manager
(at boot, with ` + "`loginctl enable-linger`" + `); --now also starts it now.
Which controllers the unit gets is set by the administrator (user@.service's
Delegate=): ` + "`usernode doctor`" + ` checks it, docs/vm.md explains it.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if os.Geteuid() == 0 && !printOnly {
				return fmt.Errorf("install writes a systemd *user* unit for the user who runs the node; run it as that user, not root (root's only part is delegation and lingering: see `usernode doctor`)")
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if self, err = filepath.EvalSymlinks(self); err != nil {
				return err
			}
			o.Binary = self
			// Checked now, not when the unit first starts.
			cl, err := cf.resolve()
			if err != nil {
				return err
			}
			o.Name, o.ReadyTimeout = cl.Self().Name, cl.Options.ReadyTimeout
			if o.Args, err = cluster.Args(c.Flags()); err != nil {
				return err
			}
			if cf.path != "" {
				abs, err := filepath.Abs(cf.path)
				if err != nil {
					return err
				}
				o.Args = append(o.Args, "--config="+abs)
			}
			if printOnly {
				b, err := install.Render(o)
				if err != nil {
					return err
				}
				_, err = c.OutOrStdout().Write(b)
				return err
			}
			dir, err := install.UnitDir(os.Getenv)
			if err != nil {
				return err
			}
			res, err := install.Install(o, dir, install.UserSystemctl)
			if err != nil {
				return err
			}
			log := c.ErrOrStderr()
			verb := "unchanged"
			if res.Changed {
				verb = "wrote"
			}
			note(log, "%s %s", verb, res.Path)
			switch {
			case now:
				if _, err := install.UserSystemctl("enable", "--now", res.Unit); err != nil {
					return fmt.Errorf("%w; `journalctl --user -u %s` and `usernode logs supervisor` say why", err, res.Unit)
				}
				note(log, "%s enabled and started; the node is Ready", res.Unit)
			case enable:
				if _, err := install.UserSystemctl("enable", res.Unit); err != nil {
					return err
				}
				note(log, "%s enabled; start it now with `systemctl --user start %s`", res.Unit, res.Unit)
			default:
				note(log, "start the node with `systemctl --user start %s` (`systemctl --user enable %s` to start it with your user manager)", res.Unit, res.Unit)
			}
			if u := os.Getenv("USER"); u != "" {
				if _, err := os.Stat("/var/lib/systemd/linger/" + u); err != nil {
					note(log, "lingering is off for %s: the node stops when your last session ends; `sudo loginctl enable-linger %s` keeps it (and starts an enabled unit at boot)", u, u)
				}
			}
			return nil
		},
	}
	f := c.Flags()
	// `up`'s own flags: the ones given are passed to it.
	cf.add(f, cluster.AllFlags)
	f.BoolVar(&printOnly, "print", false, "print the unit instead of installing it")
	f.BoolVar(&enable, "enable", false, "also `systemctl --user enable` the unit")
	f.BoolVar(&now, "now", false, "also enable and start the unit (returns when the node is Ready)")
	c.MarkFlagsMutuallyExclusive("print", "enable")
	c.MarkFlagsMutuallyExclusive("print", "now")
	return c
}

func uninstallCommand() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop the node's systemd user unit if it runs, and remove it (the node's state stays)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, err := install.UnitDir(os.Getenv)
			if err != nil {
				return err
			}
			res, err := install.Uninstall(name, dir, install.UserSystemctl)
			if err != nil {
				return err
			}
			log := c.ErrOrStderr()
			if !res.Changed {
				note(log, "%s is not installed (no %s)", res.Unit, res.Path)
				return nil
			}
			if res.Stopped {
				note(log, "stopped %s", res.Unit)
			}
			note(log, "removed %s; the node's state is kept (`usernode down --purge` removes it)", res.Path)
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", install.DefaultName, "node name")
	return c
}

// notifyReady is `up`'s ready callback: under the unit (Type=notify) it
// tells systemd the node is Ready.
func notifyReady() { install.NotifyReady() }

// note tells the user, on w (stderr), what install or uninstall did. The
// action is done whether or not the line gets through, so a failed write
// is not the command's error.
func note(w io.Writer, format string, a ...any) {
	_, _ = fmt.Fprintf(w, "usernode: "+format+"\n", a...)
}
