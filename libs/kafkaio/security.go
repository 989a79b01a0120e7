package kafkaio

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/closedloop/closedloop/libs/config"
)

// Security is how this process's Kafka clients connect: TLS (the brokers'
// CA, an optional client certificate, the server name) and SASL (PLAIN,
// SCRAM-SHA-256 or SCRAM-SHA-512). It is process-wide, as the
// OpenTelemetry providers are: UseSecurity sets it once at start-up, before
// any client exists, and every producer, consumer, metadata and admin
// client of this package takes it from there (NewTransport, NewDialer).
// Nothing else builds a Kafka client: tools/repocheck rejects a kafka-go
// Transport, Dialer, Reader, Writer or Client made outside this package.
type Security struct {
	TLS  *tls.Config
	SASL sasl.Mechanism
	// User is the SASL user (for messages), Desc a one-line description.
	User string
	Desc string
}

var security atomic.Pointer[Security]

// UseSecurity sets the security of every Kafka client made after it.
func UseSecurity(s Security) { security.Store(&s) }

// CurrentSecurity is the security in force (none by default).
func CurrentSecurity() Security {
	if s := security.Load(); s != nil {
		return *s
	}
	return Security{Desc: "plaintext, no authentication"}
}

// NewTransport is a kafka-go Transport (for Writers and Clients) with the
// process's security.
func NewTransport(clientID string) *kafka.Transport {
	s := CurrentSecurity()
	return &kafka.Transport{ClientID: clientID, DialTimeout: 3 * time.Second, MetadataTTL: 10 * time.Second, TLS: s.TLS, SASL: s.SASL}
}

// NewClient is a kafka-go Client (metadata, offsets, admin requests) with
// the process's security and its own connections.
func NewClient(brokers []string, timeout time.Duration) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: timeout, Transport: NewTransport("closedloop")}
}

// NewDialer is a kafka-go Dialer (for Readers) with the process's security.
func NewDialer(clientID string) *kafka.Dialer {
	s := CurrentSecurity()
	return &kafka.Dialer{ClientID: clientID, Timeout: 10 * time.Second, DualStack: true, TLS: s.TLS, SASLMechanism: s.SASL}
}

// NewReader is a kafka-go Reader with the process's security.
func NewReader(cfg kafka.ReaderConfig) *kafka.Reader {
	if cfg.Dialer == nil {
		cfg.Dialer = NewDialer("closedloop")
	}
	return kafka.NewReader(cfg)
}

// SASL mechanisms.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// LoadSecurity reads the Kafka security settings and checks them (files
// readable, certificates parseable, a mechanism with a user and a password):
//
//	KAFKA_TLS_ENABLED          true: TLS to the brokers (implied by any KAFKA_TLS_* file)
//	KAFKA_TLS_CA_FILE          PEM CA bundle of the brokers' certificates (default: the system's roots)
//	KAFKA_TLS_CERT_FILE        PEM client certificate (mutual TLS), with
//	KAFKA_TLS_KEY_FILE         its PEM private key
//	KAFKA_TLS_SERVER_NAME      the name the brokers' certificates carry (default: the broker host)
//	KAFKA_SASL_MECHANISM       PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default: no SASL)
//	KAFKA_SASL_USERNAME        the SASL user
//	KAFKA_SASL_PASSWORD        a secret reference to its password: env:NAME or file:PATH
//
// Every problem is recorded in e, each naming its variable.
func LoadSecurity(e *config.Env) Security {
	var s Security
	caFile, certFile, keyFile := e.String("KAFKA_TLS_CA_FILE", ""), e.String("KAFKA_TLS_CERT_FILE", ""), e.String("KAFKA_TLS_KEY_FILE", "")
	serverName := e.String("KAFKA_TLS_SERVER_NAME", "")
	useTLS := e.Bool("KAFKA_TLS_ENABLED", caFile != "" || certFile != "" || keyFile != "" || serverName != "")
	var desc []string
	if useTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
		desc = append(desc, "TLS")
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			pool := x509.NewCertPool()
			switch {
			case err != nil:
				e.Errorf("KAFKA_TLS_CA_FILE: %v", err)
			case !pool.AppendCertsFromPEM(pem):
				e.Errorf("KAFKA_TLS_CA_FILE %s holds no PEM certificate", caFile)
			default:
				cfg.RootCAs = pool
				desc[0] = "TLS (CA " + caFile + ")"
			}
		}
		switch {
		case certFile != "" && keyFile != "":
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				e.Errorf("KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE: %v", err)
			} else {
				cfg.Certificates = []tls.Certificate{cert}
				desc = append(desc, "client certificate")
			}
		case certFile != "" || keyFile != "":
			e.Errorf("KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together: set both (mutual TLS) or neither")
		}
		s.TLS = cfg
	}
	mech := strings.ToUpper(e.String("KAFKA_SASL_MECHANISM", ""))
	user := e.String("KAFKA_SASL_USERNAME", "")
	pass, havePass := e.Secret("KAFKA_SASL_PASSWORD")
	switch {
	case mech == "" && (user != "" || havePass):
		e.Errorf("KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD are set without KAFKA_SASL_MECHANISM: set it to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	case mech == "":
	case mech != MechanismPlain && mech != MechanismSCRAMSHA256 && mech != MechanismSCRAMSHA512:
		e.Errorf("KAFKA_SASL_MECHANISM %q: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", mech)
	case user == "":
		e.Errorf("KAFKA_SASL_MECHANISM is %s: set KAFKA_SASL_USERNAME", mech)
	case !havePass:
		e.Errorf("KAFKA_SASL_MECHANISM is %s: set KAFKA_SASL_PASSWORD to a secret reference (env:NAME or file:PATH)", mech)
	default:
		var err error
		switch mech {
		case MechanismPlain:
			s.SASL = plain.Mechanism{Username: user, Password: string(pass.Reveal())}
		case MechanismSCRAMSHA256:
			s.SASL, err = scram.Mechanism(scram.SHA256, user, string(pass.Reveal()))
		case MechanismSCRAMSHA512:
			s.SASL, err = scram.Mechanism(scram.SHA512, user, string(pass.Reveal()))
		}
		if err != nil {
			e.Errorf("KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD: %v", err)
		}
		s.User = user
		desc = append(desc, "SASL "+mech+" as "+user)
		if mech == MechanismPlain && !useTLS {
			desc = append(desc, "WARNING: PLAIN without TLS sends the password in clear text")
		}
	}
	s.Desc = strings.Join(desc, ", ")
	if s.Desc == "" {
		s.Desc = "plaintext, no authentication"
	}
	return s
}

