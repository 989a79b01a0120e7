package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"github.com/closedloop/closedloop/libs/kafkaio"
)

// The references the ingress is measured against, each run as its own
// process (`ingressbench -serve ceiling|nethttp|naive`).

// verified reads the body and checks the Delighted HMAC, as every receiver
// here must; it answers the refusal itself and returns nil then.
func verified(w http.ResponseWriter, r *http.Request) []byte {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		return nil
	}
	if !signed(r.Header.Get("X-Delighted-Webhook-Signature"), body) {
		w.WriteHeader(http.StatusUnauthorized)
		return nil
	}
	return body
}

// signed checks a Delighted signature header ("sha256=<hex HMAC>") of body.
func signed(header string, body []byte) bool {
	want, _ := hex.DecodeString(strings.TrimPrefix(header, "sha256="))
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hmac.Equal(m.Sum(nil), want)
}

// serveCeiling is the ceiling: a bare server on the ingress's HTTP stack
// (fasthttp, with the ingress's buffer size and timeouts) that checks the
// HMAC and answers 200 — what this machine can do without storing anything.
func serveCeiling(addr string) error {
	s := &fasthttp.Server{
		ReadBufferSize: 8 << 10, ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second, IdleTimeout: 60 * time.Second,
		MaxRequestBodySize: 1 << 20, StreamRequestBody: true, DisablePreParseMultipartForm: true, NoDefaultServerHeader: true,
		Handler: func(rc *fasthttp.RequestCtx) {
			body, err := io.ReadAll(io.LimitReader(rc.RequestBodyStream(), 1<<20))
			if err != nil {
				rc.SetStatusCode(http.StatusBadRequest)
				return
			}
			if !signed(string(rc.Request.Header.Peek("X-Delighted-Webhook-Signature")), body) {
				rc.SetStatusCode(http.StatusUnauthorized)
				return
			}
			rc.SetStatusCode(http.StatusOK)
		},
	}
	return s.ListenAndServe(addr)
}

// netHTTPHandler is the same ceiling on net/http, the server the ingress
// used until it measured this pair (docs/benchmarks.md, eighth pass).
func netHTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if verified(w, r) != nil {
			w.WriteHeader(http.StatusOK)
		}
	})
}

// naiveHandler is the receiver most teams write first with kafka-go: check
// the HMAC, decode the event id, one synchronous WriteMessages per request
// (acks=all, 2 ms batch timeout so concurrent requests share a produce
// request), 202 once it returns.
func naiveHandler(brokers, topic string) http.Handler {
	wr := kafkaio.NewWriter([]string{brokers}, topic) // a plain kafka-go Writer: murmur2, acks=all
	wr.BatchTimeout, wr.BatchSize = 2*time.Millisecond, 1000
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := verified(w, r)
		if body == nil {
			return
		}
		var ev struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(body, &ev); err != nil || ev.EventID == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if err := wr.WriteMessages(r.Context(), kafka.Message{Key: []byte(ev.EventID), Value: body}); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
}

func serve(kind, addr, brokers string) {
	var h http.Handler
	switch kind {
	case "ceiling":
		if err := serveCeiling(addr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	case "nethttp":
		h = netHTTPHandler()
	case "naive":
		h = naiveHandler(brokers, naiveTopic)
	default:
		fmt.Fprintln(os.Stderr, "unknown server", kind)
		os.Exit(2)
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
