package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/config"
	"github.com/closedloop/closedloop/libs/fault"
	"github.com/closedloop/closedloop/libs/kafkaio"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	"github.com/closedloop/closedloop/services/admin/internal/dlq"
	"github.com/closedloop/closedloop/services/admin/internal/replay"
)

type failingProducer struct{}

func (failingProducer) Produce(context.Context, ...kafkaio.Record) error {
	return errors.New("kafka: Leader Not Available: the required leader is not available")
}

func (failingProducer) ProduceEach(_ context.Context, recs ...kafkaio.Record) []error {
	errs := make([]error, len(recs))
	for i := range errs {
		errs[i] = errors.New("kafka: Not Enough Replicas")
	}
	return errs
}

// What the admin answers for each kind of mistake or failure, as the client
// sees it after the one mapping at the edge (fault.GRPC, which every
// service's gRPC server applies). A message that happens to contain a word
// ("required") changes nothing.
func TestErrorsMapToTheirCodes(t *testing.T) {
	topics := kafkaio.Topics{Raw: "raw", Normalized: "norm"}
	brokers := []string{"127.0.0.1:1"} // nothing listens: Kafka is down
	s := New(Options{
		Pipeline: func() *config.Pipeline {
			return &config.Pipeline{Sources: []config.Source{{Name: "delighted", Provider: "delighted"}}}
		},
		DLQ:     dlq.New(brokers, topics, failingProducer{}),
		Replays: replay.New(brokers, topics, []string{"sink-warehouse"}, failingProducer{}, slog.New(slog.NewTextHandler(io.Discard, nil))),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	since := timestamppb.New(time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"malformed dead letter id", func() error {
			_, err := s.GetDeadLetter(ctx, &adminv1.GetDeadLetterRequest{Id: "not-an-id"})
			return err
		}, codes.InvalidArgument},
		{"dead letter id with a bad offset", func() error {
			_, err := s.ReplayDeadLetters(ctx, &adminv1.ReplayDeadLettersRequest{Ids: []string{"sink-warehouse/0/x"}})
			return err
		}, codes.InvalidArgument},
		{"ids and a filter", func() error {
			_, err := s.DiscardDeadLetters(ctx, &adminv1.DiscardDeadLettersRequest{Ids: []string{"a/0/1"}, Filter: &adminv1.DeadLetterFilter{Sink: "a"}})
			return err
		}, codes.InvalidArgument},
		{"list without a sink", func() error {
			_, err := s.ListDeadLetters(ctx, &adminv1.ListDeadLettersRequest{Filter: &adminv1.DeadLetterFilter{}})
			return err
		}, codes.InvalidArgument},
		{"dead letters while Kafka is down", func() error {
			_, err := s.ListDeadLetters(ctx, &adminv1.ListDeadLettersRequest{Filter: &adminv1.DeadLetterFilter{Sink: "sink-warehouse"}})
			return err
		}, codes.Unavailable},
		{"a replay job Kafka cannot record", func() error {
			_, err := s.StartReplay(ctx, &adminv1.StartReplayRequest{From: adminv1.ReplayFrom_REPLAY_FROM_RAW, Since: since})
			return err
		}, codes.Unavailable},
		{"a replay without since", func() error {
			_, err := s.StartReplay(ctx, &adminv1.StartReplayRequest{From: adminv1.ReplayFrom_REPLAY_FROM_RAW})
			return err
		}, codes.InvalidArgument},
		{"a replay into an unknown sink", func() error {
			_, err := s.StartReplay(ctx, &adminv1.StartReplayRequest{From: adminv1.ReplayFrom_REPLAY_FROM_NORMALIZED, Sink: "nosuch", Since: since})
			return err
		}, codes.InvalidArgument},
		{"an unknown job", func() error {
			_, err := s.CancelReplay(ctx, &adminv1.CancelReplayRequest{Id: "rj_nosuch"})
			return err
		}, codes.NotFound},
		{"an unknown source", func() error {
			_, err := s.IssueIngestToken(ctx, &adminv1.IssueIngestTokenRequest{Source: "nosuch"})
			return err
		}, codes.NotFound},
		{"pause without a sink", func() error {
			_, err := s.PauseSink(ctx, &adminv1.PauseSinkRequest{})
			return err
		}, codes.InvalidArgument},
		{"pause of a sink with no known instances", func() error {
			_, err := s.PauseSink(ctx, &adminv1.PauseSinkRequest{Sink: "sink-nosuch"})
			return err
		}, codes.NotFound},
	} {
		err := tc.call()
		if got := status.Code(fault.GRPC(err)); got != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
}
