# closedloop — the two commands: `make run` and `make test`.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Every Go module of the workspace (go.work).
MODULES := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)

# Pinned code generators and helm, installed by `make tools` (see BIN).
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
# vtprotobuf's generator: the commit google.golang.org/grpc requires of its runtime (one version per module).
PROTOC_GEN_GO_VTPROTO_VERSION := v0.6.1-0.20240319094008-0393e58bdf10
HELM_VERSION := v3.16.4
# They live in a per-version cache outside the checkout, so a fresh clone on a
# machine that built them once (CI runs on the development machine) does not
# build them again; BIN=.bin keeps them in the checkout.
BIN ?= $(if $(HOME),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/closedloop/tools-buf$(BUF_VERSION)-pgg$(PROTOC_GEN_GO_VERSION)-pggg$(PROTOC_GEN_GO_GRPC_VERSION)-vt$(PROTOC_GEN_GO_VTPROTO_VERSION)-helm$(HELM_VERSION),$(CURDIR)/.bin)
export PATH := $(BIN):$(PATH)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: run
# (exec: Ctrl-C reaches devstack, which stops everything and exits 0, and make reports no error)
run: ## build and start the whole pipeline locally with a webhook generator (Ctrl-C stops it)
	@go build -o bin/devstack ./tools/devstack && exec bin/devstack $(ARGS)

.PHONY: test
test: check-generated ## everything CI runs: generated code, end-to-end (with the vectors' end-to-end conformance), lint, proto compatibility, unit tests (-race; the conformance of the ingress and the mapping among them), short fuzz
	@# Two streams, each side's output kept together. The end-to-end tests wait more than they compute, so
	@# they start first, beside the race build of every package; lint's go vet comes after them and reuses
	@# the packages their build of the services compiled (two builds of one package at once would both run).
	@$(MAKE) --no-print-directory -j2 --output-sync=recurse e2e-then-lint unit-then-fuzz

.PHONY: e2e-then-lint unit-then-fuzz
e2e-then-lint:
	@$(MAKE) --no-print-directory e2e-all
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory breaking
unit-then-fuzz:
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory fuzz-smoke

