package repocheck

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every Kafka client is made by libs/kafkaio (NewTransport, NewClient,
// NewDialer, NewReader, NewWriter), so the process's TLS and SASL reach
// every producer, consumer, metadata and admin client: none is made with
// kafka-go's constructors elsewhere (tests excepted: they talk to the dev
// broker).
func TestEveryKafkaClientTakesTheProcessSecurity(t *testing.T) {
	bad := regexp.MustCompile(`kafka\.(Transport|Dialer|Client|Writer)\{|kafka\.(NewReader|NewWriter|Dial|DialContext|DialLeader|DialPartition)\(|kafka\.DefaultTransport`)
	eachSourceLine(t, func(rel string, n int, line string) {
		if filepath.Dir(rel) != filepath.Join("libs", "kafkaio") && bad.MatchString(line) {
			t.Errorf("%s:%d makes a Kafka client without kafkaio (its TLS/SASL would be missing): %s", rel, n, strings.TrimSpace(line))
		}
	})
}
