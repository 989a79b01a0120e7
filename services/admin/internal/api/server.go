// Package api implements closedloop.admin.v1.AdminService: sources and
// ingest tokens (the control topic the ingress replicas follow), dead
// letters (package dlq), and the pipeline's status from the brokers (lag,
// DLQ depth) and from every service instance's own admin API (freshness,
// throughput, breakers, drift).
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/grpcserver"
	"github.com/closedloop/closedloop/libs/ingesttokens"
	"github.com/closedloop/closedloop/libs/kafkaio"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	"github.com/closedloop/closedloop/services/admin/internal/backfill"
	"github.com/closedloop/closedloop/services/admin/internal/dlq"
	"github.com/closedloop/closedloop/services/admin/internal/offsets"
	"github.com/closedloop/closedloop/services/admin/internal/replay"
)

// Stage is one consumer group the status reports on.
type Stage struct {
	Name   string   // "normalizer", "sink-webhook/crm-bridge"
	Group  string   // its consumer group
	Topics []string // what it consumes
	Sink   string   // the sink service, for sinks ("" otherwise)
	// Service names the instances' service in Instances.
	Service string
	// MaxLag above which the stage is a problem.
	MaxLag int64
}

// Options configure the Server.
type Options struct {
	Pipeline func() *config.Pipeline
	Tokens   *ingesttokens.Store
	Producer *kafkaio.Producer
	DLQ      *dlq.Store
	Replays  *replay.Jobs
	// Backfills runs backfills and reconciliation (nil in some tests).
	Backfills *backfill.Jobs
	Offsets   *offsets.Reader
	Stages    []Stage
	Instances map[string][]string // service -> gRPC addresses of its instances
	// PublicURL is the ingress's public base URL (https://hooks.example.com).
	PublicURL string
	// IngressURL is where the admin itself reaches the ingress (test events).
	IngressURL string
	Topics     kafkaio.Topics
	Brokers    []string
	Log        *slog.Logger
	// DestinationStage, when set, gives the stage of a destination a sink
	// instance reports in GetStatus that no configured stage covers (the
	// destinations of kinds such as Slack): status learns them from the
	// instances instead of a hand-kept list.
	DestinationStage func(service, destination string) (Stage, bool)
	// ServiceCredentials authenticate the admin on the services' gRPC ports
	// and name the person it acts for.
	ServiceCredentials grpcserver.ServiceCredentials
}

// Server implements AdminService.
type Server struct {
	adminv1.UnimplementedAdminServiceServer
	o Options

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// New returns a Server.
func New(o Options) *Server { return &Server{o: o, conns: map[string]*grpc.ClientConn{}} }

// Close closes the connections to the services.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
}

// addrs lists the instances of a service: the configured addresses, with a
// "dns+host:port" entry expanded to every address the name resolves to
// (a Kubernetes headless Service: one per replica), looked up now.
func (s *Server) addrs(ctx context.Context, service string) []string {
	var out []string
	for _, a := range s.o.Instances[service] {
		rest, ok := strings.CutPrefix(a, "dns+")
		if !ok {
			out = append(out, a)
			continue
		}
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			out = append(out, rest)
			continue
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil || len(ips) == 0 {
			out = append(out, rest) // reported unreachable with the name
			continue
		}
		sort.Strings(ips)
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	return out
}

func (s *Server) conn(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.conns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(s.o.ServiceCredentials))
	if err != nil {
		return nil, err
	}
	s.conns[addr] = c
	return c, nil
}

// ListSources implements AdminService.
func (s *Server) ListSources(context.Context, *adminv1.ListSourcesRequest) (*adminv1.ListSourcesResponse, error) {
	resp := &adminv1.ListSourcesResponse{}
	for _, src := range s.o.Pipeline().Sources {
		out := &adminv1.Source{Name: src.Name, Provider: src.Provider, UrlPrefix: s.urlPrefix(src.Name), StaticTokens: int32(len(src.IngestTokenRefs))}
		for _, t := range s.o.Tokens.Active(src.Name) {
			out.Tokens = append(out.Tokens, tokenInfo(t))
		}
		resp.Sources = append(resp.Sources, out)
	}
	return resp, nil
}

