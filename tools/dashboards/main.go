// Command dashboards writes closedloop's Grafana dashboards
// (deploy/grafana/dashboards/*.json and the Helm chart's copy) from the
// panels declared here, so that every dashboard shares its variables,
// units and layout, and the test beside it can hold every query to the
// series the code makes.
//
//	go run ./tools/dashboards            # write the files
//	go run ./tools/dashboards -check     # fail when they are not up to date
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Panel is one graph of a dashboard.
type Panel struct {
	Title, Description string
	// Kind is timeseries (default), stat or state-timeline.
	Kind string
	// Unit is Grafana's unit id: s, percentunit, reqps, short, ...
	Unit    string
	Queries []Query
	// Width in grid columns (of 24; default 12), height in rows (default 8).
	W, H int
	// Thresholds colour a stat: value → colour, from the lowest.
	Thresholds []Threshold
	// Mappings name the values of a state (the breaker's 0..3).
	Mappings map[string]string
	Max      *float64
}

// Query is one PromQL target.
type Query struct{ Expr, Legend string }

// Threshold is a step of a panel's thresholds.
type Threshold struct {
	Value *float64
	Color string
}

// Row groups panels under a title.
type Row struct {
	Title  string
	Panels []Panel
}

// Dashboard is one dashboard file.
type Dashboard struct {
	File, UID, Title, Description string
	Variables                     []Variable
	Rows                          []Row
}

// Variable is a templating variable filled from a label's values.
type Variable struct{ Name, Label, Query string }

func f(v float64) *float64 { return &v }

const rate = "[$__rate_interval]"

// Dashboards are the dashboards closedloop ships.
func Dashboards() []Dashboard {
	return []Dashboard{overview(), destination()}
}

