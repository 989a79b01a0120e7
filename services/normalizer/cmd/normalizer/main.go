// Command normalizer deduplicates raw webhooks and maps them to the canonical
// FeedbackEvent on the normalized topic. See docs/architecture.md.
package main

import (
	"github.com/closedloop/closedloop/libs/lifecycle"
	"github.com/closedloop/closedloop/services/normalizer/internal/app"
)

func main() { lifecycle.Main("normalizer", app.Run) }