// GetSource implements AdminService.
func (s *Server) GetSource(ctx context.Context, req *adminv1.GetSourceRequest) (*adminv1.GetSourceResponse, error) {
	if err := s.source(req.Name); err != nil {
		return nil, err
	}
	all, _ := s.ListSources(ctx, nil)
	for _, src := range all.Sources {
		if src.Name == req.Name {
			return &adminv1.GetSourceResponse{Source: src}, nil
		}
	}
	return nil, fault.Errorf(fault.NotFound, "no source %q", req.Name)
}

func (s *Server) urlPrefix(source string) string {
	return strings.TrimRight(s.o.PublicURL, "/") + "/v1/hooks/" + source + "/"
}

func tokenInfo(t ingesttokens.Token) *adminv1.IngestTokenInfo {
	return &adminv1.IngestTokenInfo{TokenId: t.ID, CreatedAt: timestamppb.New(t.CreatedAt), CreatedBy: t.CreatedBy}
}

func (s *Server) source(name string) error {
	if name == "" {
		return fault.Errorf(fault.Invalid, "source is required")
	}
	if _, ok := s.o.Pipeline().Source(name); !ok {
		var names []string
		for _, src := range s.o.Pipeline().Sources {
			names = append(names, src.Name)
		}
		return fault.Errorf(fault.NotFound, "no source %q; the pipeline file has: %s", name, strings.Join(names, ", "))
	}
	return nil
}

// IssueIngestToken implements AdminService.
func (s *Server) IssueIngestToken(ctx context.Context, req *adminv1.IssueIngestTokenRequest) (*adminv1.IssueIngestTokenResponse, error) {
	if err := s.source(req.Source); err != nil {
		return nil, err
	}
	token, t, err := s.o.Tokens.Issue(ctx, s.o.Producer, req.Source, CallerOf(ctx).Name)
	if errors.Is(err, ingesttokens.ErrTooMany) {
		return nil, fault.Errorf(fault.Conflict, "%s already has %d active tokens: revoke one first (closedloopctl tokens revoke %s <id>)",
			req.Source, ingesttokens.MaxActive, req.Source)
	}
	if err != nil {
		return nil, fault.Errorf(fault.Unavailable, "writing the token to the control topic: %v", err)
	}
	return &adminv1.IssueIngestTokenResponse{Token: tokenInfo(t), Url: s.urlPrefix(req.Source) + token}, nil
}

// RevokeIngestToken implements AdminService.
func (s *Server) RevokeIngestToken(ctx context.Context, req *adminv1.RevokeIngestTokenRequest) (*adminv1.RevokeIngestTokenResponse, error) {
	if err := s.source(req.Source); err != nil {
		return nil, err
	}
	found := false
	for _, t := range s.o.Tokens.Active(req.Source) {
		found = found || t.ID == req.TokenId
	}
	if !found {
		return nil, fault.Errorf(fault.NotFound, "%s has no active token %q (closedloopctl sources lists them)", req.Source, req.TokenId)
	}
	if err := s.o.Tokens.Revoke(ctx, s.o.Producer, req.Source, req.TokenId); err != nil {
		return nil, fault.Errorf(fault.Unavailable, "writing the revocation to the control topic: %v", err)
	}
	return &adminv1.RevokeIngestTokenResponse{}, nil
}

// ListDeadLetters implements AdminService.
func (s *Server) ListDeadLetters(ctx context.Context, req *adminv1.ListDeadLettersRequest) (*adminv1.ListDeadLettersResponse, error) {
	if req.PageSize < 0 {
		return nil, fault.Errorf(fault.Invalid, "page_size must not be negative")
	}
	size := int(req.PageSize)
	if size == 0 {
		size = 50
	}
	all, err := s.o.DLQ.Select(ctx, req.Filter)
	if err != nil {
		return nil, err
	}
	page, next, err := dlq.Page(all, min(size, 1000), req.PageToken)
	if err != nil {
		return nil, err
	}
	open := 0
	for _, d := range all {
		if d.State == adminv1.DeadLetterState_DEAD_LETTER_STATE_OPEN {
			open++
		}
	}
	return &adminv1.ListDeadLettersResponse{DeadLetters: page, NextPageToken: next, TotalUnresolved: int32(open)}, nil
}