func overview() Dashboard {
	return Dashboard{
		File: "closedloop-pipeline.json", UID: "closedloop-pipeline", Title: "closedloop / pipeline",
		Description: "Webhooks in, latency at each hop, freshness at each destination, backlog, dead letters, breakers, quarantines and drift. docs/observability.md maps each question to its panel.",
		Variables: []Variable{
			{"source", "Source", "label_values(closedloop_ingress_requests_total, source)"},
		},
		Rows: []Row{
			{"Webhooks in", []Panel{
				{Title: "Webhooks by source and status", Unit: "reqps", Description: "Requests per second at the ingress by source and HTTP status: 2xx durable in Kafka, 4xx refused (signature, token, size, rate), 5xx not durable (the provider retries).",
					Queries: []Query{{`sum by (source, status) (rate(closedloop_ingress_requests_total{source=~"$source"}` + rate + `))`, "{{source}} {{status}}"}}},
				{Title: "Webhook latency (p50, p99)", Unit: "s", Description: "Time to answer a webhook (durable in Kafka before the 2xx): http.server.request.duration.",
					Queries: []Query{
						{`histogram_quantile(0.5, sum by (le) (rate(http_server_request_duration_seconds_bucket{closedloop_source=~"$source"}` + rate + `)))`, "p50"},
						{`histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{closedloop_source=~"$source"}` + rate + `)))`, "p99"}}},
				{Title: "Ingress error ratio (SLO 99.9 %)", Unit: "percentunit", W: 8, Description: "Share of webhooks answered 5xx, over 5 minutes and 1 hour (recording rules of deploy/alerts). The budget is 0.1 %.",
					Queries: []Query{{`closedloop:ingress_errors:ratio_rate5m`, "5m"}, {`closedloop:ingress_errors:ratio_rate1h`, "1h"}}},
				{Title: "Webhooks per second", Kind: "stat", Unit: "reqps", W: 4, Description: "Accepted webhooks per second, all sources.",
					Queries: []Query{{`sum(rate(closedloop_ingress_requests_total{status=~"2.."}` + rate + `))`, "accepted"}}},
				{Title: "Requests in flight", Unit: "short", W: 12, Description: "Webhook requests being handled, per ingress instance (bounded by INGRESS_MAX_IN_FLIGHT).",
					Queries: []Query{{`sum by (instance) (closedloop_ingress_inflight)`, "{{instance}}"}}},
			}},
			{"Latency at each hop", []Panel{
				{Title: "Freshness by stage (p50, p99)", Unit: "s", Description: "From the webhook's arrival to each stage finishing the event (output durable; sinks: delivered).",
					Queries: []Query{
						{`histogram_quantile(0.5, sum by (le, stage) (rate(closedloop_freshness_seconds_bucket` + rate + `)))`, "p50 {{stage}}"},
						{`histogram_quantile(0.99, sum by (le, stage) (rate(closedloop_freshness_seconds_bucket` + rate + `)))`, "p99 {{stage}}"}}},
				{Title: "Freshness at each destination (p99)", Unit: "s", Description: "99th percentile from webhook to delivered, per sink destination. The SLO: 99 % within 60 s.",
					Queries: []Query{{`histogram_quantile(0.99, sum by (le, stage, destination) (rate(closedloop_freshness_seconds_bucket{destination!=""}` + rate + `)))`, "{{stage}}/{{destination}}"}}},
				{Title: "Kafka produce (p50, p99)", Unit: "s", Description: "Time for Kafka to acknowledge a produce (acks=all), per service.",
					Queries: []Query{
						{`histogram_quantile(0.5, sum by (le, closedloop_service) (rate(closedloop_kafka_produce_duration_seconds_bucket` + rate + `)))`, "p50 {{closedloop_service}}"},
						{`histogram_quantile(0.99, sum by (le, closedloop_service) (rate(closedloop_kafka_produce_duration_seconds_bucket` + rate + `)))`, "p99 {{closedloop_service}}"}}},
				{Title: "Handling a batch (p99)", Unit: "s", Description: "Time each stage's handler takes for one batch of records, per consumer group.",
					Queries: []Query{{`histogram_quantile(0.99, sum by (le, group) (rate(closedloop_consumer_handle_duration_seconds_bucket` + rate + `)))`, "p99 {{group}}"}}},
			}},
			{"Backlog and throughput", []Panel{
				{Title: "Lag per stage", Unit: "short", Description: "Records each stage's consumer group has not committed (the admin samples the group offsets).",
					Queries: []Query{{`sum by (stage) (closedloop_pipeline_lag)`, "{{stage}}"}}},
				{Title: "Records handled per second", Unit: "ops", Description: "Per consumer group and topic.",
					Queries: []Query{{`sum by (group) (rate(closedloop_consumer_records_total` + rate + `))`, "{{group}}"}}},
				{Title: "Dead letters waiting", Kind: "stat", Unit: "short", W: 8, Description: "Dead letters neither replayed nor discarded, per sink (closedloopctl dlq ls).",
					Thresholds: []Threshold{{nil, "green"}, {f(1), "orange"}},
					Queries:    []Query{{`max by (sink) (closedloop_dlq_depth)`, "{{sink}}"}}},
				{Title: "Breakers", Kind: "state-timeline", Unit: "short", W: 16, Description: "Each destination's circuit breaker: closed, open (failing; paused), half-open (probing), paused by an operator.",
					Mappings: map[string]string{"0": "closed", "1": "open", "2": "half-open", "3": "paused"},
					Queries:  []Query{{`max by (sink, destination) (closedloop_sink_breaker_state)`, "{{sink}}/{{destination}}"}}},
				{Title: "Fetched records held", Unit: "bytes", W: 24, Description: "Bytes of fetched records waiting for or in a handler call, per consumer group and instance; at its share of CONSUMER_BUFFER_BYTES a consumer fetches no more until a batch is done (a slow destination shows here first).",
					Queries: []Query{{`max by (group, instance) (closedloop_consumer_buffered_bytes)`, "{{group}} {{instance}}"}}},
			}},
			{"Data quality", []Panel{
				{Title: "Quarantined records", Unit: "short", W: 8, Description: "Records a stage can never handle, set aside on the quarantine topic, by group and reason.",
					Queries: []Query{{`sum by (group, reason) (increase(closedloop_consumer_quarantined_total` + rate + `))`, "{{group}} {{reason}}"}}},
				{Title: "Duplicates dropped", Unit: "ops", W: 8, Description: "The normalizer's dedupe decisions: miss (new event), hit (duplicate dropped), in_progress.",
					Queries: []Query{{`sum by (result) (rate(closedloop_normalizer_dedupe_total` + rate + `))`, "{{result}}"}}},
				{Title: "Found only by reconciliation", Unit: "short", W: 12, Description: "Events whose webhooks never arrived, found in the provider's API by the reconcile schedule, per source and hour (closedloopctl backfill ls).",
					Queries: []Query{{`sum by (source) (increase(closedloop_reconcile_found_total[1h]))`, "{{source}}"}}},
				{Title: "Webhooks missed (share)", Unit: "percentunit", W: 12, Description: "Of the events reconciliation checked over 6 hours, the share that had not arrived by webhook (ClosedloopWebhooksMissing above 2 %).",
					Queries: []Query{{`sum by (source) (increase(closedloop_reconcile_found_total[6h])) / clamp_min(sum by (source) (increase(closedloop_reconcile_checked_total[6h])), 1)`, "{{source}}"}}},
				{Title: "Schema drift", Unit: "short", W: 8, Description: "New payload fields per provider and event type (closedloopctl drift ls).",
					Queries: []Query{{`sum by (provider, event_type) (increase(closedloop_normalizer_schema_drift_total[1h]))`, "{{provider}} {{event_type}}"}}},
				{Title: "Loop closure, last 24 h", Kind: "stat", Unit: "percentunit", W: 12, Description: "Share of the last day's detractors with a helpdesk ticket, and with the ticket solved (sink-warehouse).",
					Queries: []Query{{`max(closedloop_loop_ticketed_ratio)`, "ticketed"}, {`max(closedloop_loop_solved_ratio)`, "solved"}}},
				{Title: "Detractor to solved ticket (median)", Kind: "stat", Unit: "s", W: 12, Description: "Median time from the detractor's response to its ticket solved, last 24 h.",
					Queries: []Query{{`max(closedloop_loop_closure_time_median_seconds)`, "median"}}},
			}},
		},
	}
}

