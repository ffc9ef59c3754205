# lem — GPU energy measurement for LLM-inference experiments.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
# go-nvml's header marks old NVML calls deprecated; the warnings are noise for a cgo build.
export CGO_CFLAGS ?= -Wno-deprecated-declarations
export CGO_ENABLED := 1

.PHONY: all build test test-short services demo bench lint gpu-check clean fuzz fuzz-short mutate

all: build

build:
	$(GO) build -trimpath -o $(BIN)/ ./cmd/...

# Every test, under the race detector, with the services the tests need (Docker Engine, Prometheus, Slurm)
# installed and started: a test that needs a missing service fails instead of skipping.
test: services lint fuzz-short
	LEM_REQUIRE_SERVICES=1 $(GO) test -race -count=1 -timeout 15m ./...
	@# Real-time load tests skip under the race detector (instrumented code falls behind the wall clock): once more
	@# without it.
	LEM_REQUIRE_SERVICES=1 $(GO) test -count=1 -run 'TestScrapeLoadCausesNoCaptureGaps' ./exporter/

# Quick feedback while editing: no services, long replays skipped.
test-short:
	$(GO) test -short ./...

services:
	scripts/services.sh

# Every Go fuzz target for FUZZTIME each, seeded from its testdata/fuzz corpus; an input that fails is written
# there. fuzz-short is the quick pass make test runs.
FUZZTIME ?= 60s
fuzz:
	@FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=5s

# Deliberate bugs in the energy math, one at a time, each of which the tests must catch (a table of which test
# did); slow: a test pass per bug. scripts/mutate.sh -n only checks that every bug still applies and compiles.
mutate:
	scripts/mutate.sh

# On a host with an NVIDIA GPU: records the GPUs around a known-shape load and prints per-phase energy.
# Elsewhere: replays a recorded real H200 trace through the same sampler and prints the same tables.
demo:
	@if command -v $(GO) >/dev/null; then $(MAKE) --no-print-directory build; \
	  else echo "demo: no Go toolchain here; using the binaries in $(BIN)/ (built elsewhere with make build)"; fi
	scripts/demo.sh

bench:
	scripts/bench.sh

# Packages deadcode judges: the product's, not the test helpers (internal/testutil, gputest) nor the test-only e2e.
DEADCODE_PKGS := ^github.com/lem-energy/lem/((analyze|cmd|dashboards|deploy|exporter|runner)(/.*)?|internal/(catalogue|cli|fileutil|gpu|manifest|marker|meta|ordered|procmap|recorder|sampler|trace))$$

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@out=$$($(GO) tool deadcode -filter '$(DEADCODE_PKGS)' ./...); \
	  if [ -n "$$out" ]; then echo "unreachable code (remove it, or use it):"; echo "$$out"; exit 1; fi
	@# A binary that links Go's plugin package binds every symbol at start, and NVML's are resolved only when
	@# the driver is loaded: such a binary would not start.
	@if $(GO) list -deps ./cmd/... | grep -qx plugin; then echo "a command imports package plugin"; exit 1; fi

# Real-GPU checks in one go (capture completeness, gaps, counter latency, per-phase energy by method).
gpu-check: build
	scripts/gpu-check.sh

clean:
	rm -rf $(BIN)
