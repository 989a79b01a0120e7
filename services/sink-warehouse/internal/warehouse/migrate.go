// Package warehouse writes FeedbackEvents to PostgreSQL: an append-only
// table with system columns (as Stitch's _sdc_* columns: when the event was
// received, when the row was batched, a sequence ordering the versions of a
// subject) plus typed columns for what analysts query, the provider's body
// as bytes and the rest of the event as JSONB, and a view with the latest
// version of every subject. Writes are idempotent on event_id.
package warehouse

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are applied in order, each once, recorded in schema_migrations.
// Never edit one that has shipped: add another.
var migrations = []string{
	// 1–4: the append-only table, its indexes and the latest-version view.
	`CREATE TABLE {{schema}}.feedback_events (
		_cl_row_id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		_cl_received_at   TIMESTAMPTZ NOT NULL,
		_cl_batched_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
		_cl_sequence      BIGINT NOT NULL,
		event_id          TEXT NOT NULL UNIQUE,
		source            TEXT NOT NULL,
		provider          TEXT NOT NULL,
		kind              TEXT NOT NULL,
		provider_event_type TEXT NOT NULL,
		subject_type      TEXT NOT NULL,
		subject_id        TEXT NOT NULL,
		version           TIMESTAMPTZ,
		occurred_at       TIMESTAMPTZ,
		survey_type       TEXT,
		score             DOUBLE PRECISION,
		score_min         DOUBLE PRECISION,
		score_max         DOUBLE PRECISION,
		segment           TEXT,
		comment           TEXT,
		respondent_id     TEXT,
		respondent_email  TEXT,
		respondent_name   TEXT,
		tags              TEXT[] NOT NULL DEFAULT '{}',
		is_test           BOOLEAN NOT NULL DEFAULT false,
		replay_id         TEXT,
		trace_id          TEXT,
		event             JSONB NOT NULL
	)`,
	`CREATE INDEX feedback_events_subject_idx ON {{schema}}.feedback_events (source, subject_type, subject_id, _cl_sequence DESC, _cl_row_id DESC)`,
	`CREATE INDEX feedback_events_occurred_idx ON {{schema}}.feedback_events (occurred_at)`,
	`CREATE VIEW {{schema}}.feedback_latest AS
		SELECT DISTINCT ON (source, subject_type, subject_id) *
		FROM {{schema}}.feedback_events
		ORDER BY source, subject_type, subject_id, _cl_sequence DESC, _cl_row_id DESC`,
	// 5–6: the enricher's routing (lane, labels); the view gains them too.
	`ALTER TABLE {{schema}}.feedback_events ADD COLUMN lane TEXT, ADD COLUMN labels TEXT[] NOT NULL DEFAULT '{}'`,
	`CREATE OR REPLACE VIEW {{schema}}.feedback_latest AS
		SELECT DISTINCT ON (source, subject_type, subject_id) *
		FROM {{schema}}.feedback_events
		ORDER BY source, subject_type, subject_id, _cl_sequence DESC, _cl_row_id DESC`,
	// 7–11: the helpdesks' follow-ups (kind follow_up: the ticket opened
	// for a response) and the loop_closure view joining them to the
	// detractors (docs/destinations.md, "Closing the loop").
	`ALTER TABLE {{schema}}.feedback_events ADD COLUMN response_key TEXT, ADD COLUMN ticket_system TEXT,
		ADD COLUMN ticket_id TEXT, ADD COLUMN ticket_stage TEXT, ADD COLUMN ticket_created_at TIMESTAMPTZ`,
	`CREATE OR REPLACE VIEW {{schema}}.feedback_latest AS
		SELECT DISTINCT ON (source, subject_type, subject_id) *
		FROM {{schema}}.feedback_events
		ORDER BY source, subject_type, subject_id, _cl_sequence DESC, _cl_row_id DESC`,
	`CREATE INDEX feedback_events_detractors_idx ON {{schema}}.feedback_events (_cl_received_at) WHERE segment = 'detractor'`,
	`CREATE INDEX feedback_events_follow_ups_idx ON {{schema}}.feedback_events (response_key, _cl_received_at) WHERE kind = 'follow_up'`,
	// loop_closure_since(t): one row per detractor response first received
	// since t (test events excluded) and ticket opened for it (none: the
	// ticket columns are null): when the detractor arrived, when the
	// helpdesk created the ticket, the first public agent reply, the first
	// time it was solved (or closed), its latest stage, and the durations
	// from the detractor's arrival (never below zero: the helpdesks' times
	// have whole seconds, and clocks differ). loop_closure is the whole
	// history.
	`CREATE FUNCTION {{schema}}.loop_closure_since(since TIMESTAMPTZ) RETURNS TABLE (
		response_key TEXT, source TEXT, response_id TEXT, detractor_event_id TEXT, respondent_email TEXT,
		score DOUBLE PRECISION, survey_type TEXT, labels TEXT[], detractor_received_at TIMESTAMPTZ,
		ticket_system TEXT, ticket_id TEXT, ticket_created_at TIMESTAMPTZ, first_reply_at TIMESTAMPTZ,
		solved_at TIMESTAMPTZ, ticket_stage TEXT,
		time_to_ticket INTERVAL, time_to_first_reply INTERVAL, time_to_solved INTERVAL)
	LANGUAGE sql STABLE AS $$
		WITH detractors AS (
			SELECT DISTINCT ON (e.source, e.subject_type, e.subject_id)
				e.source || '/' || e.subject_type || '/' || e.subject_id AS response_key, e.source, e.subject_id AS response_id,
				e.event_id AS detractor_event_id, e.respondent_email, e.score, e.survey_type, e.labels,
				e._cl_received_at AS detractor_received_at
			FROM {{schema}}.feedback_events e
			WHERE e.segment = 'detractor' AND e._cl_received_at >= since AND NOT e.is_test AND e.kind <> 'follow_up'
			ORDER BY e.source, e.subject_type, e.subject_id, e._cl_received_at, e._cl_row_id
		), tickets AS (
			SELECT f.response_key, f.ticket_system, f.ticket_id,
				min(coalesce(f.ticket_created_at, CASE WHEN f.ticket_stage = 'created' THEN f.occurred_at END)) AS ticket_created_at,
				min(f.occurred_at) FILTER (WHERE f.ticket_stage = 'agent_replied') AS first_reply_at,
				min(f.occurred_at) FILTER (WHERE f.ticket_stage IN ('solved', 'closed')) AS solved_at,
				(array_agg(f.ticket_stage ORDER BY f.occurred_at DESC, f._cl_row_id DESC))[1] AS ticket_stage
			FROM {{schema}}.feedback_events f
			WHERE f.kind = 'follow_up' AND f.response_key IN (SELECT d.response_key FROM detractors d) AND NOT f.is_test
			GROUP BY f.response_key, f.ticket_system, f.ticket_id
		)
		SELECT d.response_key, d.source, d.response_id, d.detractor_event_id, d.respondent_email, d.score, d.survey_type,
			d.labels, d.detractor_received_at, t.ticket_system, t.ticket_id, t.ticket_created_at, t.first_reply_at,
			t.solved_at, t.ticket_stage,
			CASE WHEN t.ticket_created_at IS NOT NULL THEN greatest(t.ticket_created_at - d.detractor_received_at, interval '0') END,
			CASE WHEN t.first_reply_at IS NOT NULL THEN greatest(t.first_reply_at - d.detractor_received_at, interval '0') END,
			CASE WHEN t.solved_at IS NOT NULL THEN greatest(t.solved_at - d.detractor_received_at, interval '0') END
		FROM detractors d LEFT JOIN tickets t ON t.response_key = d.response_key
	$$`,
	`CREATE VIEW {{schema}}.loop_closure AS SELECT * FROM {{schema}}.loop_closure_since('-infinity')`,
	// 12–13: each unsubscribe's propagation to each CRM (Propagation
	// records of closedloop.unsubscribes.v1): who, which CRM, when
	// received, when applied, how long it took, the result.
	`CREATE TABLE {{schema}}.unsubscribe_propagations (
		event_id     TEXT NOT NULL,
		destination  TEXT NOT NULL,
		kind         TEXT NOT NULL,
		sink         TEXT NOT NULL,
		email        TEXT NOT NULL,
		person_id    TEXT,
		source       TEXT NOT NULL,
		provider     TEXT NOT NULL,
		received_at  TIMESTAMPTZ NOT NULL,
		occurred_at  TIMESTAMPTZ,
		applied_at   TIMESTAMPTZ NOT NULL,
		took         INTERVAL GENERATED ALWAYS AS (applied_at - received_at) STORED,
		result       TEXT NOT NULL,
		detail       TEXT NOT NULL DEFAULT '',
		attempts     INT NOT NULL,
		_cl_recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
		PRIMARY KEY (event_id, destination)
	)`,
	`CREATE INDEX unsubscribe_propagations_email_idx ON {{schema}}.unsubscribe_propagations (lower(email), applied_at DESC)`,
	// 14: the event column (~2.5 KB of JSON with the inline raw payload,
	// over PostgreSQL's 2 KB threshold, so compressed in every row) with
	// lz4 rather than pglz: the same size, 36 instead of 57–61 µs of
	// PostgreSQL's CPU per row inserted (docs/benchmarks.md). A server
	// built without lz4 (or before PostgreSQL 14) keeps pglz. Rows written
	// before stay as they are.
	`DO $$ BEGIN
		EXECUTE 'ALTER TABLE {{schema}}.feedback_events ALTER COLUMN event SET COMPRESSION lz4';
	EXCEPTION WHEN feature_not_supported OR syntax_error THEN
		RAISE NOTICE 'feedback_events.event stays compressed with pglz: %', SQLERRM;
	END $$`,
	// 15–17: the provider's body in its own column, as bytes (compressed
	// with lz4 where the server has it), no longer base64 inside the event
	// document: PostgreSQL parsed the ~2 KB string of every row character
	// by character, a quarter of its CPU per row (docs/benchmarks.md). Rows
	// written before keep it in event (docs/architecture.md, "Warehouse").
	`ALTER TABLE {{schema}}.feedback_events ADD COLUMN raw_payload BYTEA`,
	`DO $$ BEGIN
		EXECUTE 'ALTER TABLE {{schema}}.feedback_events ALTER COLUMN raw_payload SET COMPRESSION lz4';
	EXCEPTION WHEN feature_not_supported OR syntax_error THEN
		RAISE NOTICE 'feedback_events.raw_payload stays compressed with pglz: %', SQLERRM;
	END $$`,
	`CREATE OR REPLACE VIEW {{schema}}.feedback_latest AS
		SELECT DISTINCT ON (source, subject_type, subject_id) *
		FROM {{schema}}.feedback_events
		ORDER BY source, subject_type, subject_id, _cl_sequence DESC, _cl_row_id DESC`,
}

// Migrate creates the schema and applies pending migrations. Concurrent
// replicas serialise on an advisory lock, so exactly one applies each.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext('closedloop-migrate-' || $1))`, schema); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('closedloop-migrate-' || $1))`, schema) //nolint:errcheck
	q := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+q); err != nil {
		return fmt.Errorf("migrate: create schema %s: %w", schema, err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+q+`.schema_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+q+`.schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for i := current; i < len(migrations); i++ {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		stmt := strings.ReplaceAll(migrations[i], "{{schema}}", q)
		if _, err := tx.Exec(ctx, stmt); err != nil {
			_ = tx.Rollback(ctx)
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+q+`.schema_migrations (version) VALUES ($1)`, i+1); err != nil {
			_ = tx.Rollback(ctx)
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return nil
}