# What every binary is built with: the version (git describe, or VERSION=…)
# in libs/service.Version and in the images' tags.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMANDS := $(foreach s,ingress normalizer enricher sink-warehouse sink-webhook sink-console admin,services/$(s)/cmd/$(s)) services/admin/cmd/closedloopctl \
  $(patsubst %/main.go,%,$(wildcard tools/*/main.go tools/fakes/*/cmd/*/main.go))

.PHONY: build
build: ## build every binary (services, admin, closedloopctl, the tools and fakes) into bin/ (version $(VERSION))
	@mkdir -p bin
	@for c in $(COMMANDS); do go build -trimpath -ldflags "-X github.com/closedloop/closedloop/libs/service.Version=$(VERSION) -X main.Version=$(VERSION)" -o bin/$$(basename $$c) ./$$c || exit 1; done
	@echo "built $(words $(COMMANDS)) binaries into bin/ (version $(VERSION))"

.PHONY: images
images: ## docker images of every service, tagged closedloop/<service>:$(VERSION) (needs a Docker engine)
	@for s in ingress normalizer enricher sink-warehouse sink-webhook sink-console admin; do \
	  docker build -f deploy/docker/Dockerfile --build-arg SERVICE=$$s --build-arg VERSION=$(VERSION) -t closedloop/$$s:$(VERSION) . || exit 1; done

.PHONY: conformance
conformance: ## every webhook vector: verdicts through the real ingress handler, meanings through the mapping and end to end via Kafka and the normalizer process (CLOSEDLOOP_VECTORS=file.json for another file)
	cd services/ingress && go test -count=1 -run 'Conformance|TestSchemesReachEveryVectorsVerdict' -v ./internal/ingest ./internal/verify | grep -E '^(--- FAIL|FAIL|ok|\s+\S+_test\.go:)|^=== RUN +TestConformance[^/]*$$'; exit $${PIPESTATUS[0]}
	cd services/normalizer && go test -count=1 -run 'TestEveryAcceptedVectorMapsToItsCanonicalMeaning' ./internal/mapping
	cd tools && go test -count=1 -run 'TestEveryVectorMeansOnTheNormalizedTopic' -v ./e2e 2>&1 | grep -E '^(--- |FAIL|ok|panic|\s+\S+_test\.go:)'; exit $${PIPESTATUS[0]}

.PHONY: unit
# One go test over every module of the workspace: packages of different modules run side by side.
WORKSPACE_PKGS = $(shell go list -m -f '{{.Dir}}/...' | sed 's|^$(CURDIR)|.|')
# -vet=off: make test runs the whole of go vet in lint; go test's own subset of it would type-check every
# package a second time (48 s of a cold build).
# NORACE_PKGS start no goroutine, in their code or their tests: -race finds nothing there, and without it
# they reuse lint's build of their dependencies (Grafana's SDK took 67 s to compile again with -race).
NORACE_PKGS := ./tools/dashboards
unit: ## unit tests with -race in every module (end-to-end tests and NORACE_PKGS excluded), then NORACE_PKGS without it
	go test -race -vet=off -count=1 $$(go list $(WORKSPACE_PKGS) | grep -v '/tools/e2e$$' | grep -vxF "$$(go list $(NORACE_PKGS))")
	go test -vet=off -count=1 $(NORACE_PKGS)

# The end-to-end tests run four at a time: each has a pipeline of its own and they mostly wait (332 s one
# at a time, 128 s four at a time, on the 2-core machine); tools/e2e/main_test.go says which stay serial.
E2E_PARALLEL ?= 4

.PHONY: e2e
e2e: ## end-to-end: dev broker, redis-server, PostgreSQL and the service binaries as processes
	cd tools && go test -count=1 -v -parallel $(E2E_PARALLEL) -timeout 10m -skip 'TestEveryVectorMeansOnTheNormalizedTopic' ./e2e 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test\.go:)' ; exit $${PIPESTATUS[0]}

# make test: every end-to-end test in one run (one set of infrastructure), the vectors' too. The service
# binaries are built without -race (their code is race-tested in unit); -race here would only slow the
# harness's in-process fakes.
.PHONY: e2e-all
e2e-all:
	cd tools && go test -count=1 -v -parallel $(E2E_PARALLEL) -timeout 15m ./e2e 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test\.go:)' ; exit $${PIPESTATUS[0]}

.PHONY: e2e-outage
e2e-outage: ## the full destination outage: both sinks' destinations down for two minutes under load (make test runs 8 s)
	cd tools && CLOSEDLOOP_E2E_OUTAGE=2m go test -count=1 -v -timeout 15m -run 'TestADestinationOutageLosesNothingAndCatchesUpByItself' ./e2e 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test\.go:)' ; exit $${PIPESTATUS[0]}

.PHONY: lint
lint: ## go vet in every module, gofmt, buf lint, helm-check
	go vet $(WORKSPACE_PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '/gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	cd proto && buf lint
	$(MAKE) --no-print-directory helm-check

.PHONY: helm-check
helm-check: $(BIN)/helm ## helm lint and render the chart (defaults, and every option on); check what it renders and the alert rules' metrics
	helm lint --quiet deploy/helm/closedloop
	helm template closedloop deploy/helm/closedloop | (cd tools && HELMCHECK_EXTERNAL_SECRETS=closedloop-postgres,closedloop-secrets go run ./helmcheck)
	helm template closedloop deploy/helm/closedloop --set autoscaling.enabled=true,ingress.enabled=true,ingress.tlsSecret=tls,ingress.annotations.team=cx,services.sink-webhook.enabled=true,adminTLS.certManagerIssuer.name=ca,metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.grafanaDashboards.enabled=true,metrics.grafanaDashboards.annotations.grafana_folder=closedloop,networkPolicy.enabled=true,networkPolicy.opsFrom[0].name=monitoring,networkPolicy.adminFrom[0].name=ops,imagePullSecrets[0].name=registry,nodeSelector.pool=closedloop,priorityClassName=high | (cd tools && HELMCHECK_DASHBOARDS=on HELMCHECK_EXTERNAL_SECRETS=closedloop-postgres,closedloop-secrets go run ./helmcheck)
	helm template closedloop deploy/helm/closedloop --set adminTLS.enabled=false,ops.pprof=true,serviceToken.secret=mine | (cd tools && HELMCHECK_PPROF=true HELMCHECK_EXTERNAL_SECRETS=closedloop-postgres,closedloop-secrets,mine go run ./helmcheck)
	helm template closedloop deploy/helm/closedloop -f deploy/helm/closedloop/ci/destinations-values.yaml | (cd tools && HELMCHECK_EXTERNAL_SECRETS=closedloop-postgres,closedloop-secrets HELMCHECK_GROUPS=closedloop-sink-webhook-crm-bridge,closedloop-sink-webhook-cx-alerts go run ./helmcheck)
	helm template closedloop deploy/helm/closedloop -f deploy/helm/closedloop/ci/destinations-values.yaml --set kafka.tls.enabled=true,kafka.tls.caSecret.name=kafka-ca,kafka.tls.clientCertSecret=kafka-client,kafka.tls.serverName=kafka.internal,kafka.sasl.mechanism=SCRAM-SHA-512,kafka.minInsyncReplicas=2 | (cd tools && HELMCHECK_EXTERNAL_SECRETS=closedloop-postgres,closedloop-secrets,closedloop-kafka-passwords,kafka-ca,kafka-client HELMCHECK_GROUPS=closedloop-sink-webhook-crm-bridge,closedloop-sink-webhook-cx-alerts go run ./helmcheck)
	cd tools && go run ./helmcheck -alerts ../deploy/alerts/closedloop.rules.yaml ..

.PHONY: tools
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-go-vtproto ## install the pinned code generators (into BIN, a per-version cache)

$(BIN)/helm:
	GOBIN=$(BIN) GOWORK=off go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
# buf: the release's prebuilt binary from the npm registry (@bufbuild/buf-<os>-<arch>, the same version;
# seconds instead of minutes of compiling), else built from source.
$(BIN)/buf:
	@mkdir -p $(BIN); arch=$$(uname -m | sed 's/x86_64/x64/'); os=$$(uname -s | tr A-Z a-z); tmp=$$(mktemp -d); \
	if command -v npm >/dev/null 2>&1 && (cd $$tmp && npm pack --silent "@bufbuild/buf-$$os-$$arch@$(BUF_VERSION:v%=%)" >/dev/null 2>&1) && \
	   tar -xzf $$tmp/*.tgz -C $$tmp && "$$tmp/package/bin/buf" --version | grep -qx '$(BUF_VERSION:v%=%)'; then \
	  install -m 0755 "$$tmp/package/bin/buf" $@ && echo "buf $(BUF_VERSION): prebuilt, from the npm registry"; \
	else \
	  echo "buf $(BUF_VERSION): building from source"; GOBIN=$(BIN) GOWORK=off go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION); \
	fi; rm -rf $$tmp
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) GOWORK=off go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) GOWORK=off go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/protoc-gen-go-vtproto:
	GOBIN=$(BIN) GOWORK=off go install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@$(PROTOC_GEN_GO_VTPROTO_VERSION)

.PHONY: generate
generate: tools ## regenerate the protobuf Go code in proto/gen/go and pbjson's encoders of its messages
	cd proto && find gen/go -name '*.pb.go' -delete && buf generate
	cd libs/pbjson && go generate

.PHONY: check-generated
check-generated: generate ## fail when the committed generated code is stale
	@if [ -n "$$(git status --porcelain -- proto/gen libs/pbjson/generated.go)" ]; then \
	  echo "generated code is stale: run 'make generate' and commit the result"; git status --short -- proto/gen libs/pbjson/generated.go; exit 1; fi

.PHONY: breaking
# On a branch: against the commit it forked from main. On main (CI runs on a clone of main): against the
# previous commit, so every commit that lands on main is checked against the main it replaced.
breaking: tools ## buf breaking: proto/ against main (the fork point, or on main the previous commit)
	@head=$$(git rev-parse HEAD); base=$$(git merge-base HEAD main 2>/dev/null || true); \
	if [ -z "$$base" ] || [ "$$base" = "$$head" ]; then base=$$(git rev-parse -q --verify 'HEAD~1' || true); fi; \
	if [ -z "$$base" ]; then echo "breaking: no earlier commit of main to compare with; skipped"; exit 0; fi; \
	if ! git cat-file -e "$$base:proto/buf.yaml" 2>/dev/null; then echo "breaking: $$base has no proto module yet; skipped"; exit 0; fi; \
	echo "buf breaking against $$base"; cd proto && buf breaking --against "../.git#ref=$$base,subdir=proto"

# Shell commands for the fuzz targets: FUZZ_DIRS lists every package directory that has one, FUZZ_TARGETS
# (run in such a directory) its targets.
FUZZ_DIRS = for m in $(MODULES); do (cd $$m && grep -l --include='*_test.go' -r '^func Fuzz' . | xargs -r -n1 dirname | sort -u | sed "s|^\.|$$m|"); done
FUZZ_TARGETS = grep -ho '^func Fuzz[A-Za-z0-9_]*' *_test.go | cut -c6-

# make test fuzzes every target briefly: SMOKE_FUZZTIME runs of each (the seed corpora are already run by unit).
# `go test -fuzz` would compile every dependency a third time, with coverage instrumentation (7 of a cold CI's
# 17 minutes, for all 14 targets): the smoke runs each package's ordinary test binary, built once, whose fuzz
# engine then mutates blind ("warning: ... not built with coverage instrumentation"). A crasher is written
# to the package's testdata/fuzz as with go test. make fuzz fuzzes with coverage guidance.
SMOKE_FUZZTIME ?= 10000x
.PHONY: fuzz-smoke
fuzz-smoke:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for d in $$($(FUZZ_DIRS)); do \
	  (cd $$d && go test -c -vet=off -o "$$tmp/fuzz.test" .) || exit 1; \
	  for f in $$(cd $$d && $(FUZZ_TARGETS)); do \
	    echo "== fuzz (smoke, $(SMOKE_FUZZTIME)) $${d#$(CURDIR)/} $$f"; \
	    (cd $$d && "$$tmp/fuzz.test" -test.run XXX -test.fuzz "^$$f$$" -test.fuzztime $(SMOKE_FUZZTIME) \
	      -test.fuzzcachedir "$$tmp/cache/$$(echo "$${d#$(CURDIR)/}" | tr / _)" 2>&1 | grep -v 'not built with coverage instrumentation'; \
	      exit $${PIPESTATUS[0]}) || exit 1; \
	  done; \
	done

# A count (Nx), not a duration: a duration races Go 1.26's fuzz coordinator at the deadline
# (golang/go#75804, fixed in Go 1.27) and fails with "context deadline exceeded" and no crasher.
FUZZTIME ?= 40000x
.PHONY: fuzz
fuzz: ## run every fuzz target of every module for FUZZTIME executions (default 40000x; seed corpora in testdata/fuzz)
	@for d in $$($(FUZZ_DIRS)); do \
	  for f in $$(cd $$d && $(FUZZ_TARGETS)); do \
	    echo "== fuzz $${d#$(CURDIR)/} $$f"; \
	    (cd $$d && go test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) .) || exit 1; \
	  done; \
	done

.PHONY: bench-ingress
bench-ingress: ## ingress vs a bare HMAC server (ceiling) and a naive kafka-go receiver, 3 interleaved rounds, raw-connection load generator: req/s, CPU per request per process, latency at 1,000/s, RSS, every 2xx found in Kafka
	go run ./tools/ingressbench

.PHONY: bench-enricher
bench-enricher: ## the enricher process against the local CRM server (20 ms answers), after a kafka-go passthrough on the same events: events/s, CPU per event (enricher, broker, Redis) and ratios to the passthrough, added latency at 200/s, warm and cold cache
	go run ./tools/enricherbench

.PHONY: bench-sink
bench-sink: ## sink-warehouse as a process on 100k enriched events, after a kafka-go passthrough on the same input: rows/s, CPU per row, RSS, each event one row
	go run ./tools/sinkbench -n 100000

.PHONY: bench-pipeline
bench-pipeline: ## the whole pipeline as processes, every destination: idle CPU, latency per destination and CPU per event per process at 1,000/s and 100/s, then a 20k burst drained
	go run ./tools/pipelinebench -rate 1000 -low-rate 100 -duration 15s -burst 20000

.PHONY: bench-pipeline-core
bench-pipeline-core: ## bench-pipeline to the warehouse only (ingress, normalizer, enricher, sink-warehouse): the numbers issue 17 sets targets for; both run each service with GOMAXPROCS=1, as the chart does (-gomaxprocs 0: one per core)
	go run ./tools/pipelinebench -rate 1000 -low-rate 100 -duration 15s -burst 20000 -webhook=false -helpdesks=false -crm=false

.PHONY: bench-scaling
bench-scaling: ## 1, 2 and 3 processes of the normalizer and of sink-warehouse on the same input (and their passthrough baselines)
	go run ./tools/normalizerbench -procs 1,2,3
	go run ./tools/sinkbench -n 100000 -procs 1,2,3

.PHONY: bench-backfill
bench-backfill: ## a backfill of 100,000 responses from the local Delighted API to the warehouse, and the naive baseline (list and re-send as webhooks)
	go run ./tools/backfillbench -n 100000

.PHONY: bench-normalizer
bench-normalizer: ## one normalizer process on 200k raw records (20 % repeats), after a kafka-go passthrough on the same input: events/s, CPU per record, RSS, each event once
	go run ./tools/normalizerbench -n 200000

.PHONY: bench
bench: ## Go micro-benchmarks (verify, mapping)
	cd services/ingress && go test -run XXX -bench . -benchmem ./internal/verify
	cd services/normalizer && go test -run XXX -bench . -benchmem ./internal/mapping ./internal/drift ./internal/normalize

.PHONY: clean
clean: ## remove build output and local state
	rm -rf bin .devstack
