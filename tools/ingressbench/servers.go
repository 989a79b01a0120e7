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

	"github.com/closedloop/closedloop/libs/kafkaio"
)

// The two references the ingress is measured against, each run as its own
// process (`ingressbench -serve ceiling|naive`).

// verified reads the body and checks the Delighted HMAC, as every receiver
// here must; it answers the refusal itself and returns nil then.
func verified(w http.ResponseWriter, r *http.Request) []byte {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		return nil
	}
	want, _ := hex.DecodeString(strings.TrimPrefix(r.Header.Get("X-Delighted-Webhook-Signature"), "sha256="))
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), want) {
		w.WriteHeader(http.StatusUnauthorized)
		return nil
	}
	return body
}

// ceilingHandler is the ceiling: a bare net/http server that checks the
// HMAC and answers 200 — what this machine can do without storing anything.
func ceilingHandler() http.Handler {
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
		h = ceilingHandler()
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
