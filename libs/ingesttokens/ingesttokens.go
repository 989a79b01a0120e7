// Package ingesttokens stores the secret URL tokens of the webhook sources
// in a compacted, single-partition Kafka control topic — the way Kafka
// Connect keeps its configuration — so that every ingress replica follows
// the same set and a token issued or revoked anywhere works or stops working
// everywhere within a second.
//
// Only SHA-256 digests are stored. A token is "cl_" and 32 random bytes in
// base64url (256 bits). A source has at most two active tokens: the current
// one and the one being rotated out.
package ingesttokens

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/kafkaio"
	controlv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/control/v1"
)

// MaxActive is how many tokens a source may have at once.
const MaxActive = 2

// ErrTooMany is returned by Issue when the source already has MaxActive tokens.
var ErrTooMany = errors.New("the source already has 2 active ingest tokens: revoke the older one first")

// TopicSpec is how the control topic is created: one partition (a total
// order of issues and revocations) and compaction (the latest record per
// token is all that is kept).
func TopicSpec(replication int) kafkaio.TopicSpec {
	return kafkaio.TopicSpec{Partitions: 1, ReplicationFactor: replication, Configs: kafkaio.ControlConfigs()}
}

// Token is an active token without its secret.
type Token struct {
	Source    string
	ID        string
	CreatedAt time.Time
	CreatedBy string
	digest    [sha256.Size]byte
}

// Store follows the control topic and answers Match from memory.
type Store struct {
	brokers []string
	topic   string
	log     *slog.Logger

	mu       sync.RWMutex
	bySource map[string][]Token
	ready    atomic.Bool
}

// NewStore returns a store of topic; call Run to follow it.
func NewStore(brokers []string, topic string, log *slog.Logger) *Store {
	return &Store{brokers: brokers, topic: topic, log: log, bySource: map[string][]Token{}}
}

// Ready reports whether the store has read the topic up to its end once.
func (s *Store) Ready() bool { return s.ready.Load() }

// Check is a readiness check: an ingress must not answer 404 to a valid
// token just because it has not caught up yet.
func (s *Store) Check(context.Context) error {
	if !s.Ready() {
		return errors.New("ingest tokens not loaded from " + s.topic + " yet")
	}
	return nil
}

// Run follows the topic from its beginning until ctx ends. When the broker
// is unreachable it keeps the tokens it has (an ingress goes on answering
// with what it knew) and retries; it only returns when ctx ends.
func (s *Store) Run(ctx context.Context) error {
	next := kafka.FirstOffset
	end := int64(-1)
	for failures := 0; ; failures++ {
		if failures > 0 {
			if failures == 1 || failures%20 == 0 {
				s.log.Warn("ingest token topic unreachable; retrying", "topic", s.topic, "failures", failures)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(min(time.Duration(failures)*200*time.Millisecond, 5*time.Second)):
			}
		}
		if end < 0 {
			var err error
			if end, err = lastOffset(ctx, s.brokers, s.topic); err != nil {
				end = -1
				continue
			}
			if end == 0 {
				s.markReady()
			}
		}
		var progressed bool
		next, progressed = s.follow(ctx, next, end)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			failures = 0
		}
	}
}

// followWait bounds each fetch of the topic. The broker answers as soon as
// a record arrives (MinBytes 1), so it does not delay a token; it is how
// often an idle ingress asks. At 200 ms that was 5–7 fetches a second for
// nothing, a third of an idle ingress's CPU; a longer wait delays the
// ingress's shutdown by at most that (the reader's fetch is not cancelled).
const followWait = time.Second

// follow reads from offset until an error or ctx ends and returns the next
// offset to read.
func (s *Store) follow(ctx context.Context, offset, end int64) (int64, bool) {
	r := kafkaio.NewReader(kafka.ReaderConfig{
		Brokers: s.brokers, Topic: s.topic, Partition: 0, StartOffset: kafka.FirstOffset,
		MinBytes: 1, MaxBytes: 4 << 20, MaxWait: followWait, MaxAttempts: 1,
	})
	defer r.Close()
	if offset != kafka.FirstOffset {
		if err := r.SetOffset(offset); err != nil {
			return offset, false
		}
	}
	progressed := false
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return offset, progressed
		}
		progressed = true
		s.apply(m)
		offset = m.Offset + 1
		if m.Offset >= end-1 || m.Offset >= m.HighWaterMark-1 {
			s.markReady()
		}
	}
}

func (s *Store) markReady() {
	if !s.ready.Swap(true) {
		s.mu.RLock()
		n := len(s.bySource)
		s.mu.RUnlock()
		s.log.Info("ingest tokens loaded", "topic", s.topic, "sources_with_tokens", n)
	}
}

