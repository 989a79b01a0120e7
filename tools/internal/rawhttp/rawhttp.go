// Package rawhttp is the benchmarks' HTTP/1.1 client: pre-built requests
// written on raw keep-alive connections, each answer read with a minimal
// parser, so that the load generator spends a few µs per request and is not
// the bottleneck. net/http's client cost more per request than the bare
// server the ingress benchmark measured, which capped (and flattered) every
// ratio; on the pipeline benchmark's two cores it took CPU from the
// pipeline it drove.
package rawhttp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Client is one keep-alive connection.
type Client struct {
	conn net.Conn
	br   *bufio.Reader
}

// Dial connects to addr (host:port).
func Dial(addr string) (*Client, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Client{conn: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

// Close closes the connection.
func (c *Client) Close() { _ = c.conn.Close() }

// ErrMalformed is an answer that is not HTTP/1.1 with a Content-Length.
var ErrMalformed = errors.New("malformed answer")

// Do writes one request and reads its answer: the status code, the headers
// up to the blank line, and Content-Length bytes of body. An answer asking
// to close the connection is an error (the caller reconnects).
func (c *Client) Do(req []byte) (int, error) {
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write(req); err != nil {
		return 0, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, ErrMalformed
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, ErrMalformed
	}
	length, closing := -1, false
	for {
		h, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(h) <= 2 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, ErrMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, ErrMalformed
			}
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			closing = true
		}
	}
	if length < 0 {
		return 0, ErrMalformed // every server here sends a length
	}
	if _, err := c.br.Discard(length); err != nil {
		return 0, err
	}
	if closing {
		return code, errors.New("server closed the connection")
	}
	return code, nil
}

// AppendPost appends a POST of body to path with the given headers (name,
// value pairs) and its Content-Length.
func AppendPost(b []byte, path string, body []byte, headers ...string) []byte {
	b = append(b, "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: bench\r\n"...)
	for i := 0; i+1 < len(headers); i += 2 {
		b = append(b, headers[i]...)
		b = append(b, ": "...)
		b = append(b, headers[i+1]...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// DialAll opens n connections to addr (all or none).
func DialAll(addr string, n int) ([]*Client, error) {
	cs := make([]*Client, 0, n)
	for range n {
		c, err := Dial(addr)
		if err != nil {
			for _, c := range cs {
				c.Close()
			}
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// Load is one phase's requests.
type Load struct {
	N       int                // requests
	Request func(i int) []byte // request i
	// Interval, when set, sends open loop: request i is due at start +
	// i × Interval and its latency counts from then (a slow answer delays
	// the requests behind it on its connection, and they count it). 0:
	// closed loop, each request as soon as a connection is free.
	Interval time.Duration
	// Duration, when set, ends the phase: no request is sent (open loop:
	// due) after start + Duration.
	Duration time.Duration
}

// Drive sends l's requests, each once, over cs (one goroutine per
// connection, reconnecting to addr after a failed request; closed at the
// end) until they run out, the duration is over or ctx ends. answered gets
// each request sent — its status, or 0 and the error — with its latency,
// on the sending goroutine. Drive returns when the phase started.
func Drive(ctx context.Context, addr string, cs []*Client, l Load, answered func(i, code int, err error, latency time.Duration)) time.Time {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= l.N {
					return
				}
				t0 := time.Now()
				if l.Interval > 0 {
					t0 = start.Add(time.Duration(i) * l.Interval)
					if l.Duration > 0 && t0.Sub(start) > l.Duration {
						return
					}
					if w := time.Until(t0); w > 0 {
						time.Sleep(w)
					}
				} else if l.Duration > 0 && t0.Sub(start) > l.Duration {
					return
				}
				code, err := c.Do(l.Request(i))
				answered(i, code, err, time.Since(t0))
				if err != nil {
					c.Close()
					if c, err = Dial(addr); err != nil {
						c = nil
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	return start
}
