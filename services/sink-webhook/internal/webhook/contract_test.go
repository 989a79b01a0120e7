package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/libs/sink/sinktest"
)

// fakeReceiver is a Standard Webhooks receiver that counts the 2xx it gave
// per webhook-id and fails an id's next deliveries on command.
type fakeReceiver struct {
	mu       sync.Mutex
	accepted map[string]int
	fail     map[string][]sinktest.Failure
}

func (r *fakeReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	defer r.mu.Unlock()
	if fs := r.fail[id]; len(fs) > 0 {
		r.fail[id] = fs[1:]
		switch fs[0] {
		case sinktest.Unavailable:
			w.WriteHeader(http.StatusServiceUnavailable)
		case sinktest.RateLimited:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		case sinktest.Rejected:
			w.WriteHeader(http.StatusUnprocessableEntity)
		}
		return
	}
	r.accepted[id]++
	w.WriteHeader(http.StatusNoContent)
}

func TestTheWebhookDestinationPassesTheContract(t *testing.T) {
	rcv := &fakeReceiver{accepted: map[string]int{}, fail: map[string][]sinktest.Failure{}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	cp := &sinktest.MemoryCheckpoint{}
	sinktest.Run(t, sinktest.Harness{
		New: func(t *testing.T) sink.Destination {
			e, err := New(context.Background(), "receiver", srv.URL, []byte(secret), 2*time.Second, &memFlag{})
			if err != nil {
				t.Fatal(err)
			}
			return e
		},
		Checkpoint: func(*testing.T) sink.Checkpoint { return cp },
		Outcomes: func(*testing.T) map[string]int {
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			out := make(map[string]int, len(rcv.accepted))
			for k, v := range rcv.accepted {
				out[k] = v
			}
			return out
		},
		Fail: func(_ *testing.T, id string, f sinktest.Failure, n int) {
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			for range n {
				rcv.fail[id] = append(rcv.fail[id], f)
			}
		},
		Supports: []sinktest.Failure{sinktest.Unavailable, sinktest.RateLimited, sinktest.Rejected},
	})
}
