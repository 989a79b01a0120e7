package kafkaio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closedloop/closedloop/libs/config"
)

// Every mistake in the Kafka security settings is reported at start-up,
// naming the variable to fix; a valid one yields TLS and SASL.
func TestLoadSecurityReportsEveryMistake(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	_ = os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "env:P", "P": "p"}, "KAFKA_SASL_MECHANISM \"GSSAPI\""},
		{map[string]string{"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_PASSWORD": "env:P", "P": "p"}, "set KAFKA_SASL_USERNAME"},
		{map[string]string{"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "u"}, "set KAFKA_SASL_PASSWORD to a secret reference"},
		{map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "hunter2"}, "KAFKA_SASL_PASSWORD: "},
		{map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "env:NOPE"}, "NOPE is not set"},
		{map[string]string{"KAFKA_SASL_USERNAME": "u"}, "without KAFKA_SASL_MECHANISM"},
		{map[string]string{"KAFKA_TLS_CA_FILE": filepath.Join(dir, "missing.pem")}, "KAFKA_TLS_CA_FILE: open"},
		{map[string]string{"KAFKA_TLS_CA_FILE": garbage}, "holds no PEM certificate"},
		{map[string]string{"KAFKA_TLS_CERT_FILE": garbage}, "KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together"},
		{map[string]string{"KAFKA_TLS_CERT_FILE": garbage, "KAFKA_TLS_KEY_FILE": garbage}, "KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE"},
	} {
		e := config.FromMap(tc.env)
		LoadSecurity(e)
		if err := e.Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one saying %q", tc.env, err, tc.want)
		}
	}
	e := config.FromMap(map[string]string{"KAFKA_TLS_ENABLED": "true", "KAFKA_TLS_SERVER_NAME": "kafka.internal",
		"KAFKA_SASL_MECHANISM": "scram-sha-256", "KAFKA_SASL_USERNAME": "ingress", "KAFKA_SASL_PASSWORD": "env:P", "P": "s3cret"})
	s := LoadSecurity(e)
	if err := e.Err(); err != nil || s.TLS == nil || s.TLS.ServerName != "kafka.internal" || s.SASL == nil || s.SASL.Name() != "SCRAM-SHA-256" ||
		s.Desc != "TLS, SASL SCRAM-SHA-256 as ingress" || strings.Contains(s.Desc, "s3cret") {
		t.Fatalf("security %+v, %v", s, err)
	}
	e = config.FromMap(map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "env:P", "P": "p"})
	if s := LoadSecurity(e); !strings.Contains(s.Desc, "WARNING: PLAIN without TLS") || e.Err() != nil {
		t.Fatalf("PLAIN without TLS: %q %v", s.Desc, e.Err())
	}
	if s := LoadSecurity(config.FromMap(nil)); s.TLS != nil || s.SASL != nil || s.Desc != "plaintext, no authentication" {
		t.Fatalf("no settings: %+v", s)
	}
}