// GetDeadLetter implements AdminService.
func (s *Server) GetDeadLetter(ctx context.Context, req *adminv1.GetDeadLetterRequest) (*adminv1.GetDeadLetterResponse, error) {
	sum, dl, err := s.o.DLQ.Get(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	return &adminv1.GetDeadLetterResponse{Summary: sum, DeadLetter: dl}, nil
}

// ReplayDeadLetters implements AdminService.
func (s *Server) ReplayDeadLetters(ctx context.Context, req *adminv1.ReplayDeadLettersRequest) (*adminv1.ReplayDeadLettersResponse, error) {
	id, n, skipped, err := s.o.DLQ.Replay(ctx, req.Ids, req.Filter, CallerOf(ctx).Name, req.DryRun)
	if err != nil {
		return nil, err // a partial replay is a fault.Partial from dlq
	}
	return &adminv1.ReplayDeadLettersResponse{ReplayId: id, Replayed: int32(n), Skipped: skipped}, nil
}

// DiscardDeadLetters implements AdminService.
func (s *Server) DiscardDeadLetters(ctx context.Context, req *adminv1.DiscardDeadLettersRequest) (*adminv1.DiscardDeadLettersResponse, error) {
	n, skipped, err := s.o.DLQ.Discard(ctx, req.Ids, req.Filter, CallerOf(ctx).Name, req.Reason, req.DryRun)
	if err != nil {
		return nil, err
	}
	return &adminv1.DiscardDeadLettersResponse{Discarded: int32(n), Skipped: skipped}, nil
}

// PauseSink implements AdminService.
func (s *Server) PauseSink(ctx context.Context, req *adminv1.PauseSinkRequest) (*adminv1.PauseSinkResponse, error) {
	reason := req.Reason
	if reason == "" {
		reason = "paused by " + CallerOf(ctx).Name
	} else {
		reason = CallerOf(ctx).Name + ": " + reason
	}
	out, err := s.eachDestination(ctx, req.Sink, req.Destination, func(ctx context.Context, c adminv1.ServiceAdminServiceClient, dest string) error {
		_, err := c.PauseDestination(ctx, &adminv1.PauseDestinationRequest{Destination: dest, Reason: reason})
		return err
	})
	return &adminv1.PauseSinkResponse{Instances: out}, err
}

// ResumeSink implements AdminService.
func (s *Server) ResumeSink(ctx context.Context, req *adminv1.ResumeSinkRequest) (*adminv1.ResumeSinkResponse, error) {
	out, err := s.eachDestination(ctx, req.Sink, req.Destination, func(ctx context.Context, c adminv1.ServiceAdminServiceClient, dest string) error {
		_, err := c.ResumeDestination(ctx, &adminv1.ResumeDestinationRequest{Destination: dest})
		return err
	})
	return &adminv1.ResumeSinkResponse{Instances: out}, err
}

// eachDestination applies fn to the named destination (or every one) on
// every instance of sink and reports each instance's destinations after.
func (s *Server) eachDestination(ctx context.Context, sinkName, dest string, fn func(context.Context, adminv1.ServiceAdminServiceClient, string) error) ([]*adminv1.InstanceDestinations, error) {
	if sinkName == "" {
		return nil, fault.Errorf(fault.Invalid, "sink is required: a sink service (sink-warehouse) or normalizer / enricher")
	}
	addrs := s.addrs(ctx, sinkName)
	if len(addrs) == 0 {
		return nil, fault.Errorf(fault.NotFound, "no instances of %s are known: list them in ADMIN_SERVICES (%s=host:port)", sinkName, sinkName)
	}
	var out []*adminv1.InstanceDestinations
	failed, matched := 0, false
	for _, addr := range addrs {
		res := &adminv1.InstanceDestinations{Address: addr}
		out = append(out, res)
		c, err := s.conn(addr)
		if err != nil {
			res.Error, failed = err.Error(), failed+1
			continue
		}
		client := adminv1.NewServiceAdminServiceClient(c)
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := client.GetStatus(cctx, &adminv1.GetStatusRequest{})
		if err == nil {
			for _, d := range st.Destinations {
				if dest != "" && d.Name != dest {
					continue
				}
				matched = true
				if err = fn(cctx, client, d.Name); err != nil {
					break
				}
			}
		}
		if err == nil {
			st, err = client.GetStatus(cctx, &adminv1.GetStatusRequest{})
		}
		cancel()
		if err != nil {
			res.Error, failed = status.Convert(err).Message(), failed+1
			continue
		}
		res.Destinations = st.Destinations
	}
	switch {
	case failed == len(addrs):
		return out, fault.Errorf(fault.Unavailable, "no instance of %s could be reached: %s", sinkName, out[0].Error)
	case !matched && dest != "":
		return out, fault.Errorf(fault.NotFound, "%s has no destination %q", sinkName, dest)
	case failed > 0:
		return out, fault.Errorf(fault.Unavailable, "%d of %d instances of %s could not be reached (see instances)", failed, len(addrs), sinkName)
	}
	return out, nil
}

// StartReplay implements AdminService.
func (s *Server) StartReplay(ctx context.Context, req *adminv1.StartReplayRequest) (*adminv1.StartReplayResponse, error) {
	job, err := s.o.Replays.Start(ctx, req, CallerOf(ctx).Name)
	if err != nil {
		return nil, err
	}
	return &adminv1.StartReplayResponse{Job: job}, nil
}

// WatchReplay implements AdminService.
func (s *Server) WatchReplay(req *adminv1.WatchReplayRequest, stream grpc.ServerStreamingServer[adminv1.WatchReplayResponse]) error {
	return s.o.Replays.Watch(stream.Context(), req.Id, func(job *adminv1.ReplayJob) error {
		return stream.Send(&adminv1.WatchReplayResponse{Job: job})
	})
}

// CancelReplay implements AdminService.
func (s *Server) CancelReplay(_ context.Context, req *adminv1.CancelReplayRequest) (*adminv1.CancelReplayResponse, error) {
	job, err := s.o.Replays.Cancel(req.Id)
	if err != nil {
		return nil, err
	}
	return &adminv1.CancelReplayResponse{Job: job}, nil
}

// ListReplays implements AdminService.
func (s *Server) ListReplays(context.Context, *adminv1.ListReplaysRequest) (*adminv1.ListReplaysResponse, error) {
	return &adminv1.ListReplaysResponse{Jobs: s.o.Replays.List()}, nil
}

// GetPipelineStatus implements AdminService.
func (s *Server) GetPipelineStatus(ctx context.Context, _ *adminv1.GetPipelineStatusRequest) (*adminv1.GetPipelineStatusResponse, error) {
	resp := &adminv1.GetPipelineStatusResponse{At: timestamppb.Now(), Healthy: true}
	problem := func(format string, args ...any) {
		resp.Healthy = false
		resp.Problems = append(resp.Problems, fmt.Sprintf(format, args...))
	}
	// Every instance's own status, once per service.
	type answer struct {
		addr string
		st   *adminv1.GetStatusResponse
		err  error
	}
	answers := map[string][]answer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for svc := range s.o.Instances {
		for _, addr := range s.addrs(ctx, svc) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := answer{addr: addr}
				if c, err := s.conn(addr); err != nil {
					a.err = err
				} else {
					cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					a.st, a.err = adminv1.NewServiceAdminServiceClient(c).GetStatus(cctx, &adminv1.GetStatusRequest{})
					cancel()
				}
				mu.Lock()
				answers[svc] = append(answers[svc], a)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	// The loop closure, as a warehouse sink instance reports it (every
	// instance reads the same database: the freshest answer wins).
	for _, as := range answers {
		for _, a := range as {
			if lc := a.st.GetLoopClosure(); lc != nil && (resp.LoopClosure == nil || lc.GetSince().AsTime().After(resp.LoopClosure.GetSince().AsTime())) {
				resp.LoopClosure = lc
			}
		}
	}

	// Webhooks per source, summed over the ingress instances.
	bySource := map[string]*adminv1.SourceTraffic{}
	for _, as := range answers {
		for _, a := range as {
			for _, t := range a.st.GetSources() {
				sum := bySource[t.Source]
				if sum == nil {
					sum = &adminv1.SourceTraffic{Source: t.Source}
					bySource[t.Source] = sum
					resp.Sources = append(resp.Sources, sum)
				}
				sum.Accepted += t.Accepted
				sum.Rejected += t.Rejected
				sum.Failed += t.Failed
			}
		}
	}
	sort.Slice(resp.Sources, func(i, j int) bool { return resp.Sources[i].Source < resp.Sources[j].Source })
	if s.o.Backfills != nil {
		resp.Reconciliation = s.o.Backfills.Reconciliation()
	}

	stages := append([]Stage(nil), s.o.Stages...)
	if s.o.DestinationStage != nil {
		known := map[string]bool{}
		for _, st := range stages {
			known[st.Name] = true
		}
		var extra []Stage
		for svc, as := range answers {
			for _, a := range as {
				if a.err != nil {
					continue
				}
				for _, d := range a.st.Destinations {
					if st, ok := s.o.DestinationStage(svc, d.Name); ok && !known[st.Name] {
						known[st.Name] = true
						extra = append(extra, st)
					}
				}
			}
		}
		sort.Slice(extra, func(i, j int) bool { return extra[i].Name < extra[j].Name })
		stages = append(stages, extra...)
	}
	for _, st := range stages {
		out := &adminv1.StageStatus{Name: st.Name, Group: st.Group}
		parts, err := s.o.Offsets.Group(ctx, st.Group, st.Topics)
		if err != nil {
			problem("%s: lag unknown: %v", st.Name, err)
		}
		for _, p := range parts {
			out.Partitions = append(out.Partitions, &adminv1.PartitionLag{Topic: p.Topic, Partition: int32(p.Partition), Committed: p.Committed, End: p.End, Lag: p.Lag})
			out.Lag += p.Lag
		}
		if st.MaxLag > 0 && out.Lag > st.MaxLag {
			problem("%s: %d records behind (threshold %d)", st.Name, out.Lag, st.MaxLag)
		}
		if st.Sink != "" {
			depth, err := s.o.DLQ.Depth(ctx, st.Sink)
			if err != nil && !errors.Is(err, dlq.ErrNotFound) {
				problem("%s: dead letters unknown: %v", st.Name, err)
			}
			out.DlqDepth = int64(depth)
		}
		var processed int64
		var uptime float64
		for _, a := range answers[st.Service] {
			if a.err != nil {
				out.Unreachable = append(out.Unreachable, a.addr)
				continue
			}
			out.Instances = append(out.Instances, a.st.Instance+" ("+a.addr+")")
			uptime = max(uptime, time.Since(a.st.StartedAt.AsTime()).Seconds())
			for _, f := range a.st.Freshness {
				if f.Stage != st.Service || st.Sink != "" && st.Name != st.Sink && st.Name != st.Sink+"/"+f.Destination {
					continue
				}
				// The stalest answer: a stage is as fresh as its slowest part.
				if out.FreshnessAt == nil || f.Seconds > out.FreshnessSeconds {
					out.FreshnessSeconds, out.FreshnessAt = f.Seconds, f.At
				}
			}
			for _, c := range a.st.Consumers {
				if c.Group != st.Group {
					continue
				}
				processed += c.Processed
				if c.LastProcessedAt != nil && (out.LastProcessedAt == nil || c.LastProcessedAt.AsTime().After(out.LastProcessedAt.AsTime())) {
					out.LastProcessedAt = c.LastProcessedAt
				}
			}
			for _, d := range a.st.Destinations {
				if st.Sink != "" && (st.Name == st.Sink || st.Name == st.Sink+"/"+d.Name) || st.Sink == "" && d.Name == st.Service {
					out.Destinations = append(out.Destinations, d)
					if d.Breaker == adminv1.BreakerState_BREAKER_STATE_OPEN || d.Breaker == adminv1.BreakerState_BREAKER_STATE_HALF_OPEN {
						problem("%s: destination %s: breaker %s on %s", st.Name, d.Name, strings.TrimPrefix(d.Breaker.String(), "BREAKER_STATE_"), a.st.Instance)
					}
					if d.Paused {
						problem("%s: destination %s paused on %s: %s", st.Name, d.Name, a.st.Instance, d.PauseReason)
					}
				}
			}
		}
		out.Processed = processed
		if uptime > 0 {
			out.Throughput = float64(processed) / uptime
		}
		if len(out.Unreachable) > 0 {
			problem("%s: instance(s) not answering: %s", st.Name, strings.Join(out.Unreachable, ", "))
		}
		resp.Stages = append(resp.Stages, out)
	}
	// Schema drift of the last 24 hours, from any normalizer instance.
	for _, addr := range s.addrs(ctx, "normalizer") {
		c, err := s.conn(addr)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		d, err := adminv1.NewSchemaDriftServiceClient(c).ListSchemaDrift(cctx, &adminv1.ListSchemaDriftRequest{
			Since: timestamppb.New(time.Now().Add(-24 * time.Hour)), PageSize: 200})
		cancel()
		if err == nil {
			resp.RecentDrift = d.Paths
			break
		}
	}
	return resp, nil
}