func destination() Dashboard {
	sel := `sink=~"$sink", destination=~"$destination"`
	fsel := `stage=~"$sink", destination=~"$destination"`
	return Dashboard{
		File: "closedloop-destination.json", UID: "closedloop-destination", Title: "closedloop / destination",
		Description: "One sink destination (the warehouse, a webhook endpoint, a helpdesk, Slack): deliveries, failures by class, the destination's answer time, freshness against the 60 s SLO, breaker, backlog and dead letters. Pick it with the variables (or repeat the dashboard per destination).",
		Variables: []Variable{
			{"sink", "Sink", "label_values(closedloop_sink_delivered_total, sink)"},
			{"destination", "Destination", `label_values(closedloop_sink_delivered_total{sink=~"$sink"}, destination)`},
		},
		Rows: []Row{
			{"Deliveries", []Panel{
				{Title: "Delivered and failed per second", Unit: "ops", Description: "Events delivered, failed attempts by error class (retried), and events dead-lettered.",
					Queries: []Query{
						{`sum by (destination) (rate(closedloop_sink_delivered_total{` + sel + `}` + rate + `))`, "delivered {{destination}}"},
						{`sum by (destination, class) (rate(closedloop_sink_failed_total{` + sel + `}` + rate + `))`, "failed {{destination}} {{class}}"},
						{`sum by (destination, class) (rate(closedloop_sink_dead_lettered_total{` + sel + `}` + rate + `))`, "dead {{destination}} {{class}}"}}},
				{Title: "Destination answer time (p50, p99)", Unit: "s", Description: "How long the destination takes to answer one delivery call (a batch or one event).",
					Queries: []Query{
						{`histogram_quantile(0.5, sum by (le, destination) (rate(closedloop_sink_delivery_duration_seconds_bucket{` + sel + `}` + rate + `)))`, "p50 {{destination}}"},
						{`histogram_quantile(0.99, sum by (le, destination) (rate(closedloop_sink_delivery_duration_seconds_bucket{` + sel + `}` + rate + `)))`, "p99 {{destination}}"}}},
				{Title: "Retry rounds per second", Unit: "ops", W: 8, Description: "Delivery rounds retried after a backoff.",
					Queries: []Query{{`sum by (destination) (rate(closedloop_sink_retries_total{` + sel + `}` + rate + `))`, "{{destination}}"}}},
				{Title: "Failure ratio", Unit: "percentunit", W: 8, Description: "Failed attempts over all attempts (ClosedloopDestinationFailing fires above 20 %).",
					Queries: []Query{{`sum by (destination) (rate(closedloop_sink_failed_total{` + sel + `}` + rate + `)) / clamp_min(sum by (destination) (rate(closedloop_sink_failed_total{` + sel + `}` + rate + `)) + sum by (destination) (rate(closedloop_sink_delivered_total{` + sel + `}` + rate + `)), 1e-9)`, "{{destination}}"}}},
				{Title: "Breaker", Kind: "state-timeline", Unit: "short", W: 8, Description: "closed, open (failing; paused), half-open (probing), paused by an operator.",
					Mappings: map[string]string{"0": "closed", "1": "open", "2": "half-open", "3": "paused"},
					Queries:  []Query{{`max by (destination) (closedloop_sink_breaker_state{` + sel + `})`, "{{destination}}"}}},
			}},
			{"Freshness", []Panel{
				{Title: "Webhook to delivered (p50, p90, p99)", Unit: "s", Description: "From the webhook's arrival to the destination accepting the event.",
					Queries: []Query{
						{`histogram_quantile(0.5, sum by (le, destination) (rate(closedloop_freshness_seconds_bucket{` + fsel + `}` + rate + `)))`, "p50 {{destination}}"},
						{`histogram_quantile(0.9, sum by (le, destination) (rate(closedloop_freshness_seconds_bucket{` + fsel + `}` + rate + `)))`, "p90 {{destination}}"},
						{`histogram_quantile(0.99, sum by (le, destination) (rate(closedloop_freshness_seconds_bucket{` + fsel + `}` + rate + `)))`, "p99 {{destination}}"}}},
				{Title: "Later than 60 s (SLO: under 1 %)", Unit: "percentunit", Description: "Share of events delivered over 60 s after the webhook, over 5 minutes and 1 hour (recording rules).",
					Queries: []Query{
						{`closedloop:freshness_over_60s:ratio_rate5m{` + fsel + `}`, "5m {{destination}}"},
						{`closedloop:freshness_over_60s:ratio_rate1h{` + fsel + `}`, "1h {{destination}}"}}},
			}},
			{"Backlog", []Panel{
				{Title: "Lag of the sink", Unit: "short", Description: "Records the sink's consumer groups have not committed.",
					Queries: []Query{{`sum by (stage) (closedloop_pipeline_lag{stage=~"$sink.*"})`, "{{stage}}"}}},
				{Title: "Dead letters waiting", Kind: "stat", Unit: "short", Description: "Of the sink, neither replayed nor discarded.",
					Thresholds: []Threshold{{nil, "green"}, {f(1), "orange"}},
					Queries:    []Query{{`max by (sink) (closedloop_dlq_depth{sink=~"$sink"})`, "{{sink}}"}}},
			}},
		},
	}
}

