package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxWebhookBody caps webhook payloads; the payload is only a signal, but
// its HMAC covers all of it.
const maxWebhookBody = 1 << 20

// handleWebhook accepts GitHub (X-Hub-Signature-256), GitLab
// (X-Gitlab-Token) and generic (X-Vigo-Signature: sha256=<hex HMAC>)
// notifications. The body is never trusted for a commit id: a valid call
// only triggers a poll of the remote.
func (a *API) handleWebhook(w http.ResponseWriter, r *http.Request) {
	if ok, wait := a.hookLim.Take(a.sourceIP(r)); !ok {
		tooMany(w, wait, "too many webhook calls")
		return
	}
	if len(a.cfg.WebhookSecret) == 0 || a.cfg.PolicyCtl == nil {
		writeError(w, http.StatusNotFound, "the policy webhook is not configured: set policy.webhook_secret_file")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("webhook body larger than %d bytes", maxWebhookBody))
			return
		}
		writeError(w, http.StatusBadRequest, "read webhook body: "+err.Error())
		return
	}
	if !a.webhookAuthentic(r, body) {
		a.log.Warn("webhook refused: bad or missing signature", "source_ip", a.sourceIP(r))
		writeError(w, http.StatusUnauthorized, "webhook signature is missing or does not match the configured secret")
		return
	}
	if r.Header.Get("X-GitHub-Event") == "ping" {
		writeJSON(w, http.StatusOK, map[string]string{"status": "pong"})
		return
	}
	a.cfg.PolicyCtl.Trigger()
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "sync requested"})
}

func (a *API) webhookAuthentic(r *http.Request, body []byte) bool {
	secret := a.cfg.WebhookSecret
	if tok := r.Header.Get("X-Gitlab-Token"); tok != "" {
		// Compare fixed-size digests so neither content nor length leaks through timing.
		x, y := sha256.Sum256([]byte(tok)), sha256.Sum256(secret)
		return subtle.ConstantTimeCompare(x[:], y[:]) == 1
	}
	sig := r.Header.Get("X-Hub-Signature-256")
	if sig == "" {
		sig = r.Header.Get("X-Vigo-Signature")
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}
