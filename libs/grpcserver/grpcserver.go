// Package grpcserver builds the gRPC server every closedloop service runs:
// OpenTelemetry stats handler; logging of unary and streaming calls with the
// trace id (health checks are not logged); the one mapping of typed errors
// (package fault) to gRPC codes; the caller's interceptors (authentication,
// audit); and innermost the recovery, so a panic anywhere in a handler is an
// Internal error that is logged, mapped and audited like any other. gRPC
// health (grpc.health.v1), reflection and the per-service admin API.
package grpcserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/closedloop/closedloop/libs/fault"
	clstatus "github.com/closedloop/closedloop/libs/status"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

// Server is a gRPC server with health and reflection registered.
type Server struct {
	GRPC   *grpc.Server
	Health *health.Server
	log    *slog.Logger
	lis    net.Listener
}

// New listens on addr (":9090", "127.0.0.1:0") and builds the server. The
// admin service is served from reg. Register further services on s.GRPC
// before calling Serve.
func New(addr string, log *slog.Logger, reg *clstatus.Registry, opts ...grpc.ServerOption) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gRPC listen on %s: %w", addr, err)
	}
	all := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.ChainUnaryInterceptor(logUnary(log), faultUnary),
		grpc.ChainStreamInterceptor(logStream(log), faultStream),
	}
	all = append(all, opts...) // chained interceptors keep their order: these run inside the above
	all = append(all, grpc.ChainUnaryInterceptor(recoverUnary(log)), grpc.ChainStreamInterceptor(recoverStream(log)))
	s := &Server{GRPC: grpc.NewServer(all...), Health: health.NewServer(), log: log, lis: lis}
	healthpb.RegisterHealthServer(s.GRPC, s.Health)
	reflection.Register(s.GRPC)
	adminv1.RegisterServiceAdminServiceServer(s.GRPC, &clstatus.AdminServer{Registry: reg})
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Serve serves until ctx is done, then stops gracefully (in-flight RPCs
// finish) and, after grace, forcibly.
func (s *Server) Serve(ctx context.Context, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.GRPC.Serve(s.lis) }()
	s.log.Info("gRPC listening", "addr", s.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.GRPC.Stop()
	}
	return nil
}

func isHealth(method string) bool { return strings.HasPrefix(method, "/grpc.health.v1.") }

func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		if !isHealth(info.FullMethod) {
			log.InfoContext(ctx, "grpc call", "method", info.FullMethod, "code", status.Code(err).String(), "took_ms", time.Since(start).Milliseconds())
		}
		return resp, err
	}
}

func logStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		start := time.Now()
		err := h(srv, ss)
		if !isHealth(info.FullMethod) {
			log.InfoContext(ss.Context(), "grpc stream", "method", info.FullMethod, "code", status.Code(err).String(), "took_ms", time.Since(start).Milliseconds())
		}
		return err
	}
}

// faultUnary and faultStream are where handlers' typed errors become gRPC
// codes (fault.GRPC); an untyped error is Internal.
func faultUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, fault.GRPC(err)
}

func faultStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return fault.GRPC(h(srv, ss))
}

func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				log.ErrorContext(ctx, "grpc handler panicked", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return h(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				log.ErrorContext(ss.Context(), "grpc stream panicked", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return h(srv, ss)
	}
}
