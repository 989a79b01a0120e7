package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/closedloop/closedloop/tools/internal/rawhttp"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// The load generator writes pre-built HTTP/1.1 requests on raw keep-alive
// connections (tools/internal/rawhttp).

// requests is one phase's requests, built before the phase starts: each a
// complete HTTP/1.1 request with a distinct, signed ~1.5 KiB Delighted body.
type requests struct {
	arena []byte
	ends  []int  // request i is arena[ends[i-1]:ends[i]]
	first uint64 // request i's id is first+i
}

func (rq *requests) n() int { return len(rq.ends) }

func (rq *requests) get(i int) []byte {
	start := 0
	if i > 0 {
		start = rq.ends[i-1]
	}
	return rq.arena[start:rq.ends[i]]
}

// eventID is the Delighted event id of request number id (the record key the
// ingress and the naive receiver write).
func eventID(id uint64) string { return fmt.Sprintf("%064x", id) }

var pad = bytes.Repeat([]byte("Sehr zufrieden mit dem Support, schnelle Antworten. "), 17)

// body is a distinct Delighted survey_response.updated of ~1.4 KiB.
func body(dst []byte, id uint64) []byte {
	i := int(id & 0xffffff)
	dst = append(dst, `{"event_type":"survey_response.updated","event_id":"`...)
	dst = append(dst, eventID(id)...)
	dst = fmt.Appendf(dst, `","event_data":{"id":"%d","person":{"id":"%d","email":"kunde%d@example.de","name":"Jörg Müller","created_at":1763693600},"survey_type":"nps","score":%d,"comment":"%s","permalink":"https://app.delighted.com/r/%d","created_at":1763780000,"updated_at":1763780095,"person_properties":{"plan":"enterprise","account":{"id":"acct_42","region":"eu-central"},"seats":120},"notes":[],"tags":["bench"],"additional_answers":[]}}`,
		100000+i, 5000+i%977, i, i%11, pad, 100000+i)
	return dst
}

// build makes n requests to path with ids first, first+1, … on all cores.
func build(path string, first uint64, n int) *requests {
	rq := &requests{ends: make([]int, n), first: first}
	workers := runtime.GOMAXPROCS(0)
	parts := make([][]byte, workers)
	lens := make([][]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lo, hi := n*w/workers, n*(w+1)/workers
			buf := make([]byte, 0, (hi-lo)*1800)
			var b []byte
			m := hmac.New(sha256.New, []byte(secret))
			for i := lo; i < hi; i++ {
				id := first + uint64(i)
				b = body(b[:0], id)
				m.Reset()
				m.Write(b)
				start := len(buf)
				buf = rawhttp.AppendPost(buf, path, b, "User-Agent", "Delighted Webhook Service", "Content-Type", "application/json",
					"X-Delighted-Webhook-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
				lens[w] = append(lens[w], len(buf)-start)
			}
			parts[w] = buf
		}()
	}
	wg.Wait()
	rq.arena = slices.Concat(parts...)
	end := 0
	i := 0
	for _, ls := range lens {
		for _, l := range ls {
			end += l
			rq.ends[i] = end
			i++
		}
	}
	return rq
}

// phase is one run of the load generator against one server.
type phase struct {
	name     string
	sent     int           // requests answered or failed
	elapsed  time.Duration // first send to last answer
	lat      []time.Duration
	codes    map[int]int
	errs     int
	accepted []uint64 // ids answered 2xx
	target   int      // req/s asked for (0: closed loop)
	cpu      map[string]float64
	order    []string // processes in cpu, in print order
	short    bool     // the pre-built requests ran out before the duration
}

func (p *phase) rps() float64 { return float64(p.sent) / p.elapsed.Seconds() }

func (p *phase) pct(q float64) time.Duration {
	if len(p.lat) == 0 {
		return 0
	}
	return p.lat[min(len(p.lat)-1, int(q*float64(len(p.lat))))]
}

// cpuPerReq is a process's CPU per request answered, in µs.
func (p *phase) cpuPerReq(proc string) float64 {
	if p.sent == 0 {
		return 0
	}
	return p.cpu[proc] / float64(p.sent) * 1e6
}

func (p *phase) String() string {
	var codes []string
	keys := make([]int, 0, len(p.codes))
	for k := range p.codes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		codes = append(codes, fmt.Sprintf("%d×%d", p.codes[k], k))
	}
	s := fmt.Sprintf("%-26s %8.0f req/s  p50 %7s  p99 %7s  answers %v, errors %d\n", p.name, p.rps(),
		p.pct(0.50).Round(10*time.Microsecond), p.pct(0.99).Round(10*time.Microsecond), codes, p.errs)
	s += fmt.Sprintf("%-26s CPU per request:", "")
	var total float64
	for _, proc := range p.order {
		s += fmt.Sprintf(" %s %.1f µs,", proc, p.cpuPerReq(proc))
		total += p.cpu[proc]
	}
	share := 0.0
	if total > 0 {
		share = p.cpu["load generator"] / total * 100
	}
	s += fmt.Sprintf(" load generator's share of the CPU used %.0f %% (%.0f %% of a core)", share, p.cpu["load generator"]/p.elapsed.Seconds()*100)
	if p.short {
		s += "\n  (the pre-built requests ran out before the duration: raise -max-rps)"
	}
	return s
}

// drive sends the requests to addr over conns keep-alive connections: as
// fast as answers come back (closed loop) when rate is 0, else open loop at
// rate req/s, each request's latency measured from the moment it was due
// (so a slow answer delays the requests behind it and they count it). It
// stops at d or when the requests run out. procs are the processes whose CPU
// the phase reports besides the load generator's own.
func drive(name, addr string, rq *requests, conns int, d time.Duration, rate int, procs []*stack.Process) (*phase, error) {
	ph := &phase{name: name, codes: map[int]int{}, target: rate, cpu: map[string]float64{}}
	cs, err := rawhttp.DialAll(addr, conns)
	if err != nil {
		return nil, err
	}
	codes := make([]uint16, rq.n())
	lats := make([]time.Duration, rq.n())
	load := rawhttp.Load{N: rq.n(), Request: rq.get, Duration: d}
	if rate > 0 {
		load.Interval = time.Second / time.Duration(rate)
	}
	before := cpuOf(procs)
	selfBefore := stack.CPUSeconds(os.Getpid())
	start := rawhttp.Drive(context.Background(), addr, cs, load, func(i, code int, err error, latency time.Duration) {
		if err != nil {
			codes[i] = 1 // no answer
			return
		}
		codes[i], lats[i] = uint16(code), latency
	})
	ph.elapsed = time.Since(start)
	ph.cpu["load generator"] = stack.CPUSeconds(os.Getpid()) - selfBefore
	after := cpuOf(procs)
	for _, p := range procs {
		ph.cpu[p.Name] = after[p.Name] - before[p.Name]
		ph.order = append(ph.order, p.Name)
	}
	ph.order = append(ph.order, "load generator")
	for i, code := range codes {
		switch {
		case code == 0:
		case code == 1:
			ph.sent++
			ph.errs++
		default:
			ph.sent++
			ph.codes[int(code)]++
			ph.lat = append(ph.lat, lats[i])
			if code/100 == 2 {
				ph.accepted = append(ph.accepted, rq.first+uint64(i))
			}
		}
	}
	ph.short = ph.sent == rq.n() && rate == 0
	slices.Sort(ph.lat)
	return ph, nil
}

func cpuOf(procs []*stack.Process) map[string]float64 {
	out := map[string]float64{}
	for _, p := range procs {
		out[p.Name] = stack.CPUSeconds(p.PID())
	}
	return out
}
