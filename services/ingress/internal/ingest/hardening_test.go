package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
)

const (
	goodToken   = "tok_good_0123456789abcdefghijklmnop"
	goodSecret  = "dl_live_good_k3y9f8e7d6c5b4a"
	floodToken  = "tok_flood_0123456789abcdefghijklmnop"
	floodSecret = "dl_live_flood_k3y9f8e7d6c5b4a"
)

func twoSources(t *testing.T, extra string) *config.Pipeline {
	t.Helper()
	env := map[string]string{"GK": goodSecret, "GT": goodToken, "FK": floodSecret, "FT": floodToken}
	pipe, err := config.ParsePipeline([]byte(`
sources:
  - name: good
    provider: delighted
    secrets: [env:GK]
    ingest_tokens: [env:GT]
`+extra+`
  - name: flood
    provider: delighted
    secrets: [env:FK]
    ingest_tokens: [env:FT]
`+extra), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return pipe
}

func signWith(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func serve(t *testing.T, o Options) (*Handler, string) {
	t.Helper()
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	o.RawTopic = "raw"
	h, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return h, listen(t, h, ServerOptions{ReadTimeout: 20 * time.Second})
}

// Finding 1: a body that cannot be stored is refused for what it is (413),
// never answered 503 forever.
func TestARecordTheRawTopicCannotHoldGets413Not503(t *testing.T) {
	rec := &recorder{err: kafkaio.Permanent(kafkaio.ReasonRecordTooLarge, &kafkaio.RecordTooLargeError{Topic: "raw", Size: 1 << 20, Limit: 1 << 20})}
	_, url := serve(t, Options{Pipeline: twoSources(t, ""), Producer: rec})
	b := `{"event_type":"survey_response.created","event_id":"big","event_data":{"id":"1","score":1}}`
	resp, a := postTo(t, url+"/v1/hooks/good/"+goodToken, signWith(goodSecret, b), b)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || a.Error != "payload_too_large" {
		t.Fatalf("got %d %+v, want 413 payload_too_large", resp.StatusCode, a)
	}
}

func postTo(t *testing.T, url, sig, body string) (*http.Response, answer) {
	t.Helper()
	return post(t, url, "application/json", sig, body)
}

// Finding 4: requests that fail verification never spend the source's rate
// limit; past their own small budget they get 429 and are not logged one by
// one (finding 7).
func TestUnsignedFloodsDoNotSpendTheSourcesRateLimitNorFloodTheLog(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) }), nil))
	_, url := serve(t, Options{Pipeline: twoSources(t, "    rate_limit: {per_second: 1, burst: 20}\n"), Producer: &recorder{}, Log: log,
		UnverifiedPerSecond: 1, UnverifiedBurst: 5})
	codes := map[int]int{}
	start := time.Now()
	for i := range 300 {
		b := fmt.Sprintf(`{"event_type":"survey_response.created","event_id":"forged%d","event_data":{"id":"%d","score":1}}`, i, i)
		resp, _ := postTo(t, url+"/v1/hooks/good/"+goodToken, "sha256=00", b)
		codes[resp.StatusCode]++
	}
	// The burst of 5, plus what refilled at 1/s while they were sent.
	if most := 5 + int(time.Since(start).Seconds()) + 1; codes[401] < 5 || codes[401] > most || codes[401]+codes[429] != 300 {
		t.Fatalf("forged requests got %v; want 5 (to %d) × 401, the rest 429", codes, most)
	}
	for i := range 20 {
		b := fmt.Sprintf(`{"event_type":"survey_response.created","event_id":"real%d","event_data":{"id":"%d","score":9}}`, i, i)
		if resp, a := postTo(t, url+"/v1/hooks/good/"+goodToken, signWith(goodSecret, b), b); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("authentic request %d after the flood: %d %+v (the flood spent the source's rate limit)", i, resp.StatusCode, a)
		}
	}
	mu.Lock()
	lines := strings.Count(logs.String(), "webhook rejected")
	mu.Unlock()
	if lines > 2 {
		t.Fatalf("%d log lines for 300 rejections of one source and two reasons; want at most one per reason", lines)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Finding 3: one source sending slow large bodies (at 95 new connections a
// second, each declaring 1 MiB and sending a trickle) cannot make another
// source's requests fail, and memory stays within the budget.
func TestASourceFloodingSlowLargeBodiesCannotStarveAnother(t *testing.T) {
	if testing.Short() {
		t.Skip("floods for 3 s")
	}
	const maxBody = 1 << 20
	_, url := serve(t, Options{Pipeline: twoSources(t, "    rate_limit: {per_second: 1000, burst: 1000}\n"), Producer: &recorder{},
		MaxBody: maxBody, MaxInFlight: 128, SourceMaxInFlight: 32, MaxBodyMemory: 32 << 20, SourceMaxBodyMemory: 8 << 20})
	addr := strings.TrimPrefix(url, "http://")
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var peak atomic.Uint64
	go func() { // heap sampler
		for ctx.Err() == nil {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var floodCodes sync.Map
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the flood: 95 slow 1 MiB requests a second
		defer wg.Done()
		tick := time.NewTicker(time.Second / 95)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				code := slowPost(ctx, addr, "/v1/hooks/flood/"+floodToken, maxBody)
				v, _ := floodCodes.LoadOrStore(code, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}()
		}
	}()
	var ok, total atomic.Int64
	other := map[int]int{}
	var omu sync.Mutex
	for w := range 8 { // the good source: 8 clients back to back
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ctx.Err() == nil; i++ {
				b := fmt.Sprintf(`{"event_type":"survey_response.created","event_id":"g%d-%d","event_data":{"id":"%d","score":9}}`, w, i, i)
				req, _ := http.NewRequest(http.MethodPost, url+"/v1/hooks/good/"+goodToken, strings.NewReader(b))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Delighted-Webhook-Signature", signWith(goodSecret, b))
				resp, err := client.Do(req)
				total.Add(1)
				if err != nil {
					omu.Lock()
					other[-1]++
					omu.Unlock()
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					ok.Add(1)
				} else {
					omu.Lock()
					other[resp.StatusCode]++
					omu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	flood := map[int]int64{}
	floodCodes.Range(func(k, v any) bool { flood[k.(int)] = v.(*atomic.Int64).Load(); return true })
	growth := int64(peak.Load()) - int64(base.HeapAlloc)
	t.Logf("good source: %d of %d accepted (others %v); flood: %v; heap growth at peak %.1f MiB", ok.Load(), total.Load(), other, flood, float64(growth)/(1<<20))
	if total.Load() < 100 {
		t.Fatalf("only %d good requests were made", total.Load())
	}
	if ok.Load()*100 < total.Load()*99 {
		t.Fatalf("good source: %d of %d accepted (%v), want ≥ 99 %%", ok.Load(), total.Load(), other)
	}
	if flood[http.StatusTooManyRequests] == 0 {
		t.Fatalf("the flood was never refused: %v", flood)
	}
	// The flooding source may hold 8 MiB of budget; allow as much again for
	// buffers, connections and the test's own goroutines.
	if growth > 24<<20 {
		t.Fatalf("heap grew by %.1f MiB during the flood; the source's budget is 8 MiB", float64(growth)/(1<<20))
	}
}

// slowPost declares a body of n bytes, sends 1 kB every 100 ms until the
// server answers or ctx ends, and returns the status (0: no answer).
func slowPost(ctx context.Context, addr, path string, n int) int {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return -1
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-Delighted-Webhook-Signature: sha256=00\r\nContent-Length: %d\r\n\r\n", path, addr, n)
	status := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			status <- 0
			return
		}
		status <- resp.StatusCode
	}()
	chunk := bytes.Repeat([]byte("x"), 1024)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case s := <-status:
			return s
		case <-ctx.Done():
			return 0
		case <-tick.C:
			if _, err := conn.Write(chunk); err != nil {
				select {
				case s := <-status:
					return s
				case <-time.After(time.Second):
					return 0
				}
			}
		}
	}
}
