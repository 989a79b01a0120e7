package grpcserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/status"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

func TestEveryServiceAnswersHealthReflectionAndGetStatus(t *testing.T) {
	reg := status.NewRegistry("svc", "v1", "host-1")
	reg.AddCheck("kafka", func(context.Context) error { return nil })
	reg.AddCheck("redis", func(context.Context) error { return errors.New("connection refused") })
	cs := &status.ConsumerStats{Group: "g", Topic: "t"}
	cs.Processed.Add(7)
	reg.AddConsumer(cs)
	ctx, conn := serve(t, reg)
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", hc, err)
	}
	st, err := adminv1.NewServiceAdminServiceClient(conn).GetStatus(ctx, &adminv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Service != "svc" || st.Ready || len(st.Components) != 2 || st.Components[1].Name != "redis" || st.Components[1].Healthy ||
		len(st.Consumers) != 1 || st.Consumers[0].Processed != 7 {
		t.Fatalf("status = %v", st)
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		names[s.Name] = true
	}
	if !names["closedloop.admin.v1.ServiceAdminService"] || !names["grpc.health.v1.Health"] {
		t.Fatalf("reflection lists %v", names)
	}
}

func TestReadyzIs503WithTheFailingCheckAndHealthzStays200(t *testing.T) {
	reg := status.NewRegistry("svc", "v1", "h")
	reg.AddCheck("postgres", func(context.Context) error { return errors.New("no route") })
	mux := http.NewServeMux()
	reg.Mount(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]int{"/readyz": 503, "/healthz": 200} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s = %d %s", path, resp.StatusCode, b)
		}
	}
}

func TestAPanickingHandlerBecomesInternalNotACrash(t *testing.T) {
	h := recoverUnary(slog.New(slog.NewTextHandler(io.Discard, nil)))
	_, err := h(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/Y"}, func(context.Context, any) (any, error) { panic("boom") })
	if err == nil {
		t.Fatal("panic not turned into an error")
	}
}

// Recovery is innermost: the caller's interceptors (auth, audit) see a
// panic as an Internal error, and typed errors reach the client as their
// codes — for streams as for unary calls.
func TestRecoveryIsInnermostAndTypedErrorsMapToCodes(t *testing.T) {
	var seen []codes.Code
	record := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		err := h(srv, ss)
		seen = append(seen, grpcstatus.Code(err))
		return err
	})
	unknown := grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		if method == "/x.Y/Panic" {
			panic("boom")
		}
		return fault.Errorf(fault.NotFound, "no job %q", "rj_1")
	})
	ctx, conn := serve(t, status.NewRegistry("svc", "v1", "h"), record, unknown)
	var out adminv1.GetStatusResponse
	if err := conn.Invoke(ctx, "/x.Y/Panic", &adminv1.GetStatusRequest{}, &out); grpcstatus.Code(err) != codes.Internal {
		t.Fatalf("panicking handler: %v", err)
	}
	if err := conn.Invoke(ctx, "/x.Y/Find", &adminv1.GetStatusRequest{}, &out); grpcstatus.Code(err) != codes.NotFound {
		t.Fatalf("typed error: %v", err)
	}
	if len(seen) != 2 || seen[0] != codes.Internal || seen[1] != codes.NotFound {
		t.Fatalf("the interceptor between saw %v, want [Internal NotFound]: recovery is not inside it", seen)
	}
}

// serve runs a server until the test ends and connects to it.
func serve(t *testing.T, reg *status.Registry, opts ...grpc.ServerOption) (context.Context, *grpc.ClientConn) {
	t.Helper()
	s, err := New("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)), reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ctx, conn
}
