package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"
)

// deps are what the handlers need, built once by serve.
type deps struct {
	log                               *slog.Logger
	store                             *store
	keys                              [][]byte      // token keys: keys[0] signs, all verify
	tokenTTL, sessionTTL, sessionIdle time.Duration // config.go says what each is
	now                               func() time.Time
	bcrypt                            *bcryptLimiter // per process: it guards this process's CPU
	trusted                           []netip.Prefix // proxies whose X-Forwarded-For is believed
}

// routes lists the whole HTTP surface, one line a route, and which routes
// need a user (authed). The OpenAPI drift test reads the same list.
func routes(d deps, handle func(pattern string, h http.Handler)) {
	authed := func(h http.Handler) http.Handler { return requireUser(d, h) }
	handle("GET /healthz", handleHealthz())
	handle("GET /readyz", handleReadyz(d))
	handle("POST /token", handleToken(d))
	handle("GET /movies", authed(handleGetMovie(d))) // compat.go
	handle("GET /movies/{$}", authed(handleGetMovie(d)))
	handle("GET /movies/new", authed(handleNewMovies(d)))
	handle("GET /users/me", authed(handleMe()))
	handle("POST /revoke", handleRevoke(d))
	handle("GET /sessions", authed(handleListSessions(d)))
	handle("DELETE /sessions", authed(handleEndAllSessions(d)))
	handle("DELETE /sessions/{session_id}", authed(handleEndSession(d)))
	handle("GET /openapi.json", handleOpenAPI())
	handle("GET /docs", handleDocs())
}

// newLogger logs to w as text or JSON lines, adding each request's id.
func newLogger(w io.Writer, format string) *slog.Logger {
	var h slog.Handler = slog.NewTextHandler(w, nil)
	if format == "json" {
		h = slog.NewJSONHandler(w, nil)
	}
	return slog.New(requestIDHandler{h})
}

// newHandler serves every route, with the middleware that wraps them all.
func newHandler(d deps) http.Handler {
	mux := http.NewServeMux()
	routes(d, mux.Handle)
	mux.Handle("/", handleNoRoute(mux)) // JSON 404, 405 and trailing-slash 307
	return withMiddleware(d.log, decodedPaths(mux))
}

// withMiddleware wraps h in what every request goes through.
func withMiddleware(log *slog.Logger, h http.Handler) http.Handler {
	return logRequests(log, recoverPanics(log, secureHeaders(h)))
}

const (
	maxBodyBytes   = 64 << 10 // nothing myapi accepts comes near either
	maxHeaderBytes = 16 << 10
)

// newHTTPServer sets every timeout, or one slow client holds a connection for ever.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		// OPTIONS * goes to the handler, with the headers every response has.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

func handleReadyz(d deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
		defer cancel()
		if err := d.store.db.PingContext(ctx); err != nil {
			databaseFailed(w, r, d.log, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// handleNoRoute answers what the mux does not route, in JSON: 405 with
// Allow, the original's 307 to the other trailing-slash form, or 404.
func handleNoRoute(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r, r.URL.Path); allow != nil {
			methodNotAllowed(w, r, allow)
		} else if !redirectToOtherSlash(w, r, mux) {
			notFound(w, r)
		}
	})
}

// allowedMethods lists the methods that have a route for path.
func allowedMethods(mux *http.ServeMux, r *http.Request, path string) []string {
	var allow []string
	probe := r.Clone(r.Context())
	probe.URL.Path, probe.URL.RawPath = path, ""
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	return allow
}

// secureHeaders sets the headers every response carries.
func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// writeJSON writes v as compact JSON (compat.go). Content-Type is set
// before WriteHeader, which ignores headers set after it.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshalJSON(v)
	if err != nil { // a bug, or a NaN stored in a NUMERIC column
		panic("writeJSON: " + err.Error()) // recoverPanics logs it and answers 500
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// marshalJSON is json.Marshal without HTML escaping.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), err
}

// requestLog is a request's id and what handlers add to its log line.
type requestLog struct {
	id    string
	attrs []slog.Attr
}

type requestLogKey struct{}

// addLogAttrs adds attrs to r's line in the request log.
func addLogAttrs(r *http.Request, attrs ...slog.Attr) {
	if l, ok := r.Context().Value(requestLogKey{}).(*requestLog); ok {
		l.attrs = append(l.attrs, attrs...)
	}
}

// requestIDHandler adds the request's id to what is logged with its context.
type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, rec slog.Record) error {
	if l, ok := ctx.Value(requestLogKey{}).(*requestLog); ok {
		rec.AddAttrs(slog.String("request_id", l.id))
	}
	return h.Handler.Handle(ctx, rec)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}

// requestID keeps a client's X-Request-ID when it is short and plain, so
// it cannot forge log lines, and makes a new one otherwise.
func requestID(r *http.Request) string {
	const plain = "-_.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	id := r.Header.Get("X-Request-ID")
	if id == "" || len(id) > 64 || strings.Trim(id, plain) != "" {
		return rand.Text()[:16]
	}
	return id
}

// logRequests writes one line per request. It logs the path without the
// query and never a header: Authorization holds a credential.
func logRequests(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		l := &requestLog{id: requestID(r)}
		w.Header().Set("X-Request-ID", l.id)
		ctx := context.WithValue(r.Context(), requestLogKey{}, l)
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r.WithContext(ctx))
		attrs := append([]slog.Attr{
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", cmp.Or(rec.status, http.StatusOK)), // none written: 200
			slog.Int("bytes", rec.bytes),
			slog.Duration("duration", time.Since(start)),
		}, l.attrs...)
		log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
	})
}

// statusRecorder remembers a response's status and size, for the log.
type statusRecorder struct {
	http.ResponseWriter
	status, bytes int // status 0: not written yet
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = cmp.Or(r.status, status)
	r.ResponseWriter.WriteHeader(status)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.status = cmp.Or(r.status, http.StatusOK)
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// recoverPanics turns a panic into a 500 and a logged stack; the server goes on.
func recoverPanics(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			switch v := recover(); v {
			case nil:
			case http.ErrAbortHandler: // the handler's way to drop a connection
				panic(v)
			default:
				log.LogAttrs(r.Context(), slog.LevelError, "panic", slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
				internalError(w, r)
			}
		}()
		h.ServeHTTP(w, r)
	})
}
