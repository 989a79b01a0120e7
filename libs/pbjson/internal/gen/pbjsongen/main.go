// Command pbjsongen writes pbjson's generated encoders (package gen):
//
//	cd libs/pbjson && go run ./internal/gen/pbjsongen
//
// (go generate in libs/pbjson, and make generate, run it.)
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/closedloop/closedloop/libs/pbjson/internal/gen"
)

func main() {
	out := flag.String("o", "generated.go", "the file to write")
	flag.Parse()
	src, err := gen.Source()
	if err == nil {
		err = os.WriteFile(*out, src, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pbjsongen:", err)
		os.Exit(1)
	}
}
