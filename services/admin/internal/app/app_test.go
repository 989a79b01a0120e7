package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/closedloop/closedloop/libs/config"
)

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1.
func selfSigned(t *testing.T, dir, name string, client bool) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

func TestMTLSRefusesAClientWithoutACertificate(t *testing.T) {
	dir := t.TempDir()
	srvCert, srvKey := selfSigned(t, dir, "server", false)
	cliCert, cliKey := selfSigned(t, dir, "client", true)
	opt, err := Config{TLSCert: srvCert, TLSKey: srvKey, TLSClientCA: cliCert}.serverCreds()
	if err != nil || opt == nil {
		t.Fatalf("creds: %v", err)
	}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	s := grpc.NewServer(opt)
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(srvCert)
	pool.AppendCertsFromPEM(b)
	handshake := func(certs []tls.Certificate) error {
		c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: pool, Certificates: certs, NextProtos: []string{"h2"}})
		if err != nil {
			return err
		}
		defer c.Close()
		// TLS 1.3 reports a refused client certificate on the first read.
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if err != nil && strings.Contains(err.Error(), "timeout") {
			return nil
		}
		return err
	}
	if err := handshake(nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without a certificate: %v, want refused", err)
	}
	pair, _ := tls.LoadX509KeyPair(cliCert, cliKey)
	if err := handshake([]tls.Certificate{pair}); err != nil && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("a client with its certificate: %v", err)
	}
}

func TestStartWithoutAdminTokensIsRefusedWithTheReason(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pipeline.yaml")
	_ = os.WriteFile(p, []byte("sources: []\n"), 0o600)
	env := map[string]string{"KAFKA_BROKERS": "127.0.0.1:9092", "PIPELINE_CONFIG": p, "ADMIN_SERVICES": "normalizer"}
	_, err := Load(config.FromMap(env))
	for _, want := range []string{"no admin.tokens", "ADMIN_SERVICES", "service=host:port"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}

// Finding 5 of the hardening review: admin traffic was plaintext by default.
// Without a certificate the admin listens on loopback only, unless plaintext
// is allowed explicitly.
func TestTheAdminAPIDoesNotTakeTokensInClearFromTheNetwork(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	_ = os.WriteFile(path, []byte("admin:\n  tokens:\n    - {name: ann, role: operator, token: env:A}\n"), 0o600)
	t.Setenv("A", "operator-token-0123456789abcdef0123456789")
	base := map[string]string{"KAFKA_BROKERS": "k:9092", "PIPELINE_CONFIG": path, "CLOSEDLOOP_SERVICE_TOKEN": "svc-0123456789abcdef0123456789abcdef"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	if _, err := Load(config.FromMap(with("GRPC_ADDR", ":9097"))); err == nil || !strings.Contains(err.Error(), "in clear") {
		t.Fatalf("plaintext on every interface: %v, want refused", err)
	}
	for _, env := range []map[string]string{with("GRPC_ADDR", "127.0.0.1:9097"), with("GRPC_ADDR", ":9097", "ADMIN_ALLOW_PLAINTEXT", "true")} {
		if _, err := Load(config.FromMap(env)); err != nil {
			t.Fatalf("%v: %v", env, err)
		}
	}
}
