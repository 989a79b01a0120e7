package sink

import (
	"context"
	"errors"
	"strconv"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/kafkaio"
	sinkv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/sink/v1"
)

func (r *Runner) deadLetter(batch []kafkaio.Delivery, p *pending, err error, class sinkv1.ErrorClass) kafkaio.Record {
	m := batch[p.idx].Msg
	ev := p.ev.Feedback
	dl := &sinkv1.DeadLetter{
		Sink: r.cfg.Sink, Destination: r.Name(), EventId: ev.EventId, Event: p.ev.Value,
		Error: truncate(err.Error(), 1024), ErrorClass: class, Attempts: p.attempts, DeadAt: timestamppb.New(r.cfg.Now()),
		SourceTopic: m.Topic, SourcePartition: int32(m.Partition), SourceOffset: m.Offset, Provider: ev.Provider, ReplayId: ev.ReplayId,
	}
	v, _ := proto.Marshal(dl)
	r.nDead.Add(1)
	r.dead.Add(p.ev.Ctx, 1, metric.WithAttributes(attribute.String("sink", r.cfg.Sink), attribute.String("destination", r.cfg.Destination),
		attribute.String("class", class.String())))
	r.cfg.Log.WarnContext(p.ev.Ctx, "event dead-lettered", "sink", r.cfg.Sink, "destination", r.cfg.Destination, "event_id", ev.EventId,
		"class", class.String(), "attempts", len(p.attempts), "error", dl.Error)
	return kafkaio.Record{Topic: r.cfg.DLQTopic, Key: m.Key, Value: v, Context: p.ev.Ctx, Headers: []kafka.Header{
		{Key: "closedloop-sink", Value: []byte(r.cfg.Sink)},
		{Key: "closedloop-error-class", Value: []byte(class.String())},
		{Key: "closedloop-attempts", Value: []byte(strconv.Itoa(len(p.attempts)))},
	}}
}

// produceDead writes dead letters. One too large for the dead-letter topic
// (an event near the size limit plus its attempts) is written again without
// the event, which stays at its source topic, partition and offset: a dead
// letter can never block its partition.
func (r *Runner) produceDead(ctx context.Context, recs []kafkaio.Record) error {
	err := r.cfg.DLQ.Produce(ctx, recs...)
	if err == nil || !errors.Is(err, kafkaio.ErrRecordTooLarge) {
		return err
	}
	slim := make([]kafkaio.Record, len(recs))
	for i, rec := range recs {
		var dl sinkv1.DeadLetter
		if uerr := proto.Unmarshal(rec.Value, &dl); uerr != nil {
			return err
		}
		if len(dl.Event) > 0 {
			dl.EventOmittedBytes = int64(len(dl.Event))
			dl.Event = nil
		}
		for _, a := range dl.Attempts {
			a.Error = truncate(a.Error, 256)
		}
		rec.Value, _ = proto.Marshal(&dl)
		slim[i] = rec
	}
	r.cfg.Log.Warn("dead letters too large for their topic; written without the events (read them at their source offsets)",
		"sink", r.cfg.Sink, "destination", r.cfg.Destination, "records", len(recs), "error", err.Error())
	return r.cfg.DLQ.Produce(ctx, slim...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
