package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestUsageMistakesExitTwoAndTeach(t *testing.T) {
	for _, args := range [][]string{
		{}, {"nosuch"}, {"dlq"}, {"dlq", "ls"}, {"dlq", "replay"}, {"dlq", "replay", "a/0/1", "--sink", "s"},
		{"dlq", "discard", "a/0/1"}, {"tokens", "issue"}, {"pause", "sink-warehouse"}, {"-o", "yaml", "status"},
		{"dlq", "ls", "sink-warehouse", "--since", "yesterday"}, {"dlq", "ls", "sink-warehouse", "--class", "bad"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s%s)", args, code, exitUsage, out.String(), errb.String())
		}
	}
	var out bytes.Buffer
	if code := run([]string{"help"}, &out, &out); code != 0 || !strings.Contains(out.String(), "dlq replay") {
		t.Fatalf("help: exit %d\n%s", code, out.String())
	}
}
