// Package dlq is the admin service's view of the sinks' dead letters: the
// records on each sink's DLQ topic (feedback.dlq.<sink>.v1, read
// incrementally and kept in memory) joined with their resolutions on the
// compacted control topic closedloop.control.dlq-state.v1 (replayed under a
// replay id, or discarded; who and when). Kafka stays the record of truth:
// a restarted admin reads both topics again.
//
// A replay sends the dead letter's event, with a new replay id, to the
// sink's replay topic (feedback.replay.<sink>.v1) with a header naming the
// destination; only that sink (and destination) delivers it, once per
// replay id (its checkpoint key includes the replay id).
package dlq

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/kafkaio"
	"github.com/closedloop/closedloop/libs/sink"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	feedbackv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/feedback/v1"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
	"github.com/closedloop/closedloop/services/admin/internal/offsets"
	"github.com/closedloop/closedloop/services/admin/internal/randid"
)

// ErrNotFound is returned for an id that names no dead letter.
var ErrNotFound = fault.Errorf(fault.NotFound, "no such dead letter")

// Producer is the part of kafkaio.Producer the store needs.
type Producer interface {
	ProduceEach(ctx context.Context, recs ...kafkaio.Record) []error
}

// Entry is one dead letter.
type Entry struct {
	ID        string
	Partition int
	Offset    int64
	Key       []byte
	Letter    *sinkv1.DeadLetter
}

// Resolution is what an operator did with a dead letter.
type Resolution struct {
	State    string    `json:"state"` // "replayed" or "discarded"
	ReplayID string    `json:"replay_id,omitempty"`
	By       string    `json:"by"`
	At       time.Time `json:"at"`
	Reason   string    `json:"reason,omitempty"`
}

// Store reads and resolves dead letters. Safe for concurrent use.
type Store struct {
	topics   kafkaio.Topics
	brokers  []string
	offsets  *offsets.Reader
	producer Producer

	mu      sync.Mutex
	letters map[string]*sinkLetters // by sink
	state   map[string]Resolution   // by id
	stateAt int64                   // next offset of the state topic
}

type sinkLetters struct {
	next    map[int]int64 // next offset per partition
	entries []*Entry
	byID    map[string]*Entry
}

// New returns a store.
func New(brokers []string, topics kafkaio.Topics, producer Producer) *Store {
	return &Store{topics: topics, brokers: brokers, offsets: offsets.New(brokers), producer: producer,
		letters: map[string]*sinkLetters{}, state: map[string]Resolution{}}
}

// ID names a dead letter: "<sink>/<partition>/<offset>".
func ID(sinkName string, partition int, offset int64) string {
	return sinkName + "/" + strconv.Itoa(partition) + "/" + strconv.FormatInt(offset, 10)
}

func parseID(id string) (string, error) {
	parts := strings.Split(id, "/")
	if len(parts) != 3 || parts[0] == "" {
		return "", fault.Errorf(fault.Invalid, "dead letter id %q is not <sink>/<partition>/<offset>", id)
	}
	if _, err := strconv.Atoi(parts[1]); err != nil {
		return "", fault.Errorf(fault.Invalid, "dead letter id %q: partition is not a number", id)
	}
	if _, err := strconv.ParseInt(parts[2], 10, 64); err != nil {
		return "", fault.Errorf(fault.Invalid, "dead letter id %q: offset is not a number", id)
	}
	return parts[0], nil
}