// ErrKafkaAccess is a connection the brokers refused for its credentials
// or its TLS: retrying cannot help, the configuration must change.
var ErrKafkaAccess = errors.New("kafka refused the connection")

// Explain turns a connection error into what an operator can act on when
// it is about security (a refused SASL login, an untrusted or mismatched
// certificate, TLS against a plaintext listener); it wraps ErrKafkaAccess
// then. Other errors are returned as they are.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	s := CurrentSecurity()
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, kafka.SASLAuthenticationFailed):
		return fmt.Errorf("%w: the SASL login of user %q failed (%s): check KAFKA_SASL_USERNAME and the password KAFKA_SASL_PASSWORD points at: %v", ErrKafkaAccess, s.User, s.Desc, err)
	case errors.Is(err, kafka.UnsupportedSASLMechanism):
		return fmt.Errorf("%w: the brokers do not offer KAFKA_SASL_MECHANISM (%s): %v", ErrKafkaAccess, s.Desc, err)
	case errors.Is(err, kafka.IllegalSASLState):
		return fmt.Errorf("%w: the brokers expect a SASL login (set KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD) or another listener: %v", ErrKafkaAccess, err)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%w: the brokers' certificate is not signed by a CA this process trusts: set KAFKA_TLS_CA_FILE to their CA bundle: %v", ErrKafkaAccess, err)
	case errors.As(err, &hostname):
		return fmt.Errorf("%w: the brokers' certificate does not name the host dialled: set KAFKA_TLS_SERVER_NAME to the name it carries: %v", ErrKafkaAccess, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("%w: the brokers' certificate is not valid (expired, or not for a server): %v", ErrKafkaAccess, err)
	case errors.As(err, &record):
		return fmt.Errorf("%w: TLS was refused: this listener speaks plaintext (unset KAFKA_TLS_ENABLED, or use the brokers' TLS port): %v", ErrKafkaAccess, err)
	}
	var ne net.Error
	if s.TLS == nil && errors.As(err, &ne) {
		return fmt.Errorf("%w (if the brokers' listener uses TLS, set KAFKA_TLS_ENABLED=true and KAFKA_TLS_CA_FILE)", err)
	}
	return err
}

// NewWriter is a kafka-go Writer to topic with the process's security:
// murmur2 keys (as the Producer), acks=all. Callers set batching.
func NewWriter(brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll,
		Transport: NewTransport("closedloop")}
}

// CheckAccess connects to a broker as this process's clients do (TCP, TLS,
// the SASL login) and asks for the cluster's brokers (a metadata request). It returns an error
// wrapping ErrKafkaAccess when the brokers refuse this process — a failed
// login, an untrusted certificate, a SASL listener reached without SASL
// (brokers close such a connection at its first request past ApiVersions)
// — and nil or the
// connection error otherwise (a broker not up yet is for the caller to wait
// for).
func CheckAccess(ctx context.Context, brokers []string) error {
	d := NewDialer("closedloop-access-check")
	var last error
	for _, b := range brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err != nil {
			if err = Explain(err); errors.Is(err, ErrKafkaAccess) {
				return err
			}
			last = err
			continue
		}
		_, err = conn.Brokers()
		_ = conn.Close()
		if err == nil {
			return nil
		}
		if sec := CurrentSecurity(); (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && sec.SASL == nil {
			needs := "a SASL login (set KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD)"
			if sec.TLS == nil {
				needs = "TLS (KAFKA_TLS_ENABLED=true, KAFKA_TLS_CA_FILE) or " + needs
			}
			return fmt.Errorf("%w: broker %s closed the connection at the first request: its listener probably requires %s: %v", ErrKafkaAccess, b, needs, err)
		}
		last = Explain(err)
	}
	return last
}
