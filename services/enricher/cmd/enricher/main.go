// Command enricher adds context to normalized events and routes them to the
// enriched lanes. See docs/architecture.md.
package main

import (
	"github.com/closedloop/closedloop/libs/lifecycle"
	"github.com/closedloop/closedloop/services/enricher/internal/app"
)

func main() { lifecycle.Main("enricher", app.Run) }
