// Package app is the sink-webhook composition root: the service of the
// outbound HTTP destinations — webhook endpoints (sinks.webhook.endpoints)
// and the kinds in Kinds (sinks.slack, ...) — each destination with its own
// consumer group, Redis checkpoint and circuit breaker, so a dead vendor
// never slows another.
package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/destinations/freshdesk"
	"github.com/closedloop/closedloop/libs/destinations/hubspot"
	"github.com/closedloop/closedloop/libs/destinations/salesforce"
	"github.com/closedloop/closedloop/libs/destinations/slack"
	"github.com/closedloop/closedloop/libs/destinations/zendesk"
	"github.com/closedloop/closedloop/libs/service"
	"github.com/closedloop/closedloop/libs/sink"
	"github.com/closedloop/closedloop/services/sink-webhook/internal/webhook"
)

// Config is the sink-webhook configuration.
type Config struct {
	Common service.Common
	// GroupID (SINK_WEBHOOK_GROUP, default "closedloop-sink-webhook"): each
	// endpoint consumes in group "<GroupID>-<endpoint name>".
	GroupID string
	// RedisURL (REDIS_URL, required): checkpoints and disabled flags.
	RedisURL string
	// RedisPrefix (REDIS_KEY_PREFIX, default "closedloop:").
	RedisPrefix string
	// CheckpointTTL (SINK_CHECKPOINT_TTL, default 168h): how long a delivered
	// event is remembered; it must outlast any redelivery.
	CheckpointTTL time.Duration
	Sink          sink.Settings
	Pipeline      *service.Pipeline
}

// Load reads and validates the configuration.
func Load(e *config.Env) (Config, error) {
	c := Config{
		Common:        service.LoadCommon(e, 8086, 9196),
		GroupID:       e.String("SINK_WEBHOOK_GROUP", "closedloop-sink-webhook"),
		RedisURL:      e.Required("REDIS_URL", "the Redis server for delivery checkpoints, e.g. redis://localhost:6379/0"),
		RedisPrefix:   e.String("REDIS_KEY_PREFIX", "closedloop:"),
		CheckpointTTL: e.Duration("SINK_CHECKPOINT_TTL", 7*24*time.Hour),
		Sink:          sink.LoadSettings(e, 0), // receivers answer each batch on their own
	}
	if c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			e.Errorf("REDIS_URL: %v", err)
		}
	}
	c.Pipeline = service.LoadPipeline(e, nil)
	if err := e.Err(); err != nil {
		return c, err
	}
	if len(c.Pipeline.Current().Sinks.Webhook.Endpoints) == 0 && len(c.Pipeline.Current().Sinks.Kinds) == 0 {
		return c, errors.New("PIPELINE_CONFIG has no sinks.webhook.endpoints and no other destination (sinks.slack, ...): nothing to deliver to")
	}
	return c, nil
}

// Kinds are the destination kinds this service hosts besides webhook
// endpoints, each its own section under sinks: in the pipeline file
// (docs/destinations.md). Adding one is a line here.
var Kinds = []sink.Kind{
	slack.Kind,
	zendesk.Kind,
	freshdesk.Kind,
	hubspot.Kind,
	salesforce.Kind,
}

// redisFlag keeps an endpoint's disabled flag in Redis.
type redisFlag struct {
	rdb *redis.Client
	key string
}

func (f redisFlag) Disabled(ctx context.Context) (string, bool, error) {
	v, err := f.rdb.Get(ctx, f.key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	return v, err == nil, err
}

func (f redisFlag) Disable(ctx context.Context, why string) error {
	return f.rdb.Set(ctx, f.key, why, 0).Err()
}

func (f redisFlag) Enable(ctx context.Context) error { return f.rdb.Del(ctx, f.key).Err() }

// Run starts the sink and blocks until ctx is cancelled.
func Run(ctx context.Context) error {
	cfg, err := Load(config.FromEnviron())
	if err != nil {
		return err
	}
	svc, err := service.New(ctx, "sink-webhook", cfg.Common)
	if err != nil {
		return err
	}
	rdb, err := svc.Redis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	svc.Status.AddCheck("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	var instances []sink.Instance
	for _, ep := range cfg.Pipeline.Current().Sinks.Webhook.Endpoints {
		secret, err := config.ResolveSecret(ep.SecretRef, os.LookupEnv)
		if err != nil {
			return fmt.Errorf("sinks.webhook.endpoints %s: %w", ep.Name, err)
		}
		prefix := cfg.RedisPrefix + "sink:webhook:" + ep.Name + ":"
		checkpoint := sink.RedisCheckpoint{RDB: rdb, Prefix: prefix + "done:", TTL: cfg.CheckpointTTL}
		instances = append(instances, sink.Instance{
			Name: ep.Name, Group: cfg.GroupID + "-" + ep.Name, Checkpoint: checkpoint, Filter: sink.FilterOf(ep.Filter.Expr),
			Open: func(ctx context.Context) (sink.Destination, error) {
				dest, err := webhook.New(ctx, ep.Name, ep.URL, secret.Reveal(), ep.Timeout.Duration, redisFlag{rdb: rdb, key: prefix + "disabled"})
				if err != nil {
					return nil, err
				}
				if why, off := dest.Disabled(); off {
					svc.Log.Warn("endpoint is disabled: its events go to the dead-letter topic", "endpoint", ep.Name, "why", why, "reenable", "closedloopctl resume sink-webhook "+ep.Name)
				}
				svc.Log.Info("endpoint ready", "endpoint", ep.Name, "group", cfg.GroupID+"-"+ep.Name)
				return dest, nil
			},
		})
	}
	records := svc.Producer() // the CRMs' unsubscribe propagations
	if err := svc.EnsureTopics(ctx, svc.Common.Topics.Unsubscribes()); err != nil {
		return err
	}
	kinds, err := sink.KindInstances(Kinds, cfg.Pipeline.Current().Sinks.Kinds, sink.KindEnv{Redis: rdb, RedisPrefix: cfg.RedisPrefix + "sink:",
		GroupPrefix: cfg.GroupID + "-", LookupEnv: os.LookupEnv, Log: svc.Log,
		Sink: svc.Name, Records: records, Topics: svc.Common.Topics, Audit: svc.Audit})
	if err != nil {
		return err
	}
	svc.CloseProducer(records)
	if err := sink.Host(ctx, svc, cfg.Sink, append(instances, kinds...)); err != nil {
		return err
	}
	return svc.Run()
}
