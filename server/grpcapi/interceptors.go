package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/vigo-enroll/vigo/server/ca"
)

// recoverInterceptor turns a panic in a handler into INTERNAL.
func (s *Server) recoverInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.logger.Error("panic in handler", "method", info.FullMethod, "err", p, "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	return h(ctx, req)
}

// loggingInterceptor counts and times requests and logs refusals (Warn)
// and internal failures (Error). Successful requests are logged at Debug
// only: they are the hot path.
func (s *Server) loggingInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	method := path.Base(info.FullMethod)
	code := status.Code(err)
	s.m.requests.WithLabelValues(method, code.String()).Inc()
	s.m.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	if err == nil {
		if s.logger.Enabled(ctx, slog.LevelDebug) {
			e, _ := EnvoyFromContext(ctx)
			s.logger.Debug("request", "method", method, "envoy_uuid", e.UUID, "duration", time.Since(start))
		}
		return resp, nil
	}
	attrs := []any{"method", method, "code", code.String(), "source_ip", peerIP(ctx)}
	var r *RefusedError
	if errors.As(err, &r) {
		attrs = append(attrs, "envoy_uuid", r.UUID)
	} else if e, ok := EnvoyFromContext(ctx); ok {
		attrs = append(attrs, "envoy_uuid", e.UUID)
	}
	switch code {
	case codes.Internal, codes.Unknown, codes.Unavailable:
		var ie *internalError
		if errors.As(err, &ie) {
			attrs = append(attrs, "err", ie.err)
		} else {
			attrs = append(attrs, "err", err)
		}
		s.logger.Error("request failed", attrs...)
	default:
		s.logger.Warn("request refused", append(attrs, "err", status.Convert(err).Message())...)
	}
	return nil, err
}

// authInterceptor checks the connection's client certificate against the
// current state of the envoy (it may have been revoked or renewed since the
// handshake) and puts the Envoy in the context.
func (s *Server) authInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil, status.Error(codes.Unauthenticated, "no client certificate")
	}
	// After a CA rotation changed the roots, a connection may have been
	// established against roots that trusted a CA dropped since: its
	// chain is verified again (once per chain and generation, see
	// certCache). Before any change the handshake's verification holds.
	if s.trust.Load().gen > 1 {
		if err := s.verifyClientChain(ti.State.PeerCertificates, s.now()); err != nil {
			uuid, _ := ca.EnvoyUUID(ti.State.PeerCertificates[0])
			return nil, status.Errorf(codes.Unauthenticated, "client certificate of envoy %s is not from a CA this server trusts (the CA was rotated); reconnect, or register again if the certificate is from the CA dropped", uuid)
		}
	}
	e, err := s.identify(ctx, ti.State.PeerCertificates[0])
	if err != nil {
		return nil, err
	}
	// Per envoy, after authentication: only the envoy itself spends its
	// bucket, and a flooding envoy is refused before any signature work.
	if ok, wait := s.guard.take(e.UUID, s.now()); !ok {
		return nil, status.Errorf(codes.ResourceExhausted, "envoy %s sends too many requests; retry in %s", e.UUID, wait.Round(time.Second)+time.Second)
	}
	return h(withEnvoy(ctx, e), req)
}

func peerIP(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		return remoteIP(p.Addr)
	}
	return ""
}

// internalError is an INTERNAL or UNAVAILABLE status whose cause is logged
// but not sent to the client.
type internalError struct {
	st  *status.Status
	err error
}

func (e *internalError) Error() string              { return e.st.Message() }
func (e *internalError) GRPCStatus() *status.Status { return e.st }
func (e *internalError) Unwrap() error              { return e.err }

func internal(code codes.Code, msg string, err error) error {
	return &internalError{st: status.New(code, msg), err: err}
}
