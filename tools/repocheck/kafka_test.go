package repocheck

import (
	"os"
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
	r := root(t)
	err := filepath.WalkDir(r, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "gen") {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(r, path)
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || filepath.Dir(rel) == filepath.Join("libs", "kafkaio") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if bad.MatchString(line) {
				t.Errorf("%s:%d makes a Kafka client without kafkaio (its TLS/SASL would be missing): %s", rel, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
