package fake

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Hooks delivers a fake vendor's outbound webhooks (a helpdesk's "ticket
// solved" notifications) to one URL, in order, each retried with backoff
// until it is answered 2xx or Attempts run out, as the vendors retry. Sign
// gives each attempt its headers (a signature over a fresh timestamp).
type Hooks struct {
	URL      string
	Sign     func(body []byte, now time.Time) http.Header
	Client   *http.Client
	Attempts int           // default 6
	Backoff  time.Duration // first wait, doubled each time (default 1s)
	// Log, when set, gets a line for each delivery that failed for good.
	Log io.Writer

	once      sync.Once
	mu        sync.Mutex
	queue     [][]byte
	wake      chan struct{}
	delivered int
	failed    int
}

// Send queues a webhook body; it never blocks.
func (h *Hooks) Send(body []byte) {
	if h == nil || h.URL == "" {
		return
	}
	h.once.Do(h.start)
	h.mu.Lock()
	h.queue = append(h.queue, body)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Counts are the webhooks delivered and given up on so far.
func (h *Hooks) Counts() (delivered, failed int) {
	if h == nil {
		return 0, 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.delivered, h.failed
}

func (h *Hooks) start() {
	h.wake = make(chan struct{}, 1)
	if h.Client == nil {
		h.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if h.Attempts == 0 {
		h.Attempts = 6
	}
	if h.Backoff == 0 {
		h.Backoff = time.Second
	}
	go h.run()
}

func (h *Hooks) run() {
	for {
		h.mu.Lock()
		if len(h.queue) == 0 {
			h.mu.Unlock()
			<-h.wake
			continue
		}
		body := h.queue[0]
		h.queue = h.queue[1:]
		h.mu.Unlock()
		err := h.deliver(body)
		h.mu.Lock()
		if err != nil {
			h.failed++
		} else {
			h.delivered++
		}
		h.mu.Unlock()
		if err != nil && h.Log != nil {
			fmt.Fprintf(h.Log, "webhook to %s given up after %d attempts: %v\n", h.URL, h.Attempts, err)
		}
	}
}

func (h *Hooks) deliver(body []byte) error {
	wait := h.Backoff
	var err error
	for attempt := 1; attempt <= h.Attempts; attempt++ {
		if attempt > 1 {
			time.Sleep(wait)
			wait *= 2
		}
		if err = h.post(body); err == nil {
			return nil
		}
	}
	return err
}

func (h *Hooks) post(body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if h.Sign != nil {
		for k, vs := range h.Sign(body, time.Now()) {
			req.Header[k] = vs
		}
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// Agent works tickets as a support agent would, so that a local stack's
// loop closes: of the tickets it is given, a share (chosen by the ticket's
// id, so a restart chooses the same) gets a public reply after ReplyAfter
// and is solved after SolveAfter, each ±50 %.
type Agent struct {
	Share      float64
	ReplyAfter time.Duration
	SolveAfter time.Duration
	Reply      func(id int64)
	Solve      func(id int64)
}

// Works reports whether the agent takes ticket id.
func (a *Agent) Works(id int64) bool {
	if a == nil || a.Share <= 0 {
		return false
	}
	f := fnv.New32a()
	_, _ = f.Write([]byte(strconv.FormatInt(id, 10)))
	return float64(f.Sum32()%1000) < a.Share*1000
}

// Assign schedules the agent's work on ticket id, when it takes it.
func (a *Agent) Assign(id int64) {
	if !a.Works(id) {
		return
	}
	jitter := func(d time.Duration, salt int64) time.Duration {
		f := fnv.New32a()
		_, _ = f.Write([]byte(strconv.FormatInt(id*31+salt, 10)))
		return d/2 + time.Duration(int64(f.Sum32()%1000)*int64(d)/1000)
	}
	reply := jitter(a.ReplyAfter, 1)
	solve := max(jitter(a.SolveAfter, 2), reply+time.Second)
	if a.Reply != nil {
		time.AfterFunc(reply, func() { a.Reply(id) })
	}
	if a.Solve != nil {
		time.AfterFunc(solve, func() { a.Solve(id) })
	}
}

// AgentFlags are the fake agent's command-line flags, the same on every
// local helpdesk.
type AgentFlags struct {
	Share                  float64
	ReplyAfter, SolveAfter time.Duration
}

// Register adds -agent-share, -agent-reply-after and -agent-solve-after.
func (a *AgentFlags) Register(fs *flag.FlagSet) {
	fs.Float64Var(&a.Share, "agent-share", 0, "share of the tickets a fake agent replies to and solves (0 to 1)")
	fs.DurationVar(&a.ReplyAfter, "agent-reply-after", 8*time.Second, "about when the agent replies")
	fs.DurationVar(&a.SolveAfter, "agent-solve-after", 20*time.Second, "about when the agent solves")
}
