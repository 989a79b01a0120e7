// Command admin is closedloop's control plane: closedloop.admin.v1.AdminService
// over gRPC for operators and closedloopctl. See docs/operations.md.
//
// `admin topics plan|apply` creates or checks every topic the deployment
// needs (docs/deploy.md) and exits.
package main

import (
	"os"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/lifecycle"
	"github.com/closedloop/closedloop/services/admin/internal/app"
	"github.com/closedloop/closedloop/services/admin/internal/topics"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "topics" {
		os.Exit(topics.Main(os.Args[2:], config.FromEnviron(), os.Stdout, os.Stderr))
	}
	lifecycle.Main("admin", app.Run)
}
