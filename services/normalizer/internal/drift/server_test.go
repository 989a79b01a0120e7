package drift

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/localinfra"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func driftClient(t *testing.T, tr *Tracker) adminv1.SchemaDriftServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	adminv1.RegisterSchemaDriftServiceServer(s, &Server{Tracker: tr})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return adminv1.NewSchemaDriftServiceClient(conn)
}

func TestTheAdminAPIListsDriftByProviderAndTypeAndPagesThroughIt(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: localinfra.RedisForTest(t)})
	ctx := context.Background()
	tr := New(rdb, "api:drift:", Limits{})
	observe := func(provider, typ, id, body string) {
		t.Helper()
		if _, err := tr.Observe(ctx, provider, typ, id, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	// The first event of each type is its baseline, not drift.
	observe("delighted", "survey_response.created", "b1", `{"event_data":{"id":1}}`)
	observe("typeform", "form_response", "tb", `{"form_response":{"token":"x"}}`)
	observe("delighted", "unsubscribe.created", "ub", `{"event_data":{"email":"a@b"}}`)
	observe("delighted", "survey_response.created", "d1", `{"event_data":{"score":9}}`)
	observe("typeform", "form_response", "t1", `{"form_response":{"answers":[{"field":{"id":"q"}}]}}`)
	observe("delighted", "unsubscribe.created", "u1", `{"event_data":{"person":{"id":"1"}}}`)
	// FirstSeen has second resolution: a "since" a few seconds back keeps
	// every path here even when the observations above straddle a second
	// under a slow (-race, loaded) run.
	before := time.Now().Add(-5 * time.Second)
	observe("delighted", "survey_response.created", "d2", `{"event_data":{"score":9,"channel":"sms"}}`)

	c := driftClient(t, tr)
	all, err := c.ListSchemaDrift(ctx, &adminv1.ListSchemaDriftRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range all.Paths {
		got = append(got, p.Provider+" "+p.EventType+" "+p.Path+" "+p.FirstEventId)
	}
	want := []string{
		"delighted survey_response.created event_data.channel d2",
		"delighted survey_response.created event_data.score d1",
		"delighted unsubscribe.created event_data.person u1",
		"delighted unsubscribe.created event_data.person.id u1",
		"typeform form_response form_response.answers t1",
		"typeform form_response form_response.answers[].field t1",
		"typeform form_response form_response.answers[].field.id t1",
	}
	if len(got) != len(want) || all.NextPageToken != "" {
		t.Fatalf("listing:\n%q\nwant\n%q (next %q)", got, want, all.NextPageToken)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("entry %d = %q, want %q", i, got[i], want[i])
		}
	}

	one, err := c.ListSchemaDrift(ctx, &adminv1.ListSchemaDriftRequest{Provider: "delighted", EventType: "unsubscribe.created"})
	if err != nil || len(one.Paths) != 2 {
		t.Fatalf("one type: %v %v", one, err)
	}
	prov, err := c.ListSchemaDrift(ctx, &adminv1.ListSchemaDriftRequest{Provider: "delighted"})
	if err != nil || len(prov.Paths) != 4 {
		t.Fatalf("one provider: %v %v", prov, err)
	}
	// The baseline is kept and listed by the tracker, marked.
	seen, err := tr.List(ctx, "delighted", "survey_response.created")
	if err != nil || len(seen) != 4 || !seen[0].Baseline || seen[0].Path != "event_data" || !seen[2].Baseline || seen[1].Baseline || seen[3].Baseline {
		t.Fatalf("tracker list: %+v %v", seen, err)
	}
	// "since" a moment ago keeps every path here; one in the future keeps none.
	recent, err := c.ListSchemaDrift(ctx, &adminv1.ListSchemaDriftRequest{Since: timestamppb.New(before)})
	if err != nil || len(recent.Paths) != len(want) {
		t.Fatalf("since: %v %v", recent, err)
	}
	none, err := c.ListSchemaDrift(ctx, &adminv1.ListSchemaDriftRequest{Since: timestamppb.New(time.Now().Add(time.Hour))})
	if err != nil || len(none.Paths) != 0 {
		t.Fatalf("since the future: %v %v", none, err)
	}

	var paged []string
	token := ""
	for pages := 0; ; pages++ {
		r, err := c.ListSchemaDrift(ctx, &adminv1.ListSchemaDriftRequest{PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Paths) > 3 || pages > 10 {
			t.Fatalf("page of %d after %d pages", len(r.Paths), pages)
		}
		for _, p := range r.Paths {
			paged = append(paged, p.Provider+" "+p.EventType+" "+p.Path+" "+p.FirstEventId)
		}
		if token = r.NextPageToken; token == "" {
			break
		}
	}
	if len(paged) != len(want) {
		t.Fatalf("paged listing has %d entries, want %d: %q", len(paged), len(want), paged)
	}
	for i := range want {
		if paged[i] != want[i] {
			t.Fatalf("paged entry %d = %q, want %q", i, paged[i], want[i])
		}
	}

	for _, bad := range []*adminv1.ListSchemaDriftRequest{{EventType: "x"}, {PageToken: "%%%"}, {PageSize: -1}} {
		if _, err := c.ListSchemaDrift(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%v: %v, want InvalidArgument", bad, err)
		}
	}
}
