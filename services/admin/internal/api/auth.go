package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
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

// mutating lists the methods that need the operator role; each is audited.
var mutating = map[string]bool{
	"/closedloop.admin.v1.AdminService/IssueIngestToken":         true,
	"/closedloop.admin.v1.AdminService/RevokeIngestToken":        true,
	"/closedloop.admin.v1.AdminService/ReplayDeadLetters":        true,
	"/closedloop.admin.v1.AdminService/DiscardDeadLetters":       true,
	"/closedloop.admin.v1.AdminService/PauseSink":                true,
	"/closedloop.admin.v1.AdminService/StartReplay":              true,
	"/closedloop.admin.v1.AdminService/SendTestEvent":            true,
	"/closedloop.admin.v1.AdminService/CancelReplay":             true,
	"/closedloop.admin.v1.AdminService/ResumeSink":               true,
	"/closedloop.admin.v1.ServiceAdminService/PauseDestination":  true,
	"/closedloop.admin.v1.ServiceAdminService/ResumeDestination": true,
}

// open are served without a token: health checks and reflection.
func open(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.")
}

// Auth checks bearer tokens and roles and writes the audit trail.
type Auth struct {
	Admin      func() *config.Admin
	AuditTopic string
	Producer   interface {
		Produce(ctx context.Context, recs ...kafkaio.Record) error
	}
	Log *slog.Logger
}

func (a *Auth) authenticate(ctx context.Context, method string) (context.Context, error) {
	if open(method) {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			token = strings.TrimSpace(t)
		}
	}
	if token == "" {
		return nil, status.Error(codes.Unauthenticated, "no bearer token: send \"authorization: Bearer <token>\" (closedloopctl: CLOSEDLOOP_ADMIN_TOKEN)")
	}
	t, ok := a.Admin().Caller(token)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "the bearer token is not one of admin.tokens")
	}
	caller := Caller{Name: t.Name, Role: t.Role}
	ctx = context.WithValue(ctx, callerKey{}, caller)
	if mutating[method] && t.Role != config.RoleOperator {
		return ctx, status.Errorf(codes.PermissionDenied, "%s needs the operator role; %s is a %s", method, t.Name, t.Role)
	}
	return ctx, nil
}

// Unary is the unary server interceptor.
func (a *Auth) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	actx, err := a.authenticate(ctx, info.FullMethod)
	if err != nil {
		if mutating[info.FullMethod] {
			if actx == nil {
				actx = ctx
			}
			who := CallerOf(actx)
			if who.Name == "" {
				who.Name = "?"
			}
			a.audit(actx, who, info.FullMethod, req, err)
		}
		return nil, err
	}
	resp, err := handler(actx, req)
	if mutating[info.FullMethod] {
		a.audit(actx, CallerOf(actx), info.FullMethod, req, err)
	}
	return resp, err
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

// AuditEntry is one record on the audit topic.
type AuditEntry struct {
	At      time.Time       `json:"at"`
	Who     string          `json:"who"`
	Role    string          `json:"role,omitempty"`
	Method  string          `json:"method"`
	Request json.RawMessage `json:"request,omitempty"`
	Result  string          `json:"result"`
	Error   string          `json:"error,omitempty"`
}

// audit writes who did what and how it ended to the audit topic and the
// log. Requests carry no secrets (tokens are only ever in responses, which
// are not recorded).
func (a *Auth) audit(ctx context.Context, c Caller, method string, req any, err error) {
	e := AuditEntry{At: time.Now().UTC(), Who: c.Name, Role: c.Role, Method: method, Result: status.Code(err).String()}
	if m, ok := req.(proto.Message); ok {
		e.Request, _ = protojson.Marshal(m)
	}
	if err != nil {
		e.Error = status.Convert(err).Message()
	}
	b, _ := json.Marshal(e)
	a.Log.InfoContext(ctx, "audit", "who", e.Who, "role", e.Role, "method", method, "request", string(e.Request), "result", e.Result, "error", e.Error)
	rec := kafkaio.Record{Topic: a.AuditTopic, Key: []byte(e.Who), Value: b}
	if perr := a.Producer.Produce(context.WithoutCancel(ctx), rec); perr != nil {
		a.Log.ErrorContext(ctx, "audit record not written", "method", method, "error", perr.Error())
	}
}
