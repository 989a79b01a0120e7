package e2e

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/grpcserver"
	"github.com/closedloop/closedloop/tools/internal/delightedgen"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// newPipeline starts a pipeline of its own for the test on the shared broker.
func newPipeline(t *testing.T, name string, env ...string) *stack.Pipeline {
	t.Helper()
	return newPipelineOn(t, infra.broker.Addrs, name, env...)
}

// newPipelineOn starts a pipeline of its own on the given brokers.
func newPipelineOn(t *testing.T, brokers, name string, env ...string) *stack.Pipeline {
	t.Helper()
	return newPipelineWith(t, brokers, infra.redis.Addr, name, env...)
}

// newPipelineWith starts a pipeline of its own on the given brokers and Redis.
func newPipelineWith(t *testing.T, brokers, redisAddr, name string, env ...string) *stack.Pipeline {
	t.Helper()
	p := pipelineSpec(name, brokers, redisAddr, env...)
	startPipeline(t, p)
	return p
}

// pipelineSpec describes a pipeline of its own for the test, to adjust
// before startPipeline.
func pipelineSpec(name, brokers, redisAddr string, env ...string) *stack.Pipeline {
	return &stack.Pipeline{
		Name: name, BinDir: infra.binDir, Dir: filepath.Join(infra.dir, name), Brokers: brokers, Redis: redisAddr,
		DatabaseURL: infra.pg.URL, Secret: "dl_test_" + name, Token: delightedgen.IngestToken(),
		Env: append([]string{"LOG_LEVEL=info"}, env...),
	}
}

// startPipeline starts p and stops it when the test ends; on failure it
// prints the services' last log lines and keeps the logs.
func startPipeline(t *testing.T, p *stack.Pipeline) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		_ = p.Stop()
		// One log call per line: make test's filter keeps lines that name
		// the test file, so a start-up failure shows its service's output.
		for _, line := range strings.Split(err.Error(), "\n") {
			t.Log(line)
		}
		t.Fatal("the pipeline did not start")
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("graceful stop: %v", err)
		}
		if t.Failed() {
			for name, proc := range p.Services {
				t.Logf("--- %s log (last lines) ---\n%s", name, proc.Tail(30))
			}
			keep := filepath.Join(os.TempDir(), "closedloop-e2e-failed-"+p.Name)
			_ = os.RemoveAll(keep)
			if err := os.Rename(p.Dir, keep); err == nil {
				t.Logf("service logs kept in %s", keep)
			}
			return
		}
		_ = os.RemoveAll(p.Dir)
	})
}

func db(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), infra.pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// rowsByEventID returns how many warehouse rows each event id has.
func rowsByEventID(t *testing.T, pool *pgxpool.Pool, schema string) map[string]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT event_id, count(*) FROM `+schema+`.feedback_events GROUP BY event_id`)
	if err != nil {
		return nil // the sink may not have migrated yet
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	return out
}

// waitRows waits until the warehouse holds every want id (or the timeout),
// then a little longer, so late duplicates would show.
// onMissing, when set, is told which events never arrived (for diagnosis).
var onMissing func(missing []string)

func waitRows(t *testing.T, pool *pgxpool.Pool, schema string, want map[string]bool, timeout time.Duration) map[string]int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := rowsByEventID(t, pool, schema)
		have := 0
		for id := range want {
			if got[id] > 0 {
				have++
			}
		}
		if have == len(want) {
			time.Sleep(1500 * time.Millisecond)
			return rowsByEventID(t, pool, schema)
		}
		if time.Now().After(deadline) {
			var missing []string
			for id := range want {
				if got[id] == 0 {
					missing = append(missing, id)
				}
			}
			sort.Strings(missing)
			if onMissing != nil {
				onMissing(missing)
			}
			t.Fatalf("after %s the warehouse has %d of %d events; missing: %s", timeout, have, len(want), strings.Join(missing[:min(5, len(missing))], ", "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readTopic returns every record of every partition of topic.
func readTopic(t *testing.T, brokers, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers), Transport: &kafka.Transport{}} // the shared transport's metadata may predate the topic
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil {
		t.Fatalf("metadata of %s: %v %+v", topic, err, md)
	}
	var out []kafka.Message
	for _, p := range md.Topics[0].Partitions {
		offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(p.ID)}}})
		if err != nil {
			t.Fatal(err)
		}
		last := offs.Topics[topic][0].LastOffset
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{brokers}, Topic: topic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("read %s/%d: %v", topic, p.ID, err)
			}
			out = append(out, m)
			if m.Offset >= last-1 {
				break
			}
		}
		_ = r.Close()
	}
	return out
}

// spanSink is a minimal OTLP/HTTP trace receiver: it records which
// services exported spans under which trace ids.
type spanSink struct {
	URL string
	mu  sync.Mutex
	// byTrace[traceID][service] lists span names.
	byTrace map[string]map[string][]string
	// full[traceID] lists the spans with their ids, parents and links.
	full map[string][]spanRec
}

// spanRec is one exported span.
type spanRec struct {
	Service, Name, ID, Parent string
	// Links are the span ids this span links to.
	Links []string
	Attrs map[string]string
}

func newSpanSink(t *testing.T) *spanSink {
	t.Helper()
	s := &spanSink{byTrace: map[string]map[string][]string{}, full: map[string][]spanRec{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = gz
		}
		b, _ := io.ReadAll(body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		s.mu.Lock()
		for _, rs := range req.ResourceSpans {
			svc := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					svc = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					id := hex.EncodeToString(sp.TraceId)
					if s.byTrace[id] == nil {
						s.byTrace[id] = map[string][]string{}
					}
					s.byTrace[id][svc] = append(s.byTrace[id][svc], sp.Name)
					rec := spanRec{Service: svc, Name: sp.Name, ID: hex.EncodeToString(sp.SpanId), Parent: hex.EncodeToString(sp.ParentSpanId), Attrs: map[string]string{}}
					for _, l := range sp.Links {
						rec.Links = append(rec.Links, hex.EncodeToString(l.SpanId))
					}
					for _, a := range sp.Attributes {
						v := a.GetValue()
						switch {
						case v.GetStringValue() != "":
							rec.Attrs[a.Key] = v.GetStringValue()
						default:
							rec.Attrs[a.Key] = fmt.Sprint(v.GetIntValue())
						}
					}
					s.full[id] = append(s.full[id], rec)
				}
			}
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(nil)
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	s.URL = "http://" + lis.Addr().String()
	return s
}

// spans returns the spans of one trace.
func (s *spanSink) spans(traceID string) []spanRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]spanRec(nil), s.full[traceID]...)
}

func (s *spanSink) services(traceID string) map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	for k, v := range s.byTrace[traceID] {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// locate reports which of the pipeline's topics hold each event id.
func locate(t *testing.T, p *stack.Pipeline, ids []string) {
	t.Helper()
	for _, topic := range []string{"feedback.raw.v1", "feedback.normalized.v1", "feedback.enriched.v1", "feedback.quarantine.v1"} {
		for _, m := range readTopic(t, p.Brokers, p.TopicPrefix()+topic) {
			for _, id := range ids {
				if strings.Contains(string(m.Key), id) || strings.Contains(string(m.Value), id) {
					t.Logf("event %s is on %s partition %d offset %d", id, topic, m.Partition, m.Offset)
				}
			}
		}
	}
}

// serviceConn dials a service's gRPC port with the service token, as the
// admin does; it is closed when the test ends.
func serviceConn(t *testing.T, p *stack.Pipeline, service string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(p.GRPCAddrs[service], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(grpcserver.ServiceCredentials{Token: p.ServiceToken(), Service: "e2e"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
