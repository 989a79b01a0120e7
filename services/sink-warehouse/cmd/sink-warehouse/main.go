// Command sink-warehouse loads enriched FeedbackEvents into PostgreSQL,
// one row per event. See docs/architecture.md.
package main

import (
	"github.com/closedloop/closedloop/libs/lifecycle"
	"github.com/closedloop/closedloop/services/sink-warehouse/internal/app"
)

func main() { lifecycle.Main("sink-warehouse", app.Run) }