// refresh reads what is new on the sink's DLQ topic and on the state topic.
// Callers hold s.mu.
func (s *Store) refresh(ctx context.Context, sinkName string) (*sinkLetters, error) {
	topic := s.topics.DLQ(sinkName)
	ends, err := s.offsets.Ends(ctx, []string{topic, s.topics.DLQState()})
	if err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("%w: %s has no dead-letter topic %s (is it a sink?)", ErrNotFound, sinkName, topic)
		}
		return nil, fault.Wrap(fault.Unavailable, fmt.Errorf("reading the dead letters of %s from Kafka: %w", sinkName, err))
	}
	sl := s.letters[sinkName]
	if sl == nil {
		sl = &sinkLetters{next: map[int]int64{}, byID: map[string]*Entry{}}
		s.letters[sinkName] = sl
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for p, end := range ends[topic] {
		err := offsets.ReadRange(ctx, s.brokers, topic, p, sl.next[p], end, func(m kafka.Message) (bool, error) {
			var dl sinkv1.DeadLetter
			if proto.Unmarshal(m.Value, &dl) == nil {
				e := &Entry{ID: ID(sinkName, p, m.Offset), Partition: p, Offset: m.Offset, Key: m.Key, Letter: &dl}
				sl.entries = append(sl.entries, e)
				sl.byID[e.ID] = e
			}
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		sl.next[p] = end
	}
	if end := ends[s.topics.DLQState()][0]; end > s.stateAt {
		err := offsets.ReadRange(ctx, s.brokers, s.topics.DLQState(), 0, s.stateAt, end, func(m kafka.Message) (bool, error) {
			var r Resolution
			switch {
			case m.Value == nil:
				delete(s.state, string(m.Key))
			case json.Unmarshal(m.Value, &r) == nil:
				s.state[string(m.Key)] = r
			}
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		s.stateAt = end
	}
	return sl, nil
}

// Summary describes an entry with its resolution.
func (s *Store) summary(sinkName string, e *Entry) *adminv1.DeadLetterSummary {
	dl := e.Letter
	out := &adminv1.DeadLetterSummary{Id: e.ID, Sink: sinkName, Destination: dl.Destination, EventId: dl.EventId,
		Provider: dl.Provider, ErrorClass: dl.ErrorClass, Error: dl.Error, Attempts: int32(len(dl.Attempts)), DeadAt: dl.DeadAt,
		State: adminv1.DeadLetterState_DEAD_LETTER_STATE_OPEN}
	if r, ok := s.state[e.ID]; ok {
		out.State = map[string]adminv1.DeadLetterState{"replayed": adminv1.DeadLetterState_DEAD_LETTER_STATE_REPLAYED,
			"discarded": adminv1.DeadLetterState_DEAD_LETTER_STATE_DISCARDED}[r.State]
		out.ReplayId, out.ResolvedBy = r.ReplayID, r.By
		out.ResolvedAt = timestamppb.New(r.At)
	}
	return out
}

// Select returns the entries matching f, newest first, with their summaries.
func (s *Store) Select(ctx context.Context, f *adminv1.DeadLetterFilter) ([]*adminv1.DeadLetterSummary, error) {
	if f.GetSink() == "" {
		return nil, fault.Errorf(fault.Invalid, "filter.sink is required (e.g. sink-warehouse)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, err := s.refresh(ctx, f.Sink)
	if err != nil {
		return nil, err
	}
	var out []*adminv1.DeadLetterSummary
	for _, e := range sl.entries {
		sum := s.summary(f.Sink, e)
		dl := e.Letter
		switch {
		case f.Destination != "" && dl.Destination != f.Destination,
			f.Provider != "" && dl.Provider != f.Provider,
			f.ErrorClass != sinkv1.ErrorClass_ERROR_CLASS_UNSPECIFIED && dl.ErrorClass != f.ErrorClass,
			f.Since != nil && dl.GetDeadAt().AsTime().Before(f.Since.AsTime()),
			f.Until != nil && !dl.GetDeadAt().AsTime().Before(f.Until.AsTime()),
			!f.IncludeResolved && sum.State != adminv1.DeadLetterState_DEAD_LETTER_STATE_OPEN:
			continue
		}
		out = append(out, sum)
	}
	sort.Slice(out, func(i, j int) bool { return less(out[j], out[i]) })
	return out, nil
}

// less orders summaries by time of death, then id.
func less(a, b *adminv1.DeadLetterSummary) bool {
	ta, tb := a.GetDeadAt().AsTime(), b.GetDeadAt().AsTime()
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return a.Id < b.Id
}

// Page cuts one page from a newest-first list; the token is the last
// entry's position.
func Page(all []*adminv1.DeadLetterSummary, size int, token string) ([]*adminv1.DeadLetterSummary, string, error) {
	start := 0
	if token != "" {
		b, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil {
			return nil, "", fault.Errorf(fault.Invalid, "page_token is not one this service returned")
		}
		at, id, _ := strings.Cut(string(b), "|")
		ns, err := strconv.ParseInt(at, 10, 64)
		if err != nil {
			return nil, "", fault.Errorf(fault.Invalid, "page_token is not one this service returned")
		}
		last := &adminv1.DeadLetterSummary{Id: id, DeadAt: timestamppb.New(time.Unix(0, ns))}
		start = sort.Search(len(all), func(i int) bool { return less(all[i], last) })
	}
	end := min(len(all), start+size)
	page := all[start:end]
	next := ""
	if end < len(all) && len(page) > 0 {
		l := page[len(page)-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(l.GetDeadAt().AsTime().UnixNano(), 10) + "|" + l.Id))
	}
	return page, next, nil
}

// Get returns one dead letter.
func (s *Store) Get(ctx context.Context, id string) (*adminv1.DeadLetterSummary, *sinkv1.DeadLetter, error) {
	sinkName, err := parseID(id)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, err := s.refresh(ctx, sinkName)
	if err != nil {
		return nil, nil, err
	}
	e := sl.byID[id]
	if e == nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return s.summary(sinkName, e), e.Letter, nil
}

// resolve picks the open entries named by ids or matching f.
func (s *Store) resolve(ctx context.Context, ids []string, f *adminv1.DeadLetterFilter) ([]*Entry, string, []string, error) {
	switch {
	case len(ids) > 0 && f != nil:
		return nil, "", nil, fault.Errorf(fault.Invalid, "give ids or a filter, not both")
	case len(ids) == 0 && f == nil:
		return nil, "", nil, fault.Errorf(fault.Invalid, "give the ids of the dead letters, or a filter")
	}
	if f != nil {
		sums, err := s.Select(ctx, &adminv1.DeadLetterFilter{Sink: f.Sink, Destination: f.Destination, Since: f.Since, Until: f.Until,
			ErrorClass: f.ErrorClass, Provider: f.Provider})
		if err != nil {
			return nil, "", nil, err
		}
		for _, s := range sums {
			ids = append(ids, s.Id)
		}
		if len(ids) == 0 {
			return nil, f.Sink, nil, nil
		}
	}
	sinkName, err := parseID(ids[0])
	if err != nil {
		return nil, "", nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, err := s.refresh(ctx, sinkName)
	if err != nil {
		return nil, "", nil, err
	}
	var out []*Entry
	var skipped []string
	seen := map[string]bool{}
	for _, id := range ids {
		sn, err := parseID(id)
		switch {
		case err != nil:
			skipped = append(skipped, id+": "+err.Error())
		case sn != sinkName:
			skipped = append(skipped, id+": another sink than "+sinkName+" (one sink per call)")
		case sl.byID[id] == nil:
			skipped = append(skipped, id+": not found")
		case s.state[id].State != "":
			skipped = append(skipped, id+": already "+s.state[id].State)
		case !seen[id]:
			seen[id] = true
			out = append(out, sl.byID[id])
		}
	}
	return out, sinkName, skipped, nil
}

// Replay sends the selected open dead letters back to their sink under a
// new replay id and marks them replayed.
func (s *Store) Replay(ctx context.Context, ids []string, f *adminv1.DeadLetterFilter, by string, dryRun bool) (string, int, []string, error) {
	entries, sinkName, skipped, err := s.resolve(ctx, ids, f)
	if err != nil || len(entries) == 0 || dryRun {
		return "", len(entries), skipped, err
	}
	replayID := randid.New("rp_", 8)
	recs := make([]kafkaio.Record, 0, len(entries))
	var sent []*Entry
	for _, e := range entries {
		value := e.Letter.Event
		if len(value) == 0 && e.Letter.EventOmittedBytes > 0 {
			// Too large to be copied into the dead letter: read it where it was consumed.
			v, err := s.sourceEvent(ctx, e.Letter)
			if err != nil {
				skipped = append(skipped, e.ID+": its event was not in the dead letter and could not be read from "+e.Letter.SourceTopic+": "+err.Error())
				continue
			}
			value = v
		}
		var ev feedbackv1.FeedbackEvent
		if err := proto.Unmarshal(value, &ev); err != nil {
			skipped = append(skipped, e.ID+": its event cannot be decoded: "+err.Error())
			continue
		}
		ev.ReplayId = replayID
		v, _ := proto.Marshal(&ev)
		recs = append(recs, kafkaio.Record{Topic: s.topics.Replay(sinkName), Key: e.Key, Value: v,
			Headers: []kafka.Header{{Key: sink.HeaderDestination, Value: []byte(e.Letter.Destination)},
				{Key: "closedloop-replay-of", Value: []byte(e.ID)}}})
		sent = append(sent, e)
	}
	errs := s.producer.ProduceEach(ctx, recs...)
	var marks []*Entry
	for i, e := range sent {
		if errs != nil && errs[i] != nil {
			skipped = append(skipped, e.ID+": replay not written: "+errs[i].Error())
			continue
		}
		marks = append(marks, e)
	}
	if len(marks) == 0 && len(sent) > 0 {
		return "", 0, skipped, fault.Wrap(fault.Unavailable, fmt.Errorf("writing the replays to %s: %w", s.topics.Replay(sinkName), firstError(errs)))
	}
	if err := s.mark(ctx, marks, Resolution{State: "replayed", ReplayID: replayID, By: by, At: time.Now().UTC()}); err != nil {
		return replayID, len(marks), skipped, fault.Errorf(fault.Partial, "replayed %d, but recording it failed (they may be listed as open): %w", len(marks), err)
	}
	return replayID, len(marks), skipped, nil
}

// sourceEvent reads the event of a dead letter that left it out at its
// source topic, partition and offset.
func (s *Store) sourceEvent(ctx context.Context, dl *sinkv1.DeadLetter) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var value []byte
	err := offsets.ReadRange(ctx, s.brokers, dl.SourceTopic, int(dl.SourcePartition), dl.SourceOffset, dl.SourceOffset+1, func(m kafka.Message) (bool, error) {
		if m.Offset == dl.SourceOffset {
			value = m.Value
		}
		return false, nil
	})
	if err != nil {
		return nil, fault.Wrap(fault.Unavailable, err)
	}
	if value == nil {
		return nil, fault.Errorf(fault.Conflict, "offset %d is no longer in the topic (retention)", dl.SourceOffset)
	}
	return value, nil
}

// Discard marks the selected open dead letters discarded.
func (s *Store) Discard(ctx context.Context, ids []string, f *adminv1.DeadLetterFilter, by, reason string, dryRun bool) (int, []string, error) {
	entries, _, skipped, err := s.resolve(ctx, ids, f)
	if err != nil || len(entries) == 0 || dryRun {
		return len(entries), skipped, err
	}
	if err := s.mark(ctx, entries, Resolution{State: "discarded", By: by, At: time.Now().UTC(), Reason: reason}); err != nil {
		return 0, skipped, fault.Wrap(fault.Unavailable, fmt.Errorf("recording the discard: %w", err))
	}
	return len(entries), skipped, nil
}

func (s *Store) mark(ctx context.Context, entries []*Entry, r Resolution) error {
	if len(entries) == 0 {
		return nil
	}
	v, _ := json.Marshal(r)
	recs := make([]kafkaio.Record, len(entries))
	for i, e := range entries {
		recs[i] = kafkaio.Record{Topic: s.topics.DLQState(), Key: []byte(e.ID), Value: v}
	}
	for _, err := range s.producer.ProduceEach(ctx, recs...) {
		if err != nil {
			return err
		}
	}
	s.mu.Lock()
	for _, e := range entries {
		s.state[e.ID] = r
	}
	s.mu.Unlock()
	return nil
}

// Depth counts a sink's unresolved dead letters.
func (s *Store) Depth(ctx context.Context, sinkName string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, err := s.refresh(ctx, sinkName)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range sl.entries {
		if s.state[e.ID].State == "" {
			n++
		}
	}
	return n, nil
}

func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return errors.New("no error recorded")
}
