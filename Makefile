# Vigo Enroll — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
# One version for the three binaries: buildinfo reports it (and the commit,
# for builds outside a checkout); agent.Version is what agents report and
# what the distribution manifest reads.
BUILDINFO := github.com/vigo-enroll/vigo/schemas/buildinfo
LDFLAGS := -X github.com/vigo-enroll/vigo/agent.Version=$(VERSION) -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT)
BIN := bin
DATA ?= vigo-data
IMAGE ?= vigo-enroll

.PHONY: help build vigoload run test test-short test-postgres test-image image lint proto proto-check dist dist-sign-agent fuzz bench clean

help: ## Show this help
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/vigosrv, bin/vigo and bin/vigocli
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/vigosrv ./cmd/vigo ./cmd/vigocli

vigoload: ## Build bin/vigoload, the fleet simulator (load tool; see BENCHMARKS.md)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/vigoload

run: build ## Build, then start the server on the example config (data in ./vigo-data)
	@mkdir -p $(DATA)/dist
	@GOOS=$$($(GO) env GOOS) GOARCH=$$($(GO) env GOARCH); \
	  $(GO) build -ldflags "-s -w $(LDFLAGS)" -o $(DATA)/dist/vigo-$$GOOS-$$GOARCH ./cmd/vigo && \
	  $(BIN)/vigocli dist manifest --dir $(DATA)/dist --version $(VERSION) >/dev/null
	$(BIN)/vigosrv serve --config examples/server.yaml --data-dir $(DATA)

test: ## Run the whole test suite with the race detector
	$(GO) test -race -count=1 -timeout 20m ./...

test-short: ## Run the tests without the race detector
	$(GO) test -count=1 ./...

test-postgres: ## Start a private PostgreSQL on loopback, run the PostgreSQL tests against it, stop it
	bash .ci/postgres.sh run $(GO) test -race -count=1 ./server/store/pgstore/ ./server/

image: ## Build the container image $(IMAGE) FROM scratch (no registry needed; Dockerfile is the multi-stage form)
	bash .ci/image-rootfs.sh build/image/rootfs $(VERSION)
	cp Dockerfile.local build/image/Dockerfile
	docker build -q -t $(IMAGE) build/image
	@docker image ls $(IMAGE) --format '{{.Repository}}:{{.Tag}} {{.Size}}'

test-image: ## Build the image and test it on the Docker engine (ports 127.0.0.1:2xxxx; removes what it creates)
	$(MAKE) image IMAGE=vigo-enroll:imagetest
	VIGO_TEST_IMAGE=vigo-enroll:imagetest $(GO) test -tags image -count=1 -timeout 15m -run '^TestImage' -v ./cmd/vigosrv/ ; \
	  rc=$$?; docker rmi -f vigo-enroll:imagetest >/dev/null; exit $$rc

lint: ## go vet, gofmt and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags image ./cmd/vigosrv/
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

proto: ## Regenerate the gRPC code in schemas/agentpb
	bash schemas/agentpb/gen.sh

proto-check: ## Fail when the generated gRPC code is stale
	bash schemas/agentpb/gen.sh --check

dist: ## Cross-compile the agent for every platform into dist/ with manifest.json
	bash .ci/dist.sh dist $(VERSION)

dist-sign-agent: ## Sign every binary in dist/ with the offline key: make dist-sign-agent KEY=path
	@test -n "$(KEY)" || { echo "usage: make dist-sign-agent KEY=path/to/signing.key"; exit 2; }
	$(GO) run ./cmd/vigocli dist sign --dir dist --key $(KEY)

fuzz: ## Run each fuzz target for a short while
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzGlobMatch$$' -fuzztime 20s
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime 20s
	$(GO) test ./gitsync -run '^$$' -fuzz '^FuzzSSHSig$$' -fuzztime 10s
	$(GO) test ./server/token -run '^$$' -fuzz FuzzParse -fuzztime 10s
	$(GO) test ./server/httpapi -run '^$$' -fuzz FuzzDecodeRegister -fuzztime 10s
	$(GO) test ./server/httpapi -run '^$$' -fuzz '^FuzzForwardedFor$$' -fuzztime 10s
	$(GO) test ./schemas/agentbuild -run '^$$' -fuzz '^FuzzStatement$$' -fuzztime 10s
	$(GO) test ./server/agentdist -run '^$$' -fuzz '^FuzzParseManifest$$' -fuzztime 10s

bench: ## Run the Go benchmarks that BENCHMARKS.md reports (see it for the fleet simulator)
	$(GO) test -run '^$$' -bench 'Decide|Load' -benchtime 2s ./policy
	$(GO) test -run '^$$' -bench 'Registration|PushToActive|BootstrapOneLiner' -benchtime 20x ./server
	$(GO) test -run '^$$' -bench Load -benchtime 1x ./server/grpcapi/loadtest
	$(GO) test -run '^$$' -bench EnvoysPage100k -benchtime 20x ./server/console

clean: ## Remove build outputs (not the data folder)
	rm -rf $(BIN) dist build
