package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func start(t *testing.T, args ...string) (addrs []string, stop func()) {
	t.Helper()
	o, err := parse(args)
	if err != nil {
		t.Fatal(err)
	}
	o.addrFile = filepath.Join(t.TempDir(), "addrs")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(o.addrFile); err == nil {
			addrs = strings.Split(strings.TrimSpace(string(b)), ",")
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("devbroker did not write its addresses")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addrs, func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestThreeBrokersServeSeededTopics(t *testing.T) {
	addrs, stop := start(t, "-brokers", "3", "-topics", "a,b", "-partitions", "2")
	defer stop()
	if len(addrs) != 3 {
		t.Fatalf("addresses %v, want 3", addrs)
	}
	md, err := (&kafka.Client{Addr: kafka.TCP(addrs...)}).Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 3 || len(md.Topics) != 2 || len(md.Topics[0].Partitions) != 2 {
		t.Fatalf("metadata: %d brokers, topics %+v", len(md.Brokers), md.Topics)
	}
}

func TestRecordsSurviveARestartWithADataDir(t *testing.T) {
	dir := t.TempDir()
	addrs, stop := start(t, "-data-dir", dir, "-topics", "t", "-partitions", "1")
	w := &kafka.Writer{Addr: kafka.TCP(addrs...), Topic: "t", RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte("k"), Value: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	stop()

	addrs, stop = start(t, "-data-dir", dir)
	defer stop()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: addrs, Topic: "t", Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := r.ReadMessage(ctx)
	if err != nil || string(m.Value) != "kept" {
		t.Fatalf("after restart read %q, %v; want the record written before", m.Value, err)
	}
}

func TestBadArgumentsAreRefused(t *testing.T) {
	for _, args := range [][]string{{"-brokers", "2"}, {"-brokers", "3", "-ports", "1,2"}, {"-ports", "x"}, {"-partitions", "0"}} {
		if _, err := parse(args); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
