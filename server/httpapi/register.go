package httpapi

import (
	"errors"
	"net/http"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/enroll"
)

// decodeRegister reads a registration request body (FuzzDecodeRegister feeds it).
func decodeRegister(w http.ResponseWriter, r *http.Request) (apiv1.RegisterRequest, error) {
	var req apiv1.RegisterRequest
	err := decodeJSON(w, r, &req)
	return req, err
}

func (a *API) handleRegister(w http.ResponseWriter, r *http.Request) {
	req, err := decodeRegister(w, r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	resp, err := a.cfg.Enroller.Register(r.Context(), enroll.Request{RegisterRequest: req, SourceIP: a.sourceIP(r)})
	if err != nil {
		var e *enroll.Error
		if !errors.As(err, &e) {
			a.log.Error("register", "err", err)
			writeError(w, http.StatusInternalServerError, "internal error")
			return
		}
		switch e.Kind {
		case enroll.KindInvalid:
			writeError(w, http.StatusBadRequest, e.Msg)
		case enroll.KindDenied:
			writeError(w, http.StatusForbidden, e.Msg)
		case enroll.KindConflict:
			writeError(w, http.StatusConflict, e.Msg)
		case enroll.KindBusy:
			tooMany(w, e.RetryAfter, e.Msg)
		default:
			a.log.Error("register", "hostname", req.Hostname, "err", err)
			writeError(w, http.StatusInternalServerError, "internal error: see the server log")
		}
		return
	}
	writeJSON(w, http.StatusOK, resp)
}
