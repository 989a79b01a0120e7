// Command sink-console prints enriched events to stdout; `make run` uses it
// when no PostgreSQL is available.
package main

import (
	"github.com/closedloop/closedloop/libs/lifecycle"
	"github.com/closedloop/closedloop/services/sink-console/internal/app"
)

func main() { lifecycle.Main("sink-console", app.Run) }
