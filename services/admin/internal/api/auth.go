package api

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/closedloop/closedloop/libs/audit"
	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/grpcserver"
)

// Caller is who is calling, from the bearer token.
type Caller struct {
	Name, Role string
}

type callerKey struct{}

// CallerOf returns the authenticated caller of ctx.
func CallerOf(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// Auth checks bearer tokens and roles and writes the audit trail.
type Auth struct {
	Admin func() *config.Admin
	Audit *audit.Writer
	// Service and Instance name this side in the audit trail.
	Service, Instance string
}

func (a *Auth) authenticate(ctx context.Context, method string) (context.Context, error) {
	if grpcserver.Open(method) {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	token := grpcserver.BearerToken(md)
	if token == "" {
		return nil, fault.Errorf(fault.Unauthenticated, "no bearer token: send \"authorization: Bearer <token>\" (closedloopctl: CLOSEDLOOP_ADMIN_TOKEN)")
	}
	t, ok := a.Admin().Caller(token)
	if !ok {
		return nil, fault.Errorf(fault.Unauthenticated, "the bearer token is not one of admin.tokens")
	}
	caller := Caller{Name: t.Name, Role: t.Role}
	ctx = context.WithValue(ctx, callerKey{}, caller)
	// Calls the admin makes to the services on this caller's behalf carry
	// its name into their audit trail.
	ctx = grpcserver.ActingFor(ctx, t.Name, t.Role)
	if grpcserver.Mutating(method) && t.Role != config.RoleOperator {
		return ctx, fault.Errorf(fault.Denied, "%s needs the operator role; %s is a %s", method, t.Name, t.Role)
	}
	return ctx, nil
}

// Unary is the unary server interceptor. A mutation is audited before it
// runs — if the record cannot be written the call is refused and nothing
// changes — and again with its result.
func (a *Auth) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	actx, err := a.authenticate(ctx, info.FullMethod)
	if actx == nil {
		actx = ctx
	}
	who := CallerOf(actx)
	if who.Name == "" {
		who.Name = "?"
	}
	return grpcserver.Audited(actx, a.Audit, audit.Entry{Who: who.Name, Role: who.Role, Service: a.Service, Instance: a.Instance},
		req, info, handler, err)
}

// Stream is the stream server interceptor.
func (a *Auth) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	actx, err := a.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &authedStream{ServerStream: ss, ctx: actx})
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }
