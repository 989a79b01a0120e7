package service

import (
	"runtime"
	"testing"
	"time"
)

// A service's record budget is split among its consumers, never below
// 1 MiB each; one consumer (or an unset count) takes all of it.
func TestTheRecordBudgetIsSharedByTheServicesConsumers(t *testing.T) {
	for _, c := range []struct{ budget, consumers, want int }{
		{8 << 20, 0, 8 << 20},
		{8 << 20, 1, 8 << 20},
		{8 << 20, 4, 2 << 20},
		{8 << 20, 100, 1 << 20},
		{64 << 20, 3, (64 << 20) / 3},
	} {
		s := &Service{Common: Common{ConsumerBufferBytes: c.budget}, Consumers: c.consumers}
		if got := s.bufferBytes(); got != c.want {
			t.Errorf("%d bytes over %d consumers: %d each, want %d", c.budget, c.consumers, got, c.want)
		}
		if got := s.consumerConfig("g", []string{"t"}, nil).BufferBytes; got != c.want {
			t.Errorf("the consumer configuration carries %d bytes, want %d", got, c.want)
		}
	}
}

// CPU-bound stages run at least two workers, so that one's CPU work
// overlaps another's round trip even with one Go processor.
func TestCoreWorkersAreAtLeastTwoAndOnePerProcessor(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	if n := CoreWorkers(); n != 2 {
		t.Fatalf("GOMAXPROCS=1: %d workers, want 2", n)
	}
	runtime.GOMAXPROCS(4)
	if n := CoreWorkers(); n != 4 {
		t.Fatalf("GOMAXPROCS=4: %d workers, want 4", n)
	}
}

// A batching stage's defaults: CoreWorkers workers and the stage's linger.
func TestABatchingStageRunsCoreWorkersAndItsLinger(t *testing.T) {
	s := &Service{Common: Common{ConsumerWorkers: -1, ConsumerLinger: -1}}
	s.BatchingStage(5 * time.Millisecond)
	if s.workers() != CoreWorkers() || s.linger() != 5*time.Millisecond {
		t.Fatalf("workers %d, linger %v; want %d and 5ms", s.workers(), s.linger(), CoreWorkers())
	}
	s.Common.ConsumerWorkers, s.Common.ConsumerLinger = 0, 0 // CONSUMER_WORKERS=0, CONSUMER_LINGER=0 win
	if s.workers() != 0 || s.linger() != 0 {
		t.Fatalf("the settings did not override the stage's defaults: %d, %v", s.workers(), s.linger())
	}
}
