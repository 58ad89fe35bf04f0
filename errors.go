package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The whole error vocabulary of the API, in FastAPI's shape: {"detail": ...},
// a string for HTTP errors and a list for validation errors.

// errorResponse also puts the detail, never a secret, on the request's log line.
func errorResponse(w http.ResponseWriter, r *http.Request, status int, detail any) {
	addLogAttrs(r, slog.Any("detail", detail))
	writeJSON(w, status, struct {
		Detail any `json:"detail"`
	}{detail})
}

func notFound(w http.ResponseWriter, r *http.Request) {
	errorResponse(w, r, http.StatusNotFound, "Not Found")
}

func movieNotFound(w http.ResponseWriter, r *http.Request) {
	errorResponse(w, r, http.StatusNotFound, "Movie not found")
}

func sessionNotFound(w http.ResponseWriter, r *http.Request) {
	errorResponse(w, r, http.StatusNotFound, "Session not found")
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow []string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	errorResponse(w, r, http.StatusMethodNotAllowed, "Method Not Allowed")
}

// The 401s carry RFC 6750's challenge: a bare "Bearer" when no
// credentials came, error="invalid_token" when bad ones did (§3.1).

// noBearerToken answers a request without an Authorization: Bearer header.
func noBearerToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", "Bearer")
	errorResponse(w, r, http.StatusUnauthorized, detailNoToken)
}

// badToken answers a token that is malformed, forged or revoked.
func badToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	errorResponse(w, r, http.StatusUnauthorized, detailBadToken)
}

func expiredToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	errorResponse(w, r, http.StatusUnauthorized, "Token expired")
}

// badLogin is the one answer for an unknown email and a wrong password.
func badLogin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", "Bearer")
	errorResponse(w, r, http.StatusUnauthorized, "Incorrect username or password")
}

func tooManyLogins(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
	errorResponse(w, r, http.StatusTooManyRequests, "Too many failed login attempts, try again later")
}

// loginsBusy answers a login that found no free bcrypt slot in time.
func loginsBusy(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", "1")
	errorResponse(w, r, http.StatusServiceUnavailable, "Service unavailable")
}

// oauthError answers 400 in RFC 6749 §5.2's shape, which OAuth clients
// read, and the description again as detail, which this API's clients read.
func oauthError(w http.ResponseWriter, r *http.Request, code, description string) {
	addLogAttrs(r, slog.String("detail", code+": "+description))
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusBadRequest, struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Detail      string `json:"detail"`
	}{code, description, description})
}

// unreadableBody answers 413 for a body over the limit, else 400, as FastAPI
// does, and closes the connection rather than read the rest of the body.
func unreadableBody(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("Connection", "close")
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		errorResponse(w, r, http.StatusRequestEntityTooLarge, "Request body too large")
		return
	}
	errorResponse(w, r, http.StatusBadRequest, "There was an error parsing the body")
}

// databaseFailed answers a failed query: 503 when the database is
// unavailable, else 500 (a bug). The cause goes to the log alone.
func databaseFailed(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	cause := slog.String("error", err.Error())
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		log.LogAttrs(r.Context(), slog.LevelWarn, "query canceled: client went away", cause)
	case unavailable(err):
		log.LogAttrs(r.Context(), slog.LevelError, "database unavailable", cause)
	default:
		log.LogAttrs(r.Context(), slog.LevelError, "query failed", cause)
		internalError(w, r)
		return
	}
	errorResponse(w, r, http.StatusServiceUnavailable, "Service unavailable")
}

// internalError answers a bug, which is logged where it is found.
func internalError(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Connection", "close")
	errorResponse(w, r, http.StatusInternalServerError, "Internal Server Error")
}

// validationFailed answers 422 with the list of problems.
func validationFailed(w http.ResponseWriter, r *http.Request, problems []fieldError) {
	errorResponse(w, r, http.StatusUnprocessableEntity, fieldErrors(problems))
}

// fieldError is one entry of a 422 validation list.
type fieldError struct {
	Loc  []string          `json:"loc"`
	Msg  string            `json:"msg"`
	Type string            `json:"type"`
	Ctx  map[string]string `json:"ctx,omitempty"`
}

// fieldErrors is a validation list: JSON in responses and JSON logs, and
// "query.year: value is not a valid integer; ..." in text logs.
type fieldErrors []fieldError

func (e fieldErrors) MarshalJSON() ([]byte, error) { return json.Marshal([]fieldError(e)) }

func (e fieldErrors) MarshalText() ([]byte, error) {
	var problems []string
	for _, f := range e {
		problems = append(problems, strings.Join(f.Loc, ".")+": "+f.Msg)
	}
	return []byte(strings.Join(problems, "; ")), nil
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
