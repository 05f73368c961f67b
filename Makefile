# ghostrouter: a userspace IP router with a built-in cluster dispatcher.
# Run as root on Linux: `make demo`, `make test`.

GO      ?= go
BIN     := bin
PKGS    := ./...
export GOFLAGS ?= -buildvcs=false
# What --version prints: from git when this is a checkout, else devel/unknown.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
VPKG    := github.com/ghostrouter/ghostrouter/cmd/internal/version
LDFLAGS := -X $(VPKG).version=$(VERSION) -X $(VPKG).commit=$(COMMIT)

.PHONY: help deps bench-deps build test unit race demo bench sustained vet fuzz clean

help: ## list the targets
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## /{printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/ghostrouter, bin/ghostnode and the test peer
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ghostrouter ./cmd/ghostrouter
	@if [ -d cmd/ghostnode ] && ls cmd/ghostnode/*.go >/dev/null 2>&1; then $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ghostnode ./cmd/ghostnode; fi
	$(GO) build -o $(BIN)/peer ./test/cmd/peer

vet: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

deps: ## install the Debian packages the demo and the tests use, if any is missing (root)
	@./.ci/deps.sh

bench-deps: ## install the Debian packages the benchmark adds (wrk, nginx-light), if missing (root)
	@./.ci/bench-deps.sh

test: deps vet ## every test: unit, in-memory and end-to-end (root; under CI=true nothing may skip)
	$(GO) test -count=1 -timeout 30m $(PKGS)

unit: ## tests that need no root (the privileged ones skip outside CI)
	$(GO) test -count=1 -short $(PKGS)

# The unit tiers: every package but the end-to-end and benchmark rigs.
UNITPKGS = $$($(GO) list ./... | grep -v -e /test/e2e -e /test/bench)

race: ## the unit tiers (unit tests, socket-pair router tests) under the race detector
	$(GO) test -race -count=1 -short -timeout 30m $(UNITPKGS)

demo: deps build ## the showcase: namespaces, servers, the appliance, traffic, a readable account
	$(GO) run ./test/cmd/demo -bin $(BIN)

bench: deps bench-deps build ## kernel vs ghostrouter side by side (root, about 10 minutes), then the datapath micro-benchmarks
	GHOSTROUTER_BENCH=1 $(GO) test -count=1 -run '^TestBench$$' -v -timeout 30m ./test/bench/
	$(GO) test -run '^$$' -bench . -benchmem ./dispatch/ ./dispatch/core/ ./router/...

sustained: deps bench-deps build ## only the sustained 30 s short-connection run, kernel and ghostrouter (root)
	GHOSTROUTER_BENCH=1 $(GO) test -count=1 -run '^TestSustainedShortConnections$$' -v -timeout 10m ./test/bench/

FUZZTIME ?= 10s
# Go's fuzz coordinator (before Go 1.27) can end a run with a bare "context deadline
# exceeded" when -fuzztime runs out while a starved worker is mid-call (a race in the
# toolchain, not an input: no reproducer is written). Such a run is retried once; a
# failure with a reproducer, or the same twice, fails the target.
fuzz: ## run every fuzzer (func FuzzX in *_test.go) for FUZZTIME each (default 10s)
	@set -e; for d in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$d/*_test.go | cut -d' ' -f2); do \
	    echo "== $$d $$f ($(FUZZTIME))"; \
	    for try in 1 2; do \
	      if out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$d 2>&1); then echo "$$out" | tail -n 2; break; fi; \
	      echo "$$out"; \
	      if [ $$try = 1 ] && echo "$$out" | grep -qx '    context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
	        echo "   (the fuzz coordinator's end-of-fuzztime race, no input written: retrying once)"; continue; fi; \
	      exit 1; \
	    done; \
	  done; \
	done

clean: ## remove build output
	rm -rf $(BIN)
