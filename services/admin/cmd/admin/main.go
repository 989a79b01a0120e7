// Command admin is closedloop's control plane: closedloop.admin.v1.AdminService
// over gRPC for operators and closedloopctl. See docs/operations.md.
package main

import (
	"github.com/closedloop/closedloop/libs/lifecycle"
	"github.com/closedloop/closedloop/services/admin/internal/app"
)

func main() { lifecycle.Main("admin", app.Run) }
