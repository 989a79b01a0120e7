// Package status answers "is this instance healthy and what is it doing?"
// in three places from one source of truth: the /healthz and /readyz HTTP
// endpoints, and the GetStatus RPC of closedloop.admin.v1.ServiceAdminService.
package status

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/telemetry"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

// Check reports whether a dependency (Kafka, Redis, PostgreSQL) is usable.
// It must return quickly; the context carries a short deadline.
type Check func(ctx context.Context) error

// ConsumerStats are the live counters of one consumer on one topic. The
// kafkaio consumer updates them; status only reads.
type ConsumerStats struct {
	Group       string
	Topic       string
	Processed   atomic.Int64
	Quarantined atomic.Int64
	Retries     atomic.Int64
	Lag         atomic.Int64
	LastAt      atomic.Int64 // unix nanoseconds of the last handled record
}

// Registry holds the checks and consumer stats of one service instance.
type Registry struct {
	Service  string
	Version  string
	Instance string
	Started  time.Time

	mu           sync.Mutex
	checks       map[string]Check
	consumers    []*ConsumerStats
	destinations []Destination
	reports      []Report
}

// Report adds a service's own part to its GetStatus answer (the warehouse
// sink's loop closure). It runs within the RPC's deadline.
type Report func(ctx context.Context, resp *adminv1.GetStatusResponse)

// AddReport registers a Report.
func (r *Registry) AddReport(f Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, f)
}

// Destination is one destination of a sink service, as the admin API sees
// it (a sink.Runner).
type Destination interface {
	Name() string
	Status() *adminv1.DestinationStatus
	Pause(reason string)
	Resume()
}

// AddDestination registers a destination for GetStatus and Pause/Resume.
func (r *Registry) AddDestination(d Destination) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.destinations = append(r.destinations, d)
}

func (r *Registry) destination(name string) (Destination, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for _, d := range r.destinations {
		n := d.Name()
		if n == name {
			return d, nil
		}
		names = append(names, n)
	}
	return nil, names
}

// NewRegistry returns an empty registry.
func NewRegistry(service, version, instance string) *Registry {
	return &Registry{Service: service, Version: version, Instance: instance, Started: time.Now(), checks: map[string]Check{}}
}

// AddCheck registers a readiness check under a name ("kafka", "redis", ...).
func (r *Registry) AddCheck(name string, c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks[name] = c
}

// AddConsumer registers the stats of a consumer.
func (r *Registry) AddConsumer(s *ConsumerStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.consumers = append(r.consumers, s)
}

// ComponentResult is the outcome of one check.
type ComponentResult struct {
	Name    string `json:"name"`
	Healthy bool   `json:"healthy"`
	Detail  string `json:"detail,omitempty"`
}

// Run runs every check concurrently, each with a 2 s deadline, and returns
// the results sorted by name and whether all passed.
func (r *Registry) Run(ctx context.Context) ([]ComponentResult, bool) {
	r.mu.Lock()
	names := make([]string, 0, len(r.checks))
	for n := range r.checks {
		names = append(names, n)
	}
	checks := r.checks
	r.mu.Unlock()
	sort.Strings(names)
	out := make([]ComponentResult, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			out[i] = ComponentResult{Name: n, Healthy: true}
			if err := checks[n](cctx); err != nil {
				out[i] = ComponentResult{Name: n, Detail: err.Error()}
			}
		}()
	}
	wg.Wait()
	ok := true
	for _, c := range out {
		ok = ok && c.Healthy
	}
	return out, ok
}

// Mount adds /healthz (the process is alive: always 200) and /readyz (every
// check passes: 200, else 503 with the failing checks as JSON) to mux.
func (r *Registry) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		res, ok := r.Run(req.Context())
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": ok, "components": res})
	})
}

// AdminServer implements closedloop.admin.v1.ServiceAdminService from a Registry.
type AdminServer struct {
	adminv1.UnimplementedServiceAdminServiceServer
	Registry *Registry
}

// GetStatus implements ServiceAdminService.
func (a *AdminServer) GetStatus(ctx context.Context, _ *adminv1.GetStatusRequest) (*adminv1.GetStatusResponse, error) {
	r := a.Registry
	res, ok := r.Run(ctx)
	resp := &adminv1.GetStatusResponse{
		Service:   r.Service,
		Version:   r.Version,
		Instance:  r.Instance,
		StartedAt: timestamppb.New(r.Started),
		Ready:     ok,
	}
	for _, c := range res {
		resp.Components = append(resp.Components, &adminv1.ComponentStatus{Name: c.Name, Healthy: c.Healthy, Detail: c.Detail})
	}
	r.mu.Lock()
	consumers := append([]*ConsumerStats(nil), r.consumers...)
	r.mu.Unlock()
	for _, c := range consumers {
		cs := &adminv1.ConsumerStatus{
			Group: c.Group, Topic: c.Topic,
			Processed: c.Processed.Load(), Quarantined: c.Quarantined.Load(), Retries: c.Retries.Load(), Lag: c.Lag.Load(),
		}
		if at := c.LastAt.Load(); at > 0 {
			cs.LastProcessedAt = timestamppb.New(time.Unix(0, at))
		}
		resp.Consumers = append(resp.Consumers, cs)
	}
	r.mu.Lock()
	dests := append([]Destination(nil), r.destinations...)
	r.mu.Unlock()
	for _, d := range dests {
		resp.Destinations = append(resp.Destinations, d.Status())
	}
	for _, f := range telemetry.LatestFreshness() {
		resp.Freshness = append(resp.Freshness, &adminv1.StageFreshness{Stage: f.Stage, Destination: f.Destination, Seconds: f.Seconds, At: timestamppb.New(f.At)})
	}
	r.mu.Lock()
	reports := append([]Report(nil), r.reports...)
	r.mu.Unlock()
	for _, f := range reports {
		f(ctx, resp)
	}
	return resp, nil
}

// PauseDestination implements ServiceAdminService.
func (a *AdminServer) PauseDestination(_ context.Context, req *adminv1.PauseDestinationRequest) (*adminv1.PauseDestinationResponse, error) {
	d, err := a.find(req.Destination)
	if err != nil {
		return nil, err
	}
	reason := req.Reason
	if reason == "" {
		reason = "paused by an operator"
	}
	d.Pause(reason)
	return &adminv1.PauseDestinationResponse{Destination: d.Status()}, nil
}

// ResumeDestination implements ServiceAdminService.
func (a *AdminServer) ResumeDestination(_ context.Context, req *adminv1.ResumeDestinationRequest) (*adminv1.ResumeDestinationResponse, error) {
	d, err := a.find(req.Destination)
	if err != nil {
		return nil, err
	}
	d.Resume()
	return &adminv1.ResumeDestinationResponse{Destination: d.Status()}, nil
}

func (a *AdminServer) find(name string) (Destination, error) {
	if name == "" {
		return nil, fault.Errorf(fault.Invalid, "destination is required")
	}
	d, names := a.Registry.destination(name)
	if d == nil {
		if len(names) == 0 {
			return nil, fault.Errorf(fault.NotFound, "%s has no destinations (only sink services do)", a.Registry.Service)
		}
		return nil, fault.Errorf(fault.NotFound, "%s has no destination %q; it has: %s", a.Registry.Service, name, strings.Join(names, ", "))
	}
	return d, nil
}
