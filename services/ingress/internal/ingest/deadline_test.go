package ingest

import (
	"context"
	"errors"
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
				step := d.after()
				ctx := step.ctx
				after := time.Now()
				end, ok := ctx.Deadline()
				if !ok || ctx.Err() != nil || end.Before(before.Add(time.Second)) || end.After(after.Add(time.Second+deadlineStep)) {
					t.Errorf("context ending %v after its request (err %v), want live, %v–%v", end.Sub(before), ctx.Err(), time.Second, time.Second+deadlineStep)
					return
				}
				mu.Lock()
				distinct[ctx] = true
				mu.Unlock()
				step.release()
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

// A step's timer is stopped once no write uses it and it is no longer the
// current step; a step in use, or current, stays live.
func TestAStepIsCancelledOnlyWhenNoWriteUsesIt(t *testing.T) {
	d := &deadlines{timeout: time.Minute}
	// Two calls within one 10 ms step (back to back they almost always
	// are; a pair across a step boundary is released and taken again).
	var first, again *deadline
	for {
		first, again = d.after(), d.after()
		if again == first {
			break
		}
		again.release()
		first.release()
	}
	first.release()
	if first.ctx.Err() != nil {
		t.Fatal("a step still in use was cancelled by another write's release")
	}
	again.release()
	if first.ctx.Err() != nil {
		t.Fatal("the current step was cancelled while current")
	}
	time.Sleep(2 * deadlineStep)
	next := d.after()
	defer next.release()
	if next == first {
		t.Fatal("a later request got an earlier step")
	}
	if !errors.Is(first.ctx.Err(), context.Canceled) {
		t.Fatalf("the replaced step, unused, is %v; want cancelled (its timer stopped)", first.ctx.Err())
	}
	if next.ctx.Err() != nil || first.acquire() {
		t.Fatal("a cancelled step was handed out again")
	}
}
