package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/policyctl"
)

// policyCtl returns the policy controller, or answers 404.
func (a *API) policyCtl(w http.ResponseWriter) (PolicyController, bool) {
	if a.cfg.PolicyCtl == nil {
		writeError(w, http.StatusNotFound, "no policy source is configured: set policy.dir or policy.git")
		return nil, false
	}
	return a.cfg.PolicyCtl, true
}

// control decodes a PolicyControlRequest (an empty body is an empty
// request), checks that the fields in need are set, runs op and answers
// the resulting status.
func (a *API) control(w http.ResponseWriter, r *http.Request, need string, op func(PolicyController, apiv1.PolicyControlRequest) error) {
	ctl, ok := a.policyCtl(w)
	if !ok {
		return
	}
	var req apiv1.PolicyControlRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, &req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	switch {
	case len(req.Reason) > 500:
		writeError(w, http.StatusBadRequest, "reason: at most 500 characters")
		return
	case need == "reason" && strings.TrimSpace(req.Reason) == "":
		writeError(w, http.StatusBadRequest, "reason: required (say why, for the audit log and the status)")
		return
	case need == "revision" && req.Revision == "":
		writeError(w, http.StatusBadRequest, "revision: required")
		return
	case len(req.Revision) > 100:
		writeError(w, http.StatusBadRequest, "revision: at most 100 characters")
		return
	}
	err := op(ctl, req)
	switch {
	case errors.Is(err, policyctl.ErrNoChange):
		writeError(w, http.StatusConflict, err.Error())
		return
	case errors.Is(err, policyctl.ErrNotApplied):
		writeError(w, http.StatusNotFound, err.Error())
		return
	case err != nil:
		a.internal(w, "policy control", err)
		return
	}
	writeJSON(w, http.StatusOK, ctl.Status())
}

func (a *API) handlePolicySuspend(w http.ResponseWriter, r *http.Request) {
	a.control(w, r, "reason", func(c PolicyController, req apiv1.PolicyControlRequest) error {
		return c.Suspend(r.Context(), req.Reason, actor(r))
	})
}

func (a *API) handlePolicyResume(w http.ResponseWriter, r *http.Request) {
	a.control(w, r, "", func(c PolicyController, _ apiv1.PolicyControlRequest) error { return c.Resume(r.Context(), actor(r)) })
}

func (a *API) handlePolicyPin(w http.ResponseWriter, r *http.Request) {
	a.control(w, r, "revision", func(c PolicyController, req apiv1.PolicyControlRequest) error {
		return c.Pin(r.Context(), req.Revision, req.Reason, actor(r))
	})
}

func (a *API) handlePolicyUnpin(w http.ResponseWriter, r *http.Request) {
	a.control(w, r, "", func(c PolicyController, _ apiv1.PolicyControlRequest) error { return c.Unpin(r.Context(), actor(r)) })
}

func (a *API) handlePolicyHistory(w http.ResponseWriter, r *http.Request) {
	ctl, ok := a.policyCtl(w)
	if !ok {
		return
	}
	limit := 20
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "limit: a number from 1 to 100")
			return
		}
		limit = n
	}
	hs, err := ctl.History(r.Context(), limit)
	if err != nil {
		a.internal(w, "policy history", err)
		return
	}
	writeJSON(w, http.StatusOK, hs)
}
