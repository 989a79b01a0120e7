package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// The webhook port is served by fasthttp, not net/http. Measured on the
// development machine (make bench-ingress, docs/benchmarks.md "Eighth
// pass"), a bare net/http server that only checks the HMAC used 33 µs of
// CPU per request at full load, a bare fasthttp server 16 µs: net/http's
// per-request costs (a background-read goroutine woken and cancelled per
// request, deadlines set and reset four times, a header map and its
// clone) were more than the ingress's own work and its Kafka write
// together. The port serves one route and one method, so the router,
// tracing and timing are the few lines below.

// ServerOptions bound the webhook port's connections.
type ServerOptions struct {
	// ReadTimeout bounds reading a whole request, headers and body, from
	// its first byte (default 15 s).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing an answer (default 15 s).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long (default 60 s).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers (default 8 KiB);
	// larger gets 431.
	MaxHeaderBytes int
	// MaxConns bounds the connections served at once (default 16,384);
	// past it a new connection gets 503 and is closed.
	MaxConns int
}

// route is the one route of the port; the server span is named after it.
const route = "/v1/hooks/{source}/{token}"

const routePrefix = "/v1/hooks/"

// Server returns the HTTP server of the webhook port: POST
// /v1/hooks/{source}/{token} goes to the handler, another method on that
// path gets 405 with Allow: POST, any other path 404. Bodies are streamed
// to the handler, which reads them against its memory budget (at most 8 KiB
// of a body is read ahead of it).
func (h *Handler) Server(o ServerOptions) *fasthttp.Server {
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 15 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 15 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 8 << 10
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 16 << 10
	}
	return &fasthttp.Server{
		Handler:      h.Handle,
		ErrorHandler: h.malformed,
		// The read buffer holds the request line and headers: its size is
		// their limit (431 past it).
		ReadBufferSize:     o.MaxHeaderBytes,
		ReadTimeout:        o.ReadTimeout,
		WriteTimeout:       o.WriteTimeout,
		IdleTimeout:        o.IdleTimeout,
		Concurrency:        o.MaxConns,
		MaxRequestBodySize: int(h.o.MaxBody),
		StreamRequestBody:  true,
		// No multipart parsing: a webhook is JSON, and a multipart body
		// must not be spooled to disk ahead of the handler.
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
		Logger:                       serverLog{h.o.Log},
	}
}

// Handle serves one request of the webhook port (Server's handler).
func (h *Handler) Handle(rc *fasthttp.RequestCtx) {
	start := time.Now()
	source, token, ok := parseRoute(rc.Path())
	if !ok {
		h.write(context.Background(), rc, "", http.StatusNotFound, answer{Error: "not_found", Message: "no such path; webhooks are posted to " + route})
		return
	}
	ctx, span := h.startSpan()
	if !rc.IsPost() {
		rc.Response.Header.Set("Allow", http.MethodPost)
		h.write(ctx, rc, "", http.StatusMethodNotAllowed, answer{Error: "method_not_allowed", Message: "webhooks are posted: use POST"})
	} else {
		h.serve(ctx, rc, source, token)
	}
	status := rc.Response.StatusCode()
	// Label values stay bounded: a configured source or "unknown", POST or
	// "_OTHER" (the HTTP conventions' name for a method outside the known set).
	method := http.MethodPost
	if !rc.IsPost() {
		method = "_OTHER"
	}
	h.endSpan(span, method, status)
	if _, ok := h.sources.Load().byName[source]; !ok {
		source = "unknown"
	}
	h.duration.Record(ctx, time.Since(start).Seconds(), h.opts.duration(source, method, status))
}

// parseRoute takes the source and token out of /v1/hooks/{source}/{token}:
// two non-empty segments, nothing after them.
func parseRoute(path []byte) (source, token string, ok bool) {
	if len(path) <= len(routePrefix) || string(path[:len(routePrefix)]) != routePrefix {
		return "", "", false
	}
	rest := path[len(routePrefix):]
	slash := -1
	for i, c := range rest {
		if c == '/' {
			if slash >= 0 {
				return "", "", false
			}
			slash = i
		}
	}
	if slash <= 0 || slash == len(rest)-1 {
		return "", "", false
	}
	return string(rest[:slash]), string(rest[slash+1:]), true
}

// malformed answers a request the server could not parse: its headers too
// large (431), a read timeout (408), anything else 400. The connection is
// closed after it. (A body over the limit never gets here: the server
// streams it, and the handler answers 413.)
func (h *Handler) malformed(rc *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var nerr net.Error
	switch {
	case errors.As(err, &small):
		h.write(context.Background(), rc, "", http.StatusRequestHeaderFieldsTooLarge, answer{Error: "headers_too_large", Message: "the request line and headers exceed the limit"})
	case errors.As(err, &nerr) && nerr.Timeout():
		h.write(context.Background(), rc, "", http.StatusRequestTimeout, answer{Error: "request_timeout", Message: "the request was not received in time"})
	default:
		h.write(context.Background(), rc, "", http.StatusBadRequest, answer{Error: "malformed_request", Message: "the request is not valid HTTP/1.1"})
	}
}

// requestHeader copies the named headers (canonical names) of a request
// into an http.Header, the form the signature schemes, the identification
// and the record read; each keeps its first value, the one they read.
// Copying every header was 6 % of the ingress's CPU at full load. The map
// and its value slices are recycled (headerSet.release): a new map per
// request was a third of the ingress's allocated bytes at full load.
func requestHeader(rh *fasthttp.RequestHeader, names []string) *headerSet {
	s := headerSets.Get().(*headerSet)
	for _, n := range names {
		if v := rh.Peek(n); len(v) > 0 {
			s.vals = append(s.vals, string(v))
			s.h[n] = s.vals[len(s.vals)-1 : len(s.vals) : len(s.vals)]
		}
	}
	return s
}

// headerSet is one request's copy of the headers its source reads (h).
// The values are new strings, so what the request's handling keeps of them
// (an event id taken from a header) outlives the set; the map and the
// slice holding them are reused once the request is answered.
type headerSet struct {
	h    http.Header
	vals []string // h's values, each h[name] a one-element window of it
}

var headerSets = sync.Pool{New: func() any { return &headerSet{h: http.Header{}} }}

// release empties the set for the next request; nothing may use s.h after.
func (s *headerSet) release() {
	clear(s.h)
	clear(s.vals)
	s.vals = s.vals[:0]
	headerSets.Put(s)
}

// serverLog sends fasthttp's own messages (connections it could not serve)
// to the service's log at debug level: a scanner must not flood the log.
type serverLog struct{ log *slog.Logger }

func (l serverLog) Printf(format string, args ...any) {
	if l.log != nil && l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("webhook port", "message", fmt.Sprintf(format, args...))
	}
}
