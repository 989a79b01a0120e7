// Command ingress receives survey tools' webhooks, verifies them and writes
// each to the raw topic before it answers 2xx. See docs/architecture.md.
package main

import (
	"github.com/closedloop/closedloop/libs/lifecycle"
	"github.com/closedloop/closedloop/services/ingress/internal/app"
)

func main() { lifecycle.Main("ingress", app.Run) }
