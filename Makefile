# Thin targets; CI runs `make test` as it is.
GO      ?= go
BIN     ?= ./chorus
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/chorus-rt/chorus/internal/app.Version=$(VERSION)

.PHONY: run build deps test test-go test-e2e test-reliability test-browser check-fmt vet conformance bench load soak soak-long reliability-long chaos-long cluster clean

## run: install the front-end packages if missing, build, and run chorus on :3000
run: node_modules build
	$(BIN)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) .

node_modules: package-lock.json
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	@touch node_modules

deps: node_modules

## test: every test: formatting, vet, Go tests with -race, the end-to-end suite with the stock client
## (tests/node), the short form of the reliability suite (tests/reliability), then the browser tests
## (tests/browser: the demo and the Admin UI, playwright-core driving Debian's chromium)
test: check-fmt vet test-go test-e2e test-reliability test-browser

check-fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# test-go needs node_modules: the Redis adapter's interop tests run the stock Node packages
test-go: node_modules
	$(GO) test -race -count=1 -timeout 10m ./...

test-e2e: node_modules build
	CHORUS_BIN=$(BIN) npm run --silent test:e2e

test-reliability: node_modules build
	CHORUS_BIN=$(BIN) npm run --silent test:reliability

## test-browser: the demo page, its client module and the Admin UI in Debian's headless chromium (playwright-core;
## CHROMIUM_BIN overrides `command -v chromium`); screenshots in test-artifacts/browser/
test-browser: node_modules build
	CHORUS_BIN=$(BIN) npm run --silent test:browser

## conformance: the official engine.io-protocol and socket.io-protocol suites against chorus
## (ENGINEIO_PROTOCOL_DIR and SOCKETIO_PROTOCOL_DIR point at fetched checkouts; nothing is committed)
conformance:
	$(GO) build -o conformance-server ./tests/conformance
	tests/conformance/run.sh ./conformance-server

## cluster: Redis, three chorus nodes and nginx with sticky routing on loopback, until Ctrl-C
## (needs redis-server and nginx; README "Cluster (Redis)")
cluster: node_modules build
	CHORUS_BIN=$(BIN) node tests/node/cluster/run.mjs

## bench: chorus vs Node socket.io vs a bare WebSocket server, side by side, each on one core
## (tests/bench/README.md; about 15 minutes; BENCH_FLAGS=-quick for a 2–3 minute smoke run)
bench: node_modules build
	CHORUS_BIN=$(BIN) BENCH_CHORUS_VERSION=$(VERSION) tests/bench/run.sh $(BENCH_FLAGS)

## load: artillery scenarios (connect + publish, HTTP fan-out, reconnect storm) against a freshly
## built chorus, each bounded; prints artillery's summaries and PASS/FAIL (tests/load/README.md; ~3 min)
load:
	tests/load/run.sh

## soak: 10 000 idle WebSocket connections held 10 minutes with a 2 s ping interval; fails on any
## unexpected disconnect, goroutines growing or not back to their count after, or RSS growth over
## 10 % (SOAK_FLAGS to change)
soak:
	$(GO) run ./tests/soak $(SOAK_FLAGS)

## reliability-long: the long form of tests/reliability (docs/RELIABILITY.md): 50 000 churn cycles,
## the fault scenarios with 2 000 clients (chaos-long), then the 30-minute soak (about 45 minutes)
reliability-long: node_modules build
	$(GO) test -race -count=1 -timeout 20m -run TestChurn -v ./tests/reliability -args -churn-cycles=50000
	CHORUS_BIN=$(BIN) npm run --silent test:reliability
	$(MAKE) chaos-long
	$(MAKE) soak-long

## chaos-long: the fault scenarios of tests/reliability at the issue's sizes (docs/RELIABILITY.md
## 1-3): two nodes behind nginx, 2 000 stock clients, Redis killed, a node killed with SIGKILL, a
## rolling restart; prints every figure (about 3 minutes)
chaos-long: node_modules build
	CHAOS_LONG=1 CHORUS_BIN=$(BIN) node --test --test-concurrency=1 tests/reliability/redis-outage.test.mjs tests/reliability/node-kill.test.mjs tests/reliability/rolling-restart.test.mjs

## soak-long: 10 000 connections for 30 minutes, 1 % of them publishing once a second to the rooms of
## the others; fails on any disconnect, lost or reordered message, warning or error logged, or drift;
## plots RSS and goroutines to docs/soak.png (issue 9)
soak-long:
	$(GO) run ./tests/soak -conns 10000 -duration 30m -every 60s -publishers 0.01 -plot docs/soak.png $(SOAK_FLAGS)

clean:
	rm -f $(BIN) conformance-server
