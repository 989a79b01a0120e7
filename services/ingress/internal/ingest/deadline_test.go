package ingest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Concurrent requests get live contexts ending timeout after their start, at
// most one step later, and share them within a step.
func TestRequestsShareLiveDeadlinesWithinAStep(t *testing.T) {
	d := &deadlines{timeout: time.Second}
	var wg sync.WaitGroup
	var mu sync.Mutex
	distinct := map[context.Context]bool{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5000 {
				before := time.Now()
				ctx := d.after()
				after := time.Now()
				end, ok := ctx.Deadline()
				if !ok || ctx.Err() != nil || end.Before(before.Add(time.Second)) || end.After(after.Add(time.Second+deadlineStep)) {
					t.Errorf("context ending %v after its request (err %v), want live, %v–%v", end.Sub(before), ctx.Err(), time.Second, time.Second+deadlineStep)
					return
				}
				mu.Lock()
				distinct[ctx] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// 40,000 calls take well under a second here; even on a slow machine
	// they share far fewer contexts than calls.
	if len(distinct) > 4000 {
		t.Fatalf("%d contexts for 40000 calls: deadlines are not shared", len(distinct))
	}
}
