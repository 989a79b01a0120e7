package config

import (
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// Watch re-reads the pipeline file every interval and calls apply with the
// new pipeline when it changed — the file, or a secret it references by
// file: (a rotated Kubernetes secret changes no YAML). A file that no longer
// loads (and still does not one interval later: it was not caught mid-write)
// is reported to fail, once, and the previous pipeline stays in force. Watch
// returns when ctx ends. Polling works with the symlink swaps of Kubernetes
// ConfigMap and Secret volumes, which file-change notifications miss.
func Watch(ctx context.Context, path string, interval time.Duration, lookup func(string) (string, bool),
	apply func(*Pipeline), fail func(error)) {
	if interval <= 0 {
		interval = time.Second
	}
	last := fingerprint(path, lookup)
	var broken *[sha256.Size]byte // a file that did not load, reported once it stays so
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fp := fingerprint(path, lookup)
		if fp == last {
			continue
		}
		p, err := LoadPipeline(path, lookup)
		if err != nil {
			// A file caught in the middle of being written does not load;
			// it is a problem only if it is still the same at the next look.
			if broken != nil && *broken == fp {
				fail(err)
				last, broken = fp, nil // report a broken file once, not every interval
			} else {
				broken = &fp
			}
			continue
		}
		last, broken = fp, nil
		apply(p)
	}
}

// fingerprint hashes the file and the files its secrets reference.
func fingerprint(path string, lookup func(string) (string, bool)) [sha256.Size]byte {
	h := sha256.New()
	b, err := os.ReadFile(path)
	if err != nil {
		h.Write([]byte("unreadable: " + err.Error()))
		return [sha256.Size]byte(h.Sum(nil))
	}
	h.Write(b)
	if lookup == nil { // the service holds no secrets: only the file matters
		return [sha256.Size]byte(h.Sum(nil))
	}
	if p, err := ParsePipeline(b, nil); err == nil {
		for _, s := range p.Sources {
			for _, ref := range append(append([]string(nil), s.SecretRefs...), s.IngestTokenRefs...) {
				if sec, err := ResolveSecret(ref, lookup); err == nil {
					sum := sha256.Sum256(sec.Reveal())
					h.Write(sum[:])
				}
			}
		}
	}
	return [sha256.Size]byte(h.Sum(nil))
}
