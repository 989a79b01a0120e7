package repocheck

import (
	"strings"
	"testing"
)

// Every histogram names its bucket boundaries (libs/telemetry's sets or
// its own): the SDK's default (0 to 10,000) makes a percentile of
// milliseconds meaningless.
func TestEveryHistogramHasExplicitBuckets(t *testing.T) {
	eachSourceFile(t, func(rel, src string) {
		for _, kind := range []string{"Float64Histogram(", "Int64Histogram("} {
			for i := strings.Index(src, kind); i >= 0; {
				open := i + len(kind) - 1
				depth, end := 0, len(src)
				for j := open; j < len(src); j++ {
					if src[j] == '(' {
						depth++
					} else if src[j] == ')' {
						if depth--; depth == 0 {
							end = j
							break
						}
					}
				}
				if call := src[open:end]; strings.HasPrefix(strings.TrimSpace(call[1:]), `"`) && !strings.Contains(call, "WithExplicitBucketBoundaries") {
					t.Errorf("%s:%d: a histogram without explicit bucket boundaries", rel, strings.Count(src[:i], "\n")+1)
				}
				next := strings.Index(src[i+1:], kind)
				if next < 0 {
					break
				}
				i += 1 + next
			}
		}
	})
}
