package grpcserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/audit"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

// Methods is every method of closedloop's admin contracts, each declared
// once as a mutation or a read, keyed on the generated method names (a typo
// does not compile). Mutations need the operator role on the
// admin's port and are audited on every port; a test keeps this list equal
// to the services in proto/closedloop/admin/v1, so a new method must be
// classified here.
var Methods = map[string]bool{
	adminv1.AdminService_ListSources_FullMethodName:              false,
	adminv1.AdminService_GetSource_FullMethodName:                false,
	adminv1.AdminService_IssueIngestToken_FullMethodName:         true,
	adminv1.AdminService_RevokeIngestToken_FullMethodName:        true,
	adminv1.AdminService_ListDeadLetters_FullMethodName:          false,
	adminv1.AdminService_GetDeadLetter_FullMethodName:            false,
	adminv1.AdminService_ReplayDeadLetters_FullMethodName:        true,
	adminv1.AdminService_DiscardDeadLetters_FullMethodName:       true,
	adminv1.AdminService_PauseSink_FullMethodName:                true,
	adminv1.AdminService_ResumeSink_FullMethodName:               true,
	adminv1.AdminService_StartReplay_FullMethodName:              true,
	adminv1.AdminService_WatchReplay_FullMethodName:              false,
	adminv1.AdminService_CancelReplay_FullMethodName:             true,
	adminv1.AdminService_ListReplays_FullMethodName:              false,
	adminv1.AdminService_SendTestEvent_FullMethodName:            true,
	adminv1.AdminService_GetPipelineStatus_FullMethodName:        false,
	adminv1.AdminService_ListUnsubscribes_FullMethodName:         false,
	adminv1.SchemaDriftService_ListSchemaDrift_FullMethodName:    false,
	adminv1.BackfillService_StartBackfill_FullMethodName:         true,
	adminv1.BackfillService_ListBackfills_FullMethodName:         false,
	adminv1.BackfillService_WatchBackfill_FullMethodName:         false,
	adminv1.BackfillService_CancelBackfill_FullMethodName:        true,
	adminv1.ServiceAdminService_GetStatus_FullMethodName:         false,
	adminv1.ServiceAdminService_PauseDestination_FullMethodName:  true,
	adminv1.ServiceAdminService_ResumeDestination_FullMethodName: true,
}

// Mutating reports whether method changes anything. A method of ours that
// is not declared in Methods counts as a mutation (fail closed).
func Mutating(method string) bool {
	m, ok := Methods[method]
	return m || (!ok && strings.HasPrefix(method, "/closedloop."))
}

// Open reports whether method is served without credentials: gRPC health
// only. Reflection lists the API, so it needs a token like the rest.
func Open(method string) bool { return strings.HasPrefix(method, "/grpc.health.v1.") }

// Metadata keys of calls between services.
const (
	// OnBehalfOf names the person (admin token) a service call is made
	// for, as "name/role"; the serving side records it in the audit trail.
	OnBehalfOf = "x-closedloop-on-behalf-of"
	// CallerService names the calling service.
	CallerService = "x-closedloop-caller-service"
)

// Guard authenticates the calls on a service's gRPC port with the service
// token (CLOSEDLOOP_SERVICE_TOKEN, shared by the admin and the services;
// several accepted during a rotation) and audits every mutation before it
// runs: if the audit record cannot be written, the call is refused.
type Guard struct {
	// Tokens are the accepted service tokens.
	Tokens []string
	// Audit writes the trail; Service and Instance name this side.
	Audit             *audit.Writer
	Service, Instance string
}

// ServerOptions are the interceptors of the guard.
func (g *Guard) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(g.unary), grpc.ChainStreamInterceptor(g.stream)}
}

var errNoToken = status.Error(codes.Unauthenticated, "no service token: send \"authorization: Bearer <CLOSEDLOOP_SERVICE_TOKEN>\"")

func (g *Guard) check(ctx context.Context, method string) error {
	if Open(method) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	token := BearerToken(md)
	if token == "" {
		return errNoToken
	}
	if !MatchToken(token, g.Tokens) {
		return status.Error(codes.Unauthenticated, "the service token is not CLOSEDLOOP_SERVICE_TOKEN")
	}
	return nil
}

