package mapping

import (
	"github.com/segmentio/asm/cpu"
	"github.com/segmentio/asm/cpu/x86"
)

// The mappers decode with segmentio/encoding, whose JSON decoder checks
// every string of a body that is not all printable ASCII (any accent in a
// name or a comment) with segmentio/asm's ascii.ValidPrint, and folds and
// looks up keys with its other functions. Their AVX2 versions mix legacy
// SSE with 256-bit AVX instructions and return without VZEROUPPER: on the
// benchmark machine a call cost ~200 ns against ~10 for the portable
// version of the same function, and 17 % of the normalizer's CPU went into
// that one check (docs/benchmarks.md, eleventh pass). The strings of a
// webhook are short, where the portable versions are as fast anyway, so the
// mappers turn the AVX2 paths off for the process. segmentio/asm reads
// cpu.X86 at every call; nothing else in the normalizer uses it.
func init() {
	cpu.X86 = x86.CPU(uint64(cpu.X86) &^ uint64(x86.AVX2))
}
