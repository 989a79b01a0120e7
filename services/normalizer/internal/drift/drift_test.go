package drift

import (
	"context"
	"strings"
	"testing"

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
	a := New(rdb, "test:drift:")
	if _, err := a.Observe(ctx, "delighted", "survey_response.created", "e1", []byte(`{"event_data":{"score":9}}`)); err != nil {
		t.Fatal(err)
	}
	// Another replica sees the same shape: nothing new.
	b := New(rdb, "test:drift:")
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
