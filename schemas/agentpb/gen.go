// Package agentpb holds the gRPC check-in protocol between the agent and the
// server: agent.proto, the Go code generated from it, and the canonical
// signing encoding both sides share (sign.go).
//
// Regenerate with `make proto` (schemas/agentpb/gen.sh, which installs the
// plugins when missing) or `go generate ./schemas/agentpb`. Both need protoc
// 3.21 or later (Debian package protobuf-compiler) and the two plugins at
// these exact versions:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
//
// TestGeneratedCodeIsCurrent (and `make proto-check`) fails when the
// committed code differs from what these tools generate; the test skips
// only when protoc is not installed.
package agentpb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative agent.proto
