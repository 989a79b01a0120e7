package grpcserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/closedloop/closedloop/libs/audit"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/status"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

const serviceToken = "svc-token-0123456789abcdef0123456789abcdef"

type trail struct {
	mu      sync.Mutex
	entries []audit.Entry
	fail    error
}

func (a *trail) Produce(_ context.Context, recs ...kafkaio.Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	for _, r := range recs {
		var e audit.Entry
		_ = json.Unmarshal(r.Value, &e)
		a.entries = append(a.entries, e)
	}
	return nil
}

type valve struct {
	mu     sync.Mutex
	paused bool
}

func (v *valve) Name() string { return "normalizer" }
func (v *valve) Status() *adminv1.DestinationStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	return &adminv1.DestinationStatus{Name: "normalizer", Paused: v.paused}
}
func (v *valve) Pause(string) { v.mu.Lock(); v.paused = true; v.mu.Unlock() }
func (v *valve) Resume()      { v.mu.Lock(); v.paused = false; v.mu.Unlock() }

// Finding 2 of the hardening review: PauseDestination on the normalizer's
// port answered OK with no token and left no audit record.
func TestAServicePortNeedsTheServiceTokenAndAuditsEveryMutationFirst(t *testing.T) {
	reg := status.NewRegistry("normalizer", "v1", "n-1")
	v := &valve{}
	reg.AddDestination(v)
	tr := &trail{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := &Guard{Tokens: []string{"old-token-0123456789abcdef0123456789ab", serviceToken}, Service: "normalizer", Instance: "n-1",
		Audit: &audit.Writer{Producer: tr, Topic: "audit", Log: log}}
	s, err := New("127.0.0.1:0", log, reg, g.ServerOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, time.Second) }()
	defer func() { cancel(); <-done }()

	dial := func(opts ...grpc.DialOption) adminv1.ServiceAdminServiceClient {
		conn, err := grpc.NewClient(s.Addr(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return adminv1.NewServiceAdminServiceClient(conn)
	}
	anon := dial()
	wrong := dial(grpc.WithPerRPCCredentials(ServiceCredentials{Token: "not-the-token-0123456789abcdef0123456789", Service: "x"}))
	admin := dial(grpc.WithPerRPCCredentials(ServiceCredentials{Token: serviceToken, Service: "admin"}))
	pause := &adminv1.PauseDestinationRequest{Destination: "normalizer", Reason: "maintenance"}

	for name, c := range map[string]adminv1.ServiceAdminServiceClient{"no token": anon, "a wrong token": wrong} {
		if _, err := c.PauseDestination(ctx, pause); grpcstatus.Code(err) != codes.Unauthenticated {
			t.Fatalf("PauseDestination with %s: %v, want Unauthenticated", name, err)
		}
		if _, err := c.GetStatus(ctx, &adminv1.GetStatusRequest{}); grpcstatus.Code(err) != codes.Unauthenticated {
			t.Fatalf("GetStatus with %s: %v, want Unauthenticated", name, err)
		}
	}
	if v.Status().Paused {
		t.Fatal("paused without a token")
	}
	conn, _ := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health needs no token: %v", err)
	}

	if _, err := admin.PauseDestination(ActingFor(ctx, "ann", "operator"), pause); err != nil {
		t.Fatal(err)
	}
	if !v.Status().Paused {
		t.Fatal("not paused")
	}
	tr.mu.Lock()
	got := append([]audit.Entry(nil), tr.entries...)
	tr.mu.Unlock()
	// The two refused pauses, then the one that ran: before and after.
	if len(got) != 4 {
		t.Fatalf("%d audit entries, want 4: %+v", len(got), got)
	}
	req, fin := got[2], got[3]
	if req.Phase != audit.Requested || req.Who != "ann" || req.Role != "operator" || req.Via != "admin" || req.Service != "normalizer" ||
		fin.Phase != audit.Completed || fin.Result != "OK" || string(fin.Request) != `{"destination":"normalizer","reason":"maintenance"}` {
		t.Fatalf("audit entries %+v / %+v", req, fin)
	}
	if got[0].Result != "Unauthenticated" {
		t.Fatalf("a refused pause was recorded as %+v", got[0])
	}

	// An audit trail that cannot be written refuses the mutation.
	tr.mu.Lock()
	tr.fail = errors.New("broker down")
	tr.mu.Unlock()
	if _, err := admin.ResumeDestination(ctx, &adminv1.ResumeDestinationRequest{Destination: "normalizer"}); grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("resume with the audit trail down: %v, want Unavailable", err)
	}
	if !v.Status().Paused {
		t.Fatal("resumed although the audit record was not written")
	}
	if _, err := admin.GetStatus(ctx, &adminv1.GetStatusRequest{}); err != nil {
		t.Fatalf("reads need no audit record: %v", err)
	}
}

// Every method of the admin contracts is declared a mutation or a read.
func TestEveryAdminMethodIsClassifiedOnce(t *testing.T) {
	seen := map[string]bool{}
	protoregistry.GlobalFiles.RangeFilesByPackage("closedloop.admin.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				m := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(j).Name())
				seen[m] = true
				if _, ok := Methods[m]; !ok {
					t.Errorf("%s is not in grpcserver.Methods: declare it a mutation (true) or a read (false)", m)
				}
			}
		}
		return true
	})
	for m := range Methods {
		if !seen[m] {
			t.Errorf("grpcserver.Methods lists %s, which no service of closedloop.admin.v1 has", m)
		}
	}
	if len(seen) < 20 {
		t.Fatalf("found %d methods; the admin protos were not loaded", len(seen))
	}
	if !Mutating("/closedloop.admin.v1.AdminService/SomethingNew") {
		t.Fatal("an undeclared method of ours must count as a mutation")
	}
}