func (s *Store) apply(m kafka.Message) {
	source, id, ok := strings.Cut(string(m.Key), "/")
	if !ok {
		s.log.Warn("ignoring a control record with a malformed key", "topic", s.topic, "offset", m.Offset)
		return
	}
	var add *Token
	if m.Value != nil { // a nil value is a tombstone: the token is revoked
		var it controlv1.IngestToken
		if err := proto.Unmarshal(m.Value, &it); err != nil || len(it.Sha256) != sha256.Size || it.Source != source || it.TokenId != id {
			s.log.Warn("ignoring an unreadable control record", "topic", s.topic, "offset", m.Offset)
			return
		}
		add = &Token{Source: source, ID: id, CreatedAt: it.CreatedAt.AsTime(), CreatedBy: it.CreatedBy}
		copy(add.digest[:], it.Sha256)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []Token
	for _, t := range s.bySource[source] {
		if t.ID != id {
			list = append(list, t)
		}
	}
	if add != nil {
		list = append(list, *add)
	}
	// Newest first; if a race left more than MaxActive, only the newest count.
	sort.Slice(list, func(i, j int) bool { return list[i].CreatedAt.After(list[j].CreatedAt) })
	if len(list) > MaxActive {
		list = list[:MaxActive]
	}
	if len(list) == 0 {
		delete(s.bySource, source)
	} else {
		s.bySource[source] = list
	}
}

// Match reports in constant time whether token is an active token of source.
func (s *Store) Match(source, token string) bool {
	return s.MatchDigest(source, config.TokenDigest(token))
}

// MatchDigest is Match for a token's config.TokenDigest.
func (s *Store) MatchDigest(source string, sum [sha256.Size]byte) bool {
	s.mu.RLock()
	list := s.bySource[source]
	s.mu.RUnlock()
	match := 0
	for i := range list {
		match |= subtle.ConstantTimeCompare(sum[:], list[i].digest[:])
	}
	return match == 1
}

// Active lists the active tokens of a source, newest first.
func (s *Store) Active(source string) []Token {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]Token(nil), s.bySource[source]...)
}

// Issue creates a token for source and returns it: this is the only time the
// token exists in clear. It fails with ErrTooMany when the source has
// MaxActive tokens already (as this store sees them).
func (s *Store) Issue(ctx context.Context, p *kafkaio.Producer, source, by string) (string, Token, error) {
	if len(s.Active(source)) >= MaxActive {
		return "", Token{}, ErrTooMany
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", Token{}, err
	}
	idb := make([]byte, 6)
	_, _ = rand.Read(idb)
	token := "cl_" + base64.RawURLEncoding.EncodeToString(raw)
	t := Token{Source: source, ID: hex.EncodeToString(idb), CreatedAt: time.Now().UTC(), CreatedBy: by, digest: config.TokenDigest(token)}
	v, err := proto.Marshal(&controlv1.IngestToken{Source: source, TokenId: t.ID, Sha256: t.digest[:], CreatedAt: timestamppb.New(t.CreatedAt), CreatedBy: by})
	if err != nil {
		return "", Token{}, err
	}
	if err := p.Produce(ctx, kafkaio.Record{Topic: s.topic, Key: []byte(source + "/" + t.ID), Value: v}); err != nil {
		return "", Token{}, fmt.Errorf("issue ingest token: %w", err)
	}
	return token, t, nil
}

// Revoke removes a token of source by id (a tombstone on the topic).
func (s *Store) Revoke(ctx context.Context, p *kafkaio.Producer, source, id string) error {
	if err := p.Produce(ctx, kafkaio.Record{Topic: s.topic, Key: []byte(source + "/" + id)}); err != nil {
		return fmt.Errorf("revoke ingest token: %w", err)
	}
	return nil
}

func lastOffset(ctx context.Context, brokers []string, topic string) (int64, error) {
	client := kafkaio.NewClient(brokers, 5*time.Second) // its own metadata cache (see kafkaio.EnsureTopics)
	defer client.Transport.(*kafka.Transport).CloseIdleConnections()
	resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(0)}}})
	if err != nil {
		return 0, fmt.Errorf("offsets of %s: %w", topic, err)
	}
	ps := resp.Topics[topic]
	if len(ps) == 0 {
		return 0, fmt.Errorf("offsets of %s: no partition 0", topic)
	}
	if ps[0].Error != nil {
		return 0, fmt.Errorf("offsets of %s: %w", topic, ps[0].Error)
	}
	return ps[0].LastOffset, nil
}