// BearerToken returns the bearer token of the call's metadata, or "".
func BearerToken(md metadata.MD) string {
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

// MatchToken compares token with every accepted one in constant time (the
// time taken tells neither which nor how much of one matched).
func MatchToken(token string, accepted []string) bool {
	h := sha256.Sum256([]byte(token))
	ok := 0
	for _, a := range accepted {
		ha := sha256.Sum256([]byte(a))
		ok |= subtle.ConstantTimeCompare(h[:], ha[:])
	}
	return ok == 1
}

func (g *Guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	return Audited(ctx, g.Audit, g.caller(ctx), req, info, h, g.check(ctx, info.FullMethod))
}

// Audited is the audit trail of a unary call whose caller is who (denied:
// the error that refused its credentials, if they were). A mutation is
// recorded before it runs — refused with UNAVAILABLE, and not run, if that
// record cannot be written — and again with its result after; a refused
// mutation is recorded with its refusal. Reads just run.
func Audited(ctx context.Context, w *audit.Writer, who audit.Entry, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler, denied error) (any, error) {
	mutating := Mutating(info.FullMethod)
	if !mutating {
		if denied != nil {
			return nil, denied
		}
		return h(ctx, req)
	}
	e := who
	e.Method = info.FullMethod
	if m, ok := req.(proto.Message); ok {
		e.Request, _ = protojson.Marshal(m)
	}
	if denied != nil {
		_ = w.Write(ctx, completed(e, denied))
		return nil, denied
	}
	e.Phase = audit.Requested
	if err := w.Write(ctx, e); err != nil {
		return nil, status.Error(codes.Unavailable, "refused: the audit record could not be written, so nothing was changed; retry when Kafka is back")
	}
	resp, err := h(ctx, req)
	_ = w.Write(ctx, completed(e, err))
	return resp, err
}

// completed is e as the record of a finished call.
func completed(e audit.Entry, err error) audit.Entry {
	e.Phase, e.Result = audit.Completed, status.Code(err).String()
	if err != nil {
		e.Error = status.Convert(err).Message()
	}
	return e
}

func (g *Guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := g.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	if Mutating(info.FullMethod) {
		return status.Error(codes.Unimplemented, "streaming mutations are not served on service ports")
	}
	return h(srv, ss)
}

// caller is who called, for the audit trail: the person the admin acted
// for, and the calling service (or the peer's address).
func (g *Guard) caller(ctx context.Context) audit.Entry {
	md, _ := metadata.FromIncomingContext(ctx)
	e := audit.Entry{Who: "?", Role: "service", Service: g.Service, Instance: g.Instance}
	if v := md.Get(OnBehalfOf); len(v) > 0 {
		who, role, _ := strings.Cut(v[0], "/")
		e.Who, e.Role = truncate(who, 64), truncate(role, 16)
	}
	if v := md.Get(CallerService); len(v) > 0 {
		e.Via = truncate(v[0], 64)
	}
	if p, ok := peer.FromContext(ctx); ok && e.Via == "" {
		e.Via = p.Addr.String()
	}
	return e
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ServiceCredentials are the per-call credentials of a service calling
// another: the service token, and the person it acts for (from ctx, set
// with ActingFor).
type ServiceCredentials struct {
	Token, Service string
}

type actingKey struct{}

// ActingFor returns ctx carrying the caller a service call is made for.
func ActingFor(ctx context.Context, who, role string) context.Context {
	return context.WithValue(ctx, actingKey{}, who+"/"+role)
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c ServiceCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if c.Token == "" {
		return nil, errors.New("no service token (CLOSEDLOOP_SERVICE_TOKEN)")
	}
	md := map[string]string{"authorization": "Bearer " + c.Token, CallerService: c.Service}
	if v, ok := ctx.Value(actingKey{}).(string); ok {
		md[OnBehalfOf] = v
	}
	return md, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: the
// service ports are in-cluster plaintext by default (see docs/security.md).
func (ServiceCredentials) RequireTransportSecurity() bool { return false }
