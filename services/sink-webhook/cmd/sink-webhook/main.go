// Command sink-webhook POSTs every enriched FeedbackEvent as JSON to the
// configured endpoints, signed per Standard Webhooks. See docs/architecture.md.
package main

import (
	"github.com/closedloop/closedloop/libs/lifecycle"
	"github.com/closedloop/closedloop/services/sink-webhook/internal/app"
)

func main() { lifecycle.Main("sink-webhook", app.Run) }