// Render returns a dashboard as Grafana's JSON model.
func Render(d Dashboard) ([]byte, error) {
	panels := []any{}
	id, y := 1, 0
	for _, row := range d.Rows {
		panels = append(panels, map[string]any{"id": id, "type": "row", "title": row.Title, "collapsed": false,
			"gridPos": map[string]int{"x": 0, "y": y, "w": 24, "h": 1}, "panels": []any{}})
		id++
		y++
		x, rowH := 0, 0
		for _, p := range row.Panels {
			w, h := p.W, p.H
			if w == 0 {
				w = 12
			}
			if h == 0 {
				h = 8
			}
			if x+w > 24 {
				x, y = 0, y+rowH
				rowH = 0
			}
			kind := p.Kind
			if kind == "" {
				kind = "timeseries"
			}
			targets := []any{}
			for i, q := range p.Queries {
				targets = append(targets, map[string]any{"refId": string(rune('A' + i)), "expr": q.Expr, "legendFormat": q.Legend,
					"datasource": map[string]string{"type": "prometheus", "uid": "${datasource}"}})
			}
			defaults := map[string]any{"unit": p.Unit}
			if p.Max != nil {
				defaults["max"] = *p.Max
			}
			steps := []any{}
			for _, t := range p.Thresholds {
				steps = append(steps, map[string]any{"value": t.Value, "color": t.Color})
			}
			if len(steps) == 0 {
				steps = append(steps, map[string]any{"value": nil, "color": "green"})
			}
			defaults["thresholds"] = map[string]any{"mode": "absolute", "steps": steps}
			if len(p.Mappings) > 0 {
				opts := map[string]any{}
				keys := make([]string, 0, len(p.Mappings))
				for k := range p.Mappings {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				colors := map[string]string{"closed": "green", "open": "red", "half-open": "orange", "paused": "blue"}
				for i, k := range keys {
					opts[k] = map[string]any{"text": p.Mappings[k], "index": i, "color": colors[p.Mappings[k]]}
				}
				defaults["mappings"] = []any{map[string]any{"type": "value", "options": opts}}
			}
			panels = append(panels, map[string]any{
				"id": id, "type": kind, "title": p.Title, "description": p.Description,
				"datasource":  map[string]string{"type": "prometheus", "uid": "${datasource}"},
				"gridPos":     map[string]int{"x": x, "y": y, "w": w, "h": h},
				"targets":     targets,
				"fieldConfig": map[string]any{"defaults": defaults, "overrides": []any{}},
				"options":     options(kind),
			})
			id++
			x += w
			rowH = max(rowH, h)
		}
		y += rowH
	}
	vars := []any{map[string]any{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
		"current": map[string]any{"text": "default", "value": "default"}, "hide": 0}}
	for _, v := range d.Variables {
		vars = append(vars, map[string]any{
			"name": v.Name, "label": v.Label, "type": "query", "query": map[string]any{"query": v.Query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
			"definition": v.Query, "datasource": map[string]string{"type": "prometheus", "uid": "${datasource}"},
			"includeAll": true, "allValue": ".*", "multi": true, "refresh": 2, "sort": 1, "hide": 0,
			"current": map[string]any{"text": []string{"All"}, "value": []string{"$__all"}},
		})
	}
	model := map[string]any{
		"uid": d.UID, "title": d.Title, "description": d.Description, "tags": []string{"closedloop"},
		"schemaVersion": 39, "version": 1, "editable": true, "graphTooltip": 1, "refresh": "30s",
		"time":        map[string]string{"from": "now-3h", "to": "now"},
		"timezone":    "browser",
		"templating":  map[string]any{"list": vars},
		"annotations": map[string]any{"list": []any{}},
		"links": []any{map[string]any{"title": "closedloop dashboards", "type": "dashboards", "tags": []string{"closedloop"}, "asDropdown": true,
			"icon": "external link", "tooltip": "", "targetBlank": false, "includeVars": true, "keepTime": true}},
		"panels": panels,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(model); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// options are a panel kind's display options, complete (Grafana's schema
// requires every one).
func options(kind string) map[string]any {
	legend := map[string]any{"showLegend": true, "displayMode": "list", "placement": "bottom", "calcs": []string{}}
	tooltip := map[string]any{"mode": "multi", "sort": "desc"}
	switch kind {
	case "stat":
		return map[string]any{
			"reduceOptions": map[string]any{"values": false, "calcs": []string{"lastNotNull"}, "fields": ""},
			"orientation":   "auto", "textMode": "value_and_name", "wideLayout": true, "colorMode": "value", "graphMode": "area",
			"justifyMode": "auto", "showPercentChange": false, "percentChangeColorMode": "standard",
		}
	case "state-timeline":
		return map[string]any{"legend": legend, "tooltip": tooltip, "showValue": "auto", "rowHeight": 0.9, "mergeValues": true, "alignValue": "left"}
	default:
		return map[string]any{"legend": legend, "tooltip": tooltip}
	}
}

// Dirs are where the files go: the canonical copy (compose mounts it) and
// the chart's (a chart reads only its own files).
var Dirs = []string{"deploy/grafana/dashboards", "deploy/helm/closedloop/files/dashboards"}

func main() {
	check := flag.Bool("check", false, "fail when the files are not what this program writes")
	root := flag.String("root", ".", "the repository")
	flag.Parse()
	stale := 0
	for _, d := range Dashboards() {
		b, err := Render(d)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dashboards:", err)
			os.Exit(1)
		}
		for _, dir := range Dirs {
			path := filepath.Join(*root, dir, d.File)
			if *check {
				if old, err := os.ReadFile(path); err != nil || !bytes.Equal(old, b) {
					fmt.Fprintf(os.Stderr, "dashboards: %s is not up to date: go run ./tools/dashboards -root .\n", path)
					stale++
				}
				continue
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				fmt.Fprintln(os.Stderr, "dashboards:", err)
				os.Exit(1)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "dashboards:", err)
				os.Exit(1)
			}
		}
	}
	if stale > 0 {
		os.Exit(1)
	}
}
