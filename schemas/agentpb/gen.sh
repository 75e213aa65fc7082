#!/usr/bin/env bash
# Regenerate the Go code of agent.proto (make proto), or with --check fail
# when the committed code is stale (make proto-check).
# Needs protoc >= 3.21 (Debian: protobuf-compiler); installs the two plugins
# at the pinned versions into $(go env GOPATH)/bin when they are missing.
set -euo pipefail
cd "$(dirname "$0")"
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.5.1
bin="$(go env GOPATH)/bin"
export PATH="$bin:$PATH"
command -v protoc >/dev/null || { echo "gen.sh: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
have() { command -v "$1" >/dev/null && "$1" --version 2>&1 | grep -q "$2"; }
have protoc-gen-go "$PROTOC_GEN_GO" || go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
have protoc-gen-go-grpc "${PROTOC_GEN_GO_GRPC#v}" || go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
if [[ "${1:-}" == "--check" ]]; then
  go test -count=1 -run '^TestGeneratedCodeIsCurrent$' .
  exit
fi
protoc --proto_path=. \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  agent.proto
echo "regenerated schemas/agentpb"
