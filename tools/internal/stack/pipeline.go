package stack

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/closedloop/closedloop/libs/localinfra"
)

// Pipeline describes one closedloop deployment on shared infrastructure.
// Everything that could collide between two pipelines on the same broker,
// Redis and PostgreSQL is derived from Name: topic prefix, consumer groups,
// Redis key prefix, warehouse schema.
type Pipeline struct {
	Name    string // lower-case letters, digits and '_'
	BinDir  string
	Dir     string // logs and config
	Brokers string
	Redis   string // host:port
	// DatabaseURL empty means: no PostgreSQL, use the console sink.
	DatabaseURL string
	// Secret signs the Delighted webhooks; Token is the source's ingest token.
	Secret, Token string
	// FixedPorts, when set, gives the ingress's public port (other ports are
	// free ones); else every port is picked free.
	IngressPort int
	// Env is added to every service's environment (OTEL_*, LOG_LEVEL, ...).
	Env []string
	// ServiceEnv is added to one service's environment, after Env (a Kafka
	// user per service).
	ServiceEnv map[string][]string
	// TopicsMade: the topics were made beforehand (ApplyTopics); the
	// services start without KAFKA_CREATE_TOPICS, as in production.
	TopicsMade bool
	// Tee receives every service's output too.
	Tee io.Writer
	// Run names the services to start, in start order (default: the sink —
	// sink-warehouse, or sink-console without a database — then enricher,
	// normalizer, ingress).
	Run []string
	// DelightedAPIYAML is added to the delighted source (indented by four
	// spaces): its api block for backfills and reconciliation.
	DelightedAPIYAML string
	// SinksYAML is added under "sinks:" of the pipeline file (indented by
	// two spaces), e.g. a warehouse filter or webhook endpoints.
	SinksYAML string
	// AdminPort is the admin's gRPC port on 127.0.0.1 (0: any free port).
	AdminPort int
	// SourcesYAML is added to the sources: list after the delighted source
	// (list items, indented two spaces).
	SourcesYAML string
	// CRMURL, when set, is a tools/crmserver: the enricher looks accounts up
	// there by the respondent's email domain (lookup "account": tier, arr,
	// account name, owner) and a rule sends enterprise detractors, labelled
	// "escalate", to the priority lane.
	CRMURL string
	// AdminTokens, by caller name, are the roles ("viewer", "operator") of
	// the admin API's callers; AdminToken gives each one's token. Run
	// "admin" last so that it knows every service's address.
	AdminTokens map[string]string
	// LookupRatePerSecond overrides the account lookup's rate limit (default 50/s).
	LookupRatePerSecond float64

	Services   map[string]*Process
	OpsAddrs   map[string]string
	GRPCAddrs  map[string]string
	IngressURL string // http://127.0.0.1:port/v1/hooks/delighted/<token>
	order      []string
}

// Schema is the warehouse schema of the pipeline ("closedloop" for the
// unnamed, default pipeline).
func (p *Pipeline) Schema() string {
	if p.Name == "" {
		return "closedloop"
	}
	return "cl_" + p.Name
}

// TopicPrefix is put before every topic name ("" for the default pipeline).
func (p *Pipeline) TopicPrefix() string {
	if p.Name == "" {
		return ""
	}
	return p.Name + "."
}

// scoped returns the environment that keeps this pipeline's consumer
// groups and Redis keys apart from others; the default pipeline uses the
// services' defaults.
func (p *Pipeline) scoped() []string {
	if p.Name == "" {
		return nil
	}
	return []string{
		"REDIS_KEY_PREFIX=" + p.Name + ":",
		"NORMALIZER_GROUP=" + p.Name + "-normalizer",
		"ENRICHER_GROUP=" + p.Name + "-enricher",
		"SINK_WAREHOUSE_GROUP=" + p.Name + "-sink-warehouse",
		"SINK_CONSOLE_GROUP=" + p.Name + "-sink-console",
		"SINK_WEBHOOK_GROUP=" + p.Name + "-sink-webhook",
	}
}

func (p *Pipeline) writeConfig() (string, error) {
	path := filepath.Join(p.Dir, "pipeline.yaml")
	yml := fmt.Sprintf(`# Written by tools/internal/stack for pipeline %q.
sources:
  - name: delighted
    provider: delighted
    secrets: [env:CLOSEDLOOP_DEV_DELIGHTED_SECRET]
    ingest_tokens: [env:CLOSEDLOOP_DEV_INGEST_TOKEN]
    dedupe_ttl: 72h
    rate_limit: {per_second: 50000}   # high: local load tests must not hit it
%s%s%s%ssinks:
  warehouse:
    schema: %s
%s`, p.Name, p.DelightedAPIYAML, p.SourcesYAML, p.enrichmentYAML(), p.adminYAML(), p.Schema(), p.SinksYAML)
	return path, os.WriteFile(path, []byte(yml), 0o644)
}

