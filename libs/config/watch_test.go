package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWatchAppliesAChangedFileOrSecretAndKeepsTheOldPipelineOnAnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pipeline.yaml")
	secret := filepath.Join(dir, "key")
	tok := filepath.Join(dir, "tok")
	_ = os.WriteFile(secret, []byte("k1"), 0o600)
	_ = os.WriteFile(tok, []byte("tok_0123456789abcdefghijklmn"), 0o600)
	yml := "sources:\n  - name: a\n    provider: delighted\n    secrets: [file:" + secret + "]\n    ingest_tokens: [file:" + tok + "]\n"
	_ = os.WriteFile(path, []byte(yml), 0o600)

	applied := make(chan *Pipeline, 4)
	failed := make(chan error, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Watch(ctx, path, 20*time.Millisecond, os.LookupEnv, func(p *Pipeline) { applied <- p }, func(err error) { failed <- err })

	time.Sleep(60 * time.Millisecond)
	_ = os.WriteFile(secret, []byte("k2"), 0o600) // a rotated secret file
	select {
	case p := <-applied:
		if string(p.Sources[0].Secrets[0].Reveal()) != "k2" {
			t.Fatalf("applied secret %q", p.Sources[0].Secrets[0].Reveal())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a rotated secret was not applied")
	}
	_ = os.WriteFile(path, []byte(strings.Replace(yml, "delighted", "nosuch", 1)), 0o600)
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "nosuch") {
			t.Fatalf("error = %v", err)
		}
	case p := <-applied:
		t.Fatalf("a broken file was applied: %+v", p)
	case <-time.After(2 * time.Second):
		t.Fatal("a broken file was not reported")
	}
}

func TestWatchWithoutSecretsReactsToTheFileOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	yml := "sources:\n  - name: a\n    provider: delighted\n    secrets: [env:NOT_SET]\n    dedupe_ttl: 1h\n"
	_ = os.WriteFile(path, []byte(yml), 0o600)
	applied := make(chan *Pipeline, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Watch(ctx, path, 20*time.Millisecond, nil, func(p *Pipeline) { applied <- p }, func(err error) { t.Error(err) })
	time.Sleep(60 * time.Millisecond)
	_ = os.WriteFile(path, []byte(strings.Replace(yml, "1h", "2h", 1)), 0o600)
	select {
	case p := <-applied:
		if p.Sources[0].DedupeTTL.Duration != 2*time.Hour {
			t.Fatalf("ttl %v", p.Sources[0].DedupeTTL)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("change not applied")
	}
}
