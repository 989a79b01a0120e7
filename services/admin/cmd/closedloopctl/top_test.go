package main

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func answer(accepted, processed, lag int64, fresh float64, breaker adminv1.BreakerState) *adminv1.GetPipelineStatusResponse {
	return &adminv1.GetPipelineStatusResponse{
		Healthy: breaker != adminv1.BreakerState_BREAKER_STATE_OPEN,
		Sources: []*adminv1.SourceTraffic{{Source: "delighted", Accepted: accepted, Rejected: 2}},
		Stages: []*adminv1.StageStatus{
			{Name: "normalizer", Processed: processed, Lag: lag, FreshnessSeconds: 0.02, FreshnessAt: timestamppb.Now()},
			{Name: "sink-webhook/support", Processed: processed, FreshnessSeconds: fresh, FreshnessAt: timestamppb.Now(), DlqDepth: 3,
				Destinations: []*adminv1.DestinationStatus{{Name: "support", Breaker: breaker}}},
		},
	}
}

// Rates come from two answers' counters; a counter that went down (an
// instance restarted) counts from zero, not as a negative rate.
func TestTopComputesRatesFromConsecutiveAnswers(t *testing.T) {
	at := time.Now()
	tp := &top{c: &cli{addr: "admin:9097"}, interval: time.Second, hist: []topSample{
		{at, answer(100, 1000, 0, 0.1, adminv1.BreakerState_BREAKER_STATE_CLOSED)},
		{at.Add(2 * time.Second), answer(140, 1100, 50, 0.1, adminv1.BreakerState_BREAKER_STATE_CLOSED)},
		{at.Add(3 * time.Second), answer(10, 1130, 70, 0.1, adminv1.BreakerState_BREAKER_STATE_CLOSED)},
	}}
	got := tp.series(func(st *adminv1.GetPipelineStatusResponse) (float64, bool) {
		return float64(st.Sources[0].Accepted), true
	}, true)
	if len(got) != 2 || got[0] != 20 || got[1] != 10 {
		t.Fatalf("webhooks/s = %v, want [20 10]", got)
	}
	lines := tp.frame(0)
	text := ""
	for _, l := range lines {
		text += l.text + "\n"
	}
	for _, want := range []string{"delighted", "10.0", "normalizer", "30.0", "sink-webhook/support", "100ms", "20ms"} {
		if !strings.Contains(text, want) {
			t.Errorf("frame lacks %q:\n%s", want, text)
		}
	}
}

// An open breaker, a late destination and dead letters are highlighted;
// the problems are listed.
func TestTopHighlightsWhatIsUnhealthy(t *testing.T) {
	at := time.Now()
	open := answer(1, 1, 0, 90, adminv1.BreakerState_BREAKER_STATE_OPEN)
	open.Problems = []string{"sink-webhook/support: destination support: breaker open on i-1"}
	tp := &top{c: &cli{addr: "a"}, interval: time.Second, hist: []topSample{{at, open}}}
	levels := map[string]level{}
	for _, l := range tp.frame(0) {
		for _, k := range []string{"sink-webhook/support ", "normalizer ", "breaker open on i-1", "UNHEALTHY", "delighted"} {
			if strings.Contains(l.text, k) {
				levels[k] = l.level
			}
		}
	}
	if levels["sink-webhook/support "] != levelBad || levels["breaker open on i-1"] != levelBad || levels["UNHEALTHY"] != levelBad {
		t.Fatalf("levels %v", levels)
	}
	if levels["normalizer "] != levelOK || levels["delighted"] != levelOK { // refused webhooks need a rate: one answer has none
		t.Fatalf("levels %v", levels)
	}
	late := answer(1, 1, 0, 90, adminv1.BreakerState_BREAKER_STATE_CLOSED)
	late.Stages[1].DlqDepth = 0
	tp.hist = []topSample{{at, late}}
	for _, l := range tp.frame(0) {
		if strings.HasPrefix(l.text, "sink-webhook/support") && l.level != levelWarn {
			t.Fatalf("a destination 90 s behind is not a warning: %q %v", l.text, l.level)
		}
	}
}

func TestSparklinesScaleAndFillFromTheRight(t *testing.T) {
	if got := spark([]float64{0, 1, 2, 4}); got != strings.Repeat(" ", sparkWidth-4)+"▁▃▅█" {
		t.Fatalf("spark = %q", got)
	}
	long := make([]float64, 64)
	long[63] = 5
	if got := []rune(spark(long)); len(got) != sparkWidth || got[sparkWidth-1] != '█' || got[0] != '▁' {
		t.Fatalf("spark of 64 points = %q", string(got))
	}
	if got := spark(nil); got != strings.Repeat(" ", sparkWidth) {
		t.Fatalf("spark of nothing = %q", got)
	}
}

// Without a terminal, top prints plain blocks: no escape codes.
func TestTopWithoutATerminalPrintsPlainBlocks(t *testing.T) {
	addr := fakeServer(t)
	code, out, errOut := runCLI("--addr", addr, "top", "--interval", "100ms", "--iterations", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "\x1b[") {
		t.Fatalf("escape codes in plain output: %q", out)
	}
	if strings.Count(out, "closedloop top") != 2 || !strings.Contains(out, "normalizer: 5000 records behind") {
		t.Fatalf("want two blocks with the problem:\n%s", out)
	}
}
