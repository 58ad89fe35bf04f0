package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
)

// The whole error vocabulary of the API, in FastAPI's shape: {"detail": ...},
// a string for HTTP errors and a list for validation errors.

// errorResponse writes {"detail": detail} with status. The detail also
// goes on the request's log line (logRequests); no detail holds a secret.
func errorResponse(w http.ResponseWriter, r *http.Request, status int, detail any) {
	if info := infoFrom(r.Context()); info != nil {
		info.detail = detail
	}
	writeJSON(w, status, struct {
		Detail any `json:"detail"`
	}{detail})
}

// fieldError is one entry of a 422 validation list.
type fieldError struct {
	Loc  []string          `json:"loc"`
	Msg  string            `json:"msg"`
	Type string            `json:"type"`
	Ctx  map[string]string `json:"ctx,omitempty"`
}

// The validation problems the API reports, with the original's wording.
func missingField(in, name string) fieldError {
	return fieldError{Loc: []string{in, name}, Msg: "field required", Type: "value_error.missing"}
}

func notInteger(in, name string) fieldError {
	return fieldError{Loc: []string{in, name}, Msg: "value is not a valid integer", Type: "type_error.integer"}
}

func notFloat(in, name string) fieldError {
	return fieldError{Loc: []string{in, name}, Msg: "value is not a valid float", Type: "type_error.float"}
}

func notMatching(in, name, pattern string) fieldError {
	return fieldError{Loc: []string{in, name}, Msg: `string does not match regex "` + pattern + `"`,
		Type: "value_error.str.regex", Ctx: map[string]string{"pattern": pattern}}
}

// validationFailed answers 422 with the list of problems.
func validationFailed(w http.ResponseWriter, r *http.Request, problems []fieldError) {
	errorResponse(w, r, http.StatusUnprocessableEntity, problems)
}

// unauthorized answers 401 with the RFC 6750 challenge: a bare "Bearer"
// when no credentials came, error="invalid_token" when bad ones did.
func unauthorized(w http.ResponseWriter, r *http.Request, challenge, detail string) {
	w.Header().Set("WWW-Authenticate", challenge)
	errorResponse(w, r, http.StatusUnauthorized, detail)
}

// serviceUnavailable answers 503 when the database fails. The cause goes to
// the log, never to the client. A query canceled because the client went
// away (its context canceled, where the query budget's deadline would have
// passed) need not be the database's fault, and is logged as a warning:
// an operator still sees it when it comes of a database that hangs for
// clients that do not wait as long as the query budget.
func serviceUnavailable(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	if errors.Is(err, context.Canceled) && errors.Is(r.Context().Err(), context.Canceled) {
		log.LogAttrs(r.Context(), slog.LevelWarn, "query canceled: client went away", slog.String("error", err.Error()))
	} else {
		log.LogAttrs(r.Context(), slog.LevelError, "database unavailable", slog.String("error", err.Error()))
	}
	errorResponse(w, r, http.StatusServiceUnavailable, "Service unavailable")
}
