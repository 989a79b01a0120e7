package topics

import (
	"bytes"
	"strings"
	"testing"

	"github.com/closedloop/closedloop/libs/config"
)

// Usage mistakes exit 2 saying what is wrong, before any connection.
func TestUsageMistakes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		{nil, nil, ExitUsage, "admin topics plan|apply"},
		{[]string{"--help"}, nil, ExitOK, "admin topics plan|apply"},
		{[]string{"destroy"}, map[string]string{"KAFKA_BROKERS": "k:9092"}, ExitUsage, "admin topics plan|apply"},
		{[]string{"plan", "extra"}, map[string]string{"KAFKA_BROKERS": "k:9092"}, ExitUsage, "admin topics plan|apply"},
		{[]string{"plan"}, nil, ExitUsage, "KAFKA_BROKERS is not set"},
		{[]string{"apply", "-sinks", "sink-nosuch"}, map[string]string{"KAFKA_BROKERS": "k:9092"}, ExitUsage, `"sink-nosuch" is not a sink service`},
		{[]string{"apply"}, map[string]string{"KAFKA_BROKERS": "k:9092", "KAFKA_TOPIC_REPLICATION": "1", "KAFKA_MIN_INSYNC_REPLICAS": "2"}, ExitUsage, "no write could succeed"},
		{[]string{"plan"}, map[string]string{"KAFKA_BROKERS": "k:9092", "KAFKA_SASL_MECHANISM": "PLAIN"}, ExitUsage, "set KAFKA_SASL_USERNAME"},
	} {
		var out, errOut bytes.Buffer
		code := Main(tc.args, config.FromMap(tc.env), &out, &errOut)
		if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
			t.Errorf("%v %v: exit %d, want %d saying %q:\n%s%s", tc.args, tc.env, code, tc.code, tc.want, out.String(), errOut.String())
		}
	}
}