// AdminToken is the admin API token of a caller in AdminTokens.
func (p *Pipeline) AdminToken(name string) string {
	return "tok-" + name + "-0123456789abcdef0123456789abcdef"
}

// ServiceToken is the token of the services' gRPC ports (CLOSEDLOOP_SERVICE_TOKEN).
func (p *Pipeline) ServiceToken() string { return ServiceToken }

// ServiceToken is the service token of the stacks the tools start.
const ServiceToken = "svc-dev-0123456789abcdef0123456789abcdef"

// AdminAddr is the admin service's gRPC address (when it runs).
func (p *Pipeline) AdminAddr() string { return p.GRPCAddrs["admin"] }

func (p *Pipeline) adminYAML() string {
	if len(p.AdminTokens) == 0 {
		return ""
	}
	names := make([]string, 0, len(p.AdminTokens))
	for n := range p.AdminTokens {
		names = append(names, n)
	}
	sort.Strings(names)
	out := "admin:\n  tokens:\n"
	for _, n := range names {
		out += fmt.Sprintf("    - {name: %s, role: %s, token: env:CLOSEDLOOP_ADMIN_TOKEN_%s}\n", n, p.AdminTokens[n], strings.ToUpper(n))
	}
	return out
}

func (p *Pipeline) enrichmentYAML() string {
	if p.CRMURL == "" {
		return ""
	}
	rateLimit := ""
	if p.LookupRatePerSecond > 0 {
		rateLimit = fmt.Sprintf("      rate_limit: {per_second: %g}\n", p.LookupRatePerSecond)
	}
	return `enrichment:
  lookups:
    - name: account
      key: 'event.respondent.email.contains("@") ? event.respondent.email.split("@")[1].lowerAscii() : ""'
      url: ` + p.CRMURL + `/v1/accounts/{key}
      fields: {tier: account.tier, arr: account.arr, account_name: account.name, account_owner: account.owner.email}
      cache_ttl: 10m
      negative_ttl: 1m
      breaker_open_for: 5s
` + rateLimit + `  rules:
    - name: escalate
      when: 'event.segment == Segment.SEGMENT_DETRACTOR && has(enrichment.tier) && enrichment.tier == "enterprise"'
      labels: [escalate]
      lane: priority
    - name: nurture
      when: 'event.segment == Segment.SEGMENT_PASSIVE'
      labels: [nurture]
`
}

