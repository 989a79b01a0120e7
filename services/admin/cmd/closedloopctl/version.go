package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/structpb"
)

// Version is set at link time (-ldflags "-X main.Version=v1.2.3"); without
// it the module version or the VCS revision of the build is shown.
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
		}
	}
	return v
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of closedloopctl",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			info, _ := structpb.NewStruct(map[string]any{"version": version(), "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH})
			return c.emit(info, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "closedloopctl %s (%s, %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			})
		},
	}
}

func (c *cli) completionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script",
		Long: `completion prints the script that completes closedloopctl's commands, flags and (asking the admin) source names.

  bash:  source <(closedloopctl completion bash)         (needs the bash-completion package)
  zsh:   closedloopctl completion zsh > "${fpath[1]}/_closedloopctl"
  fish:  closedloopctl completion fish > ~/.config/fish/completions/closedloopctl.fish`,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("completion needs a shell: bash, zsh, fish or powershell")
			}
			for _, s := range cmd.ValidArgs {
				if args[0] == s {
					return nil
				}
			}
			return usagef("completion %q: bash, zsh, fish or powershell", args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(c.out, true)
			case "zsh":
				return root.GenZshCompletion(c.out)
			case "fish":
				return root.GenFishCompletion(c.out, true)
			}
			return root.GenPowerShellCompletionWithDesc(c.out)
		},
	}
}
