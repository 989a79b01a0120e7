package drift

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/localinfra"
)

func TestPathsFoldArraysAndKeepNesting(t *testing.T) {
	got := strings.Join(Paths([]byte(`{"a":{"b":1},"l":[{"x":1},{"x":2,"y":null}],"n":null}`)), " ")
	if got != "a a.b l l[].x l[].y n" {
		t.Fatalf("paths = %s", got)
	}
	if Paths([]byte(`{"cut`)) != nil {
		t.Fatal("paths of malformed JSON")
	}
}

func TestANewFieldIsRecordedOnceWithTheFirstEventThatCarriedIt(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	ctx := context.Background()
	a := New(rdb, "test:drift:", Limits{})
	if _, err := a.Observe(ctx, "delighted", "survey_response.created", "e1", []byte(`{"event_data":{"score":9}}`)); err != nil {
		t.Fatal(err)
	}
	// Another replica sees the same shape: nothing new.
	b := New(rdb, "test:drift:", Limits{})
	if d, _ := b.Observe(ctx, "delighted", "survey_response.created", "e2", []byte(`{"event_data":{"score":3}}`)); len(d) != 0 {
		t.Fatalf("drift %v for a known shape", d)
	}
	d, err := b.Observe(ctx, "delighted", "survey_response.created", "e3", []byte(`{"event_data":{"score":3,"channel":"sms"}}`))
	if err != nil || strings.Join(d, ",") != "event_data.channel" {
		t.Fatalf("drift = %v, %v", d, err)
	}
	list, err := a.List(ctx, "delighted", "survey_response.created")
	if err != nil {
		t.Fatal(err)
	}
	var channel Seen
	for _, s := range list {
		if s.Path == "event_data.channel" {
			channel = s
		}
	}
	if len(list) != 3 || channel.FirstEventID != "e3" || channel.FirstSeen.IsZero() {
		t.Fatalf("list = %+v", list)
	}
}

// referencePaths is the obvious implementation the scanner must match.
func referencePaths(body []byte) []string {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return nil
	}
	set := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				set[p] = true
				walk(p, c)
			}
		case []any:
			for _, c := range x {
				walk(prefix+"[]", c)
			}
		}
	}
	walk("", v)
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func FuzzPathsMatchTheReference(f *testing.F) {
	for _, s := range []string{
		`{"a":{"b":1},"l":[{"x":1},{"x":2,"y":null}],"n":null}`,
		`[{"a":[[{"b":"x\"y"}]]}]`, `{"k\u00e9y":{"a b":true},"e":{},"f":[]}`, `"str"`, `12`, `{ "a" : [ 1 , { "b" : 2 } ] }`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		want := referencePaths(body)
		if want == nil {
			return // invalid JSON: the scanner may stop anywhere, it only must not panic
		}
		// Every path the reference sees is found. (The scanner may see more:
		// with duplicate keys the reference keeps only the last member.)
		got := Paths(body)
		for _, p := range want {
			if !slices.Contains(got, p) {
				t.Fatalf("Paths(%q) = %q, misses %q of %q", body, got, p, want)
			}
		}
	})
}

func BenchmarkObserveKnownShape(b *testing.B) {
	benchmarkObserve(b, "Schnell und zuverlässig")
}

// The pipeline benchmarks' bodies: a comment of ~750 bytes, most of the body.
func BenchmarkObserveLongComment(b *testing.B) {
	benchmarkObserve(b, strings.Repeat("Sehr zufrieden mit dem Support, schnelle Antworten. ", 15))
}

func benchmarkObserve(b *testing.B, comment string) {
	t := New(nil, "bench:", Limits{})
	body := []byte(`{"event_type":"survey_response.updated","event_id":"e","event_data":{"id":"5435","person":{"id":"5975","email":"a@example.de","name":"Anna","created_at":1763693600},"survey_type":"nps","score":9,"comment":"` + comment + `","permalink":"https://x","created_at":1763780000,"updated_at":1763780095,"person_properties":{"plan":"enterprise","account":{"id":"acct_42","region":"eu-central"},"seats":120},"notes":[],"tags":[],"additional_answers":[{"id":"4","value":{"free_response":null,"scale":null,"select_one":{"id":"opt_1","text":"Price"},"select_many":null},"question":{"id":"enum_z9EvYV","type":"select_one","text":"What matters most?"}}]}}`)
	t.seen["delighted/x"] = map[string]bool{}
	for _, p := range Paths(body) {
		t.seen["delighted/x"][p] = true
	}
	b.ReportAllocs()
	for b.Loop() {
		if fresh, _ := t.Observe(context.Background(), "delighted", "x", "e", body); fresh != nil {
			b.Fatal(fresh)
		}
	}
}

// Finding 6 of the hardening review: three 325 kB bodies with 25,000 new
// fields each took 4 s of CPU and left 125,026 Redis fields without expiry;
// 300 invented event types made 302 metric series.
func TestDriftTrackingIsBoundedWhateverTheBodiesInvent(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	ctx := context.Background()
	prefix := "bounded:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	tr := New(rdb, prefix, Limits{PathsPerType: 500, TypesPerProvider: 5, TTL: time.Hour})
	for b := range 3 {
		var body strings.Builder
		body.WriteString(`{"event_data":{`)
		for i := range 25_000 {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `"f%d_%d":1`, b, i)
		}
		body.WriteString(`}}`)
		d, err := tr.Observe(ctx, "delighted", "survey_response.created", "e"+strconv.Itoa(b), []byte(body.String()))
		if err != nil {
			t.Fatal(err)
		}
		if b > 0 && len(d) != 0 {
			t.Fatalf("body %d recorded %d more paths past the type's limit", b, len(d))
		}
	}
	key := prefix + "delighted/survey_response.created"
	if n := rdb.HLen(ctx, key).Val(); n != 500+1 {
		t.Fatalf("%d fields kept for one event type, want the limit of 500 paths and the baseline's event", n)
	}
	if ttl := rdb.TTL(ctx, key).Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("TTL %s, want at most 1h", ttl)
	}
	// Invented event types beyond the limit share one record.
	for i := range 300 {
		if _, err := tr.Observe(ctx, "delighted", "invented."+strconv.Itoa(i), "x", []byte(`{"a":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	keys := rdb.Keys(ctx, prefix+"*").Val()
	if len(keys) != 5+1 {
		t.Fatalf("%d event-type records for 301 event types, want the limit of 5 and %s: %v", len(keys), OtherType, keys)
	}
	if rdb.Exists(ctx, prefix+"delighted/"+OtherType).Val() != 1 {
		t.Fatalf("no %s record", OtherType)
	}
}
