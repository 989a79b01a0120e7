package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/vectors"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	"github.com/closedloop/closedloop/tools/internal/stack"
)

// TestEveryVectorMeansOnTheNormalizedTopicWhatItsCanonicalSays is the
// end-to-end meaning check of the conformance suite. The ingress's real
// handler takes every vector with the vector's own clock (its signatures
// carry timestamps of the day the vectors were made, which a running ingress
// would rightly refuse as stale) and the Kafka records it writes are
// produced, byte for byte and with their headers, to the raw topic of a
// running pipeline. Then, from the normalizer process and through Kafka:
// every vector with a canonical meaning is on the normalized topic exactly
// once and means it, every expected quarantine is on the quarantine topic
// with its reason, a redelivery is not a second event, and each normalized
// event is one warehouse row.
func TestEveryVectorMeansOnTheNormalizedTopicWhatItsCanonicalSays(t *testing.T) {
	requireInfra(t)
	t.Parallel()
	f, path, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	recs := ingressRecords(t)
	t.Logf("vectors: %s", path)
	byName := map[string]vectors.Vector{}
	for _, v := range f.Vectors {
		byName[v.Name] = v
	}

	p := newPipeline(t, "vectors")
	w := &kafka.Writer{Addr: kafka.TCP(strings.Split(p.Brokers, ",")...), Topic: p.TopicPrefix() + "feedback.raw.v1",
		Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond,
		Transport: &kafka.Transport{}} // its own metadata cache: the shared one may predate these topics
	defer w.Close()
	msgs := make([]kafka.Message, 0, len(recs))
	for _, r := range recs {
		m := kafka.Message{Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			m.Headers = append(m.Headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
		msgs = append(msgs, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	// What each event id should become: a meaning, a quarantine reason, or
	// (no expectation) either an event or a quarantine.
	type want struct {
		vector     vectors.Vector
		quarantine string
	}
	wants := map[string]want{}
	for _, r := range recs {
		v, ok := byName[r.Vector]
		if !ok {
			t.Fatalf("record of unknown vector %q", r.Vector)
		}
		if _, seen := wants[string(r.Key)]; seen {
			continue // a redelivery: the same event id must not become a second event
		}
		wants[string(r.Key)] = want{vector: v, quarantine: v.Expect.Quarantine}
	}

	normalized := map[string][]*feedbackv1.FeedbackEvent{}
	quarantined := map[string][]string{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		normalized, quarantined = map[string][]*feedbackv1.FeedbackEvent{}, map[string][]string{}
		for _, m := range readTopicIfAny(t, p.Brokers, p.TopicPrefix()+"feedback.normalized.v1") {
			var ev feedbackv1.FeedbackEvent
			if err := proto.Unmarshal(m.Value, &ev); err != nil {
				t.Fatalf("normalized record at offset %d is not a FeedbackEvent: %v", m.Offset, err)
			}
			normalized[ev.EventId] = append(normalized[ev.EventId], &ev)
		}
		for _, m := range readTopicIfAny(t, p.Brokers, p.TopicPrefix()+"feedback.quarantine.v1") {
			quarantined[string(m.Key)] = append(quarantined[string(m.Key)], header(m, kafkaio.HeaderQuarantineReason))
		}
		done := 0
		for id := range wants {
			if len(normalized[id])+len(quarantined[id]) > 0 {
				done++
			}
		}
		if done == len(wants) {
			break
		}
		if time.Now().After(deadline) {
			for id, w := range wants {
				if len(normalized[id])+len(quarantined[id]) == 0 {
					t.Errorf("%s (event %s): neither normalized nor quarantined after 60s", w.vector.Name, id)
				}
			}
			t.FailNow()
		}
		time.Sleep(300 * time.Millisecond)
	}

	checked := map[string]bool{}
	for id, w := range wants {
		name := w.vector.Name
		evs, qs := normalized[id], quarantined[id]
		switch {
		case w.quarantine != "":
			if len(evs) != 0 || len(qs) != 1 || qs[0] != w.quarantine {
				t.Errorf("%s: %d events and quarantine reasons %q, want only quarantine %q", name, len(evs), qs, w.quarantine)
			}
		case w.vector.Expect.Canonical != nil:
			if len(evs) != 1 || len(qs) != 0 {
				t.Errorf("%s: %d events and quarantine reasons %q on the topics, want one event", name, len(evs), qs)
				continue
			}
			for _, problem := range vectors.Compare(evs[0], w.vector.Expect.Canonical) {
				t.Errorf("%s: %s", name, problem)
			}
			checked[id] = true
		default:
			if len(evs)+len(qs) != 1 {
				t.Errorf("%s: %d events and quarantine reasons %q, want exactly one of them", name, len(evs), qs)
			}
		}
	}
	t.Logf("%d records from the ingress handler, %d distinct events: %d canonical meanings checked on the normalized topic", len(recs), len(wants), len(checked))
	if len(checked) == 0 {
		t.Fatal("no vector with a canonical meaning was checked")
	}
	wantRows := map[string]bool{}
	for id := range normalized {
		wantRows[id] = true
	}
	for id, n := range waitRows(t, db(t), p.Schema(), wantRows, 60*time.Second) {
		if n != 1 {
			t.Errorf("event %s has %d warehouse rows, want 1", id, n)
		}
	}
}

// ingressRecords runs the ingress's conformance test in the ingress module
// and returns the Kafka records its handler wrote for the accepted vectors
// (it loads the same vectors: the same files, or this process's
// CLOSEDLOOP_VECTORS).
func ingressRecords(t *testing.T) []vectors.Record {
	t.Helper()
	root, err := stack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "records.jsonl")
	cmd := exec.Command("go", "test", "-count=1", "-run", "^TestConformanceEveryVectorThroughTheHTTPHandler$", "./internal/ingest")
	cmd.Dir = filepath.Join(root, "services", "ingress")
	cmd.Env = append(os.Environ(), vectors.RecordsEnv+"="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ingress conformance: %v\n%s", err, b)
	}
	recs, err := vectors.ReadRecords(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Fatal("the ingress accepted no vector")
	}
	return recs
}

// readTopicIfAny is readTopic for a topic that may not exist yet.
func readTopicIfAny(t *testing.T, brokers, topic string) []kafka.Message {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(brokers), Transport: &kafka.Transport{}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil
	}
	return readTopic(t, brokers, topic)
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