// Start starts the services downstream first (sink, enricher, normalizer,
// ingress), each once ready, so the ingress answers only when the pipeline
// behind it is up.
func (p *Pipeline) Start(ctx context.Context) error {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	cfgPath, err := p.writeConfig()
	if err != nil {
		return err
	}
	sink := "sink-warehouse"
	if p.DatabaseURL == "" {
		sink = "sink-console"
	}
	p.order = []string{sink, "enricher", "normalizer", "ingress"}
	if len(p.Run) > 0 {
		p.order = p.Run
	}
	p.Services, p.OpsAddrs, p.GRPCAddrs = map[string]*Process{}, map[string]string{}, map[string]string{}
	prefix := p.TopicPrefix()
	for _, name := range p.order {
		ops, err := freeAddr()
		if err != nil {
			return err
		}
		grpc, err := freeAddr()
		if err != nil {
			return err
		}
		if name == "admin" && p.AdminPort > 0 {
			grpc = "127.0.0.1:" + strconv.Itoa(p.AdminPort)
		}
		env := append([]string{
			"KAFKA_BROKERS=" + p.Brokers,
			"KAFKA_CREATE_TOPICS=" + strconv.FormatBool(!p.TopicsMade),
			"CLOSEDLOOP_TOPIC_PREFIX=" + prefix,
			"PIPELINE_CONFIG=" + cfgPath,
			"CLOSEDLOOP_DEV_DELIGHTED_SECRET=" + p.Secret,
			"CLOSEDLOOP_DEV_INGEST_TOKEN=" + p.Token,
			"OPS_ADDR=" + ops,
			"GRPC_ADDR=" + grpc,
			"INSTANCE_ID=" + strings.TrimPrefix(p.Name+"-"+name, "-"),
			"REDIS_URL=redis://" + p.Redis + "/0",
			"DATABASE_URL=" + p.DatabaseURL,
			"DEDUPE_PROCESSING_TTL=5s",
			"CLOSEDLOOP_SERVICE_TOKEN=" + p.ServiceToken(),
		}, append(append(p.scoped(), p.Env...), p.ServiceEnv[name]...)...)
		for n := range p.AdminTokens {
			env = append(env, "CLOSEDLOOP_ADMIN_TOKEN_"+strings.ToUpper(n)+"="+p.AdminToken(n))
		}
		if name == "admin" {
			var svcs, sinks []string
			for _, started := range p.order {
				if addr := p.GRPCAddrs[started]; addr != "" {
					svcs = append(svcs, started+"="+addr)
				}
				if started == "sink-warehouse" {
					sinks = append(sinks, started)
				}
			}
			env = append(env, "ADMIN_SERVICES="+strings.Join(svcs, ","), "ADMIN_PUBLIC_URL="+strings.TrimSuffix(p.IngressURL, "/v1/hooks/delighted/"+p.Token))
			if len(sinks) > 0 {
				env = append(env, "ADMIN_SINKS="+strings.Join(sinks, ","))
			}
		}
		if name == "ingress" {
			port := p.IngressPort
			if port == 0 {
				if port, err = localinfra.FreePort(); err != nil {
					return err
				}
			}
			env = append(env, "INGRESS_ADDR=127.0.0.1:"+strconv.Itoa(port))
			p.IngressURL = fmt.Sprintf("http://127.0.0.1:%d/v1/hooks/delighted/%s", port, p.Token)
		}
		proc := &Process{Name: name, Bin: filepath.Join(p.BinDir, name), Env: env, Log: filepath.Join(p.Dir, name+".log"), Tee: p.Tee}
		if err := proc.Start(); err != nil {
			return err
		}
		p.Services[name], p.OpsAddrs[name], p.GRPCAddrs[name] = proc, ops, grpc
		if err := WaitReady(ctx, proc, ops, 60*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// Restart starts a stopped or killed service again and waits until it is ready.
func (p *Pipeline) Restart(ctx context.Context, name string) error {
	proc := p.Services[name]
	if err := proc.Start(); err != nil {
		return err
	}
	return WaitReady(ctx, proc, p.OpsAddrs[name], 60*time.Second)
}

// Stop stops the services gracefully, ingress first.
func (p *Pipeline) Stop() error {
	var first error
	for i := len(p.order) - 1; i >= 0; i-- {
		if proc := p.Services[p.order[i]]; proc != nil && proc.Running() {
			if err := proc.Stop(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func freeAddr() (string, error) {
	port, err := localinfra.FreePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(port), nil
}

// AddReplica starts another instance of a started service — the same
// environment with its own ops and gRPC ports and instance id — as
// "<name>-<n>" (n from 2), waits until it is ready and returns its name.
func (p *Pipeline) AddReplica(ctx context.Context, name string) (string, error) {
	base := p.Services[name]
	if base == nil {
		return "", fmt.Errorf("%s is not started", name)
	}
	n := 2
	for p.Services[name+"-"+strconv.Itoa(n)] != nil {
		n++
	}
	rname := name + "-" + strconv.Itoa(n)
	ops, err := freeAddr()
	if err != nil {
		return "", err
	}
	grpc, err := freeAddr()
	if err != nil {
		return "", err
	}
	env := make([]string, 0, len(base.Env))
	for _, kv := range base.Env {
		switch {
		case strings.HasPrefix(kv, "OPS_ADDR="), strings.HasPrefix(kv, "GRPC_ADDR="), strings.HasPrefix(kv, "INSTANCE_ID="):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "OPS_ADDR="+ops, "GRPC_ADDR="+grpc, "INSTANCE_ID="+strings.TrimPrefix(p.Name+"-"+rname, "-"))
	proc := &Process{Name: rname, Bin: base.Bin, Env: env, Log: filepath.Join(p.Dir, rname+".log"), Tee: p.Tee}
	if err := proc.Start(); err != nil {
		return "", err
	}
	p.Services[rname], p.OpsAddrs[rname], p.GRPCAddrs[rname] = proc, ops, grpc
	p.order = append(p.order, rname)
	return rname, WaitReady(ctx, proc, ops, 60*time.Second)
}
