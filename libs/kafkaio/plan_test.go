package kafkaio

import (
	"context"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

func kinds(plan []TopicChange) map[string]string {
	out := map[string]string{}
	for _, c := range plan {
		if c.Kind != ChangeNone {
			out[c.Topic] += c.Kind + ";"
		}
	}
	return out
}

// plan finds what is missing or differs, apply makes it so, and a second
// plan finds nothing; fewer partitions than exist is left to a person.
func TestPlanAndApplyTopics(t *testing.T) {
	brokers := broker(t, "t1.feedback.raw.v1") // one topic exists, with 3 partitions
	ctx := context.Background()
	topics := NewTopics("t1.")
	defs := topics.Defs("sink-warehouse")
	layout := Layout{Partitions: 6, Replication: 1}
	plan, err := PlanTopics(ctx, brokers, defs, layout)
	if err != nil {
		t.Fatal(err)
	}
	k := kinds(plan)
	if len(k) != len(defs) || k[topics.Raw] != ChangeAddPartitions+";" || k[topics.IngestTokens] != ChangeCreate+";" {
		t.Fatalf("first plan %v", k)
	}
	if manual, err := ApplyTopics(ctx, brokers, plan, layout); err != nil || len(manual) != 0 {
		t.Fatalf("apply: %v, manual %v", err, manual)
	}
	plan, err = PlanTopics(ctx, brokers, defs, layout)
	if err != nil || len(kinds(plan)) != 0 {
		t.Fatalf("after apply: %v %v", kinds(plan), err)
	}
	// What apply made: the control topics compacted with one partition,
	// the dead letters kept 30 days, the raw topic grown to 6.
	client := NewClient(brokers, 0)
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topics.Raw, topics.IngestTokens}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range md.Topics {
		if want := map[string]int{topics.Raw: 6, topics.IngestTokens: 1}[tp.Name]; len(tp.Partitions) != want {
			t.Errorf("%s has %d partitions, want %d", tp.Name, len(tp.Partitions), want)
		}
	}
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: topics.DLQState()}, {ResourceType: kafka.ResourceTypeTopic, ResourceName: topics.DLQ("sink-warehouse")}}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range resp.Resources {
		for _, e := range r.ConfigEntries {
			got[r.ResourceName+" "+e.ConfigName] = e.ConfigValue
		}
	}
	if got[topics.DLQState()+" cleanup.policy"] != "compact" || got[topics.DLQ("sink-warehouse")+" retention.ms"] != "2592000000" {
		t.Fatalf("configs after apply: %v", got)
	}
	// A drifted setting is found again; fewer partitions is manual.
	if _, err := client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topics.Audit(),
		Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: "retention.ms", Value: "1000", ConfigOperation: kafka.ConfigOperationSet}}}}}); err != nil {
		t.Fatal(err)
	}
	plan, err = PlanTopics(ctx, brokers, defs, layout)
	if err != nil {
		t.Fatal(err)
	}
	if k = kinds(plan); len(k) != 1 || k[topics.Audit()] != ChangeConfigs+";" {
		t.Fatalf("drift plan %v", k)
	}
	for _, c := range plan {
		if c.Topic == topics.Audit() && !strings.Contains(c.Detail, "retention.ms 1000 → 34560000000") {
			t.Fatalf("audit drift detail %q", c.Detail)
		}
	}
	if manual, err := ApplyTopics(ctx, brokers, plan, layout); err != nil || len(manual) != 0 {
		t.Fatalf("apply the drift: %v %v", manual, err)
	}
	// Fewer partitions than exist: apply leaves it to a person.
	fewer := Layout{Partitions: 3, Replication: 1}
	plan, err = PlanTopics(ctx, brokers, defs, fewer)
	if err != nil || kinds(plan)[topics.Raw] != ChangeManual+";" {
		t.Fatalf("plan with fewer partitions: %v %v", kinds(plan), err)
	}
	manual, err := ApplyTopics(ctx, brokers, plan, fewer)
	if err != nil || len(manual) != len(defs)-4 { // all but the four single-partition control topics
		t.Fatalf("apply with manual changes: %d manual, %v", len(manual), err)
	}
}
