package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// bcrypt reads only the first 72 bytes of a password: longer ones are
// refused, before hashing and comparing, so that no two passwords are one.
const (
	minPasswordBytes = 8
	maxPasswordBytes = 72
)

// handleToken is POST /token: the OAuth2 password grant, or with
// grant_type=refresh_token the refresh grant (sessions.go).
func handleToken(d deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := readForm(w, r)
		if err != nil {
			unreadableBody(w, r, err)
			return
		}
		if f.get("grant_type") == "refresh_token" {
			refreshGrant(w, r, d, f.get("refresh_token"))
			return
		}
		if problems := loginProblems(f); problems != nil {
			validationFailed(w, r, problems)
			return
		}
		passwordGrant(w, r, d, f.get("username"), f.get("password"), slices.Contains(strings.Split(f.get("scope"), " "), "offline_access"))
	})
}

// passwordGrant checks a password, throttled, and opens a session (RFC 6749
// §4.3); offline asks for a refresh token too.
func passwordGrant(w http.ResponseWriter, r *http.Request, d deps, email, password string, offline bool) {
	attempt := throttleKeys{client: clientKey(clientAddr(r, d.trusted)), account: accountKey(email)}
	wait, err := d.store.startLogin(r.Context(), attempt)
	switch {
	case err != nil:
		databaseFailed(w, r, d.log, err)
		return
	case wait > 0:
		tooManyLogins(w, r, wait)
		return
	}
	u, err := authenticate(r.Context(), d.store, d.bcrypt, email, password)
	if !errors.Is(err, errBadCredentials) { // only a wrong password keeps its failure
		d.store.endLogin(r.Context(), d.log, attempt, err == nil)
	}
	var sid string
	if err == nil {
		sid, err = d.store.openSession(r.Context(), u, userAgent(r), d.sessionTTL, d.sessionIdle)
	}
	switch {
	case errors.Is(err, errBadCredentials):
		d.log.LogAttrs(r.Context(), slog.LevelInfo, "login failed")
		badLogin(w, r)
	case errors.Is(err, errBusy):
		loginsBusy(w, r)
	case err != nil:
		databaseFailed(w, r, d.log, err)
	default:
		grant(w, d, u, sid, 0, min(d.sessionTTL, d.sessionIdle), offline)
	}
}

// form is a request body's fields.
type form url.Values

// get returns the field's value; of a repeated field the last counts, as in a query.
func (f form) get(name string) string {
	if v := f[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// readForm reads a urlencoded or multipart form of at most maxBodyBytes,
// from the body alone, never the query string; anything else reads as an
// empty form, as in the original. The error is an *http.MaxBytesError for
// a body over the limit.
func readForm(w http.ResponseWriter, r *http.Request) (form, error) {
	if r.ContentLength > maxBodyBytes {
		return nil, &http.MaxBytesError{Limit: maxBodyBytes}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var f url.Values
	var err error
	switch mediaType {
	case "application/x-www-form-urlencoded":
		var body []byte
		body, err = io.ReadAll(r.Body)
		f, _ = url.ParseQuery(string(body)) // a malformed pair counts as absent, as in a query
	case "multipart/form-data":
		f, err = readMultipart(r)
	default:
		// Read it anyway, so that an oversized body is 413 whatever its type.
		_, err = io.Copy(io.Discard, r.Body)
	}
	return form(f), err
}

// readMultipart reads a multipart form from the body alone, not the query.
func readMultipart(r *http.Request) (url.Values, error) {
	mr, err := r.MultipartReader()
	if err == nil {
		var f *multipart.Form
		if f, err = mr.ReadForm(maxBodyBytes); err == nil {
			defer f.RemoveAll()
			return f.Value, nil
		}
	}
	// A parse error may come before the limit: a body over it is still 413.
	if _, rest := io.Copy(io.Discard, r.Body); rest != nil {
		err = rest
	}
	return nil, fmt.Errorf("read multipart form: %w", err)
}

// loginProblems lists the password grant's problems, in the original's order.
func loginProblems(f form) []fieldError {
	var problems []fieldError
	for _, name := range []string{"username", "password"} {
		if f.get(name) == "" {
			problems = append(problems, missingField("body", name))
		}
	}
	// The original's pattern matched any value starting with "password".
	if g := f.get("grant_type"); g != "" && g != "password" {
		problems = append(problems, notMatching("body", "grant_type", "password"))
	}
	return problems
}

// errBadCredentials is an unknown email or a wrong password: the two are
// one error, so that no response tells which accounts exist.
var errBadCredentials = errors.New("incorrect username or password")

// authenticate returns the user whose email and password these are. For
// an unknown email it still runs a bcrypt comparison, against a dummy
// hash, so that the answer takes as long as for a wrong password.
func authenticate(ctx context.Context, s *store, bc *bcryptLimiter, email, password string) (user, error) {
	if len(password) > maxPasswordBytes {
		return user{}, errBadCredentials
	}
	u, err := s.userByEmail(ctx, email) // unknown: u has no hash
	if err != nil && !errors.Is(err, errNotFound) {
		return user{}, err
	}
	ok, err := bc.compare(ctx, u.HashedPassword, password)
	if err != nil {
		return user{}, err
	}
	if !ok {
		return user{}, errBadCredentials
	}
	return u, nil
}

// bcryptWait is how long a login may queue for a bcrypt slot before 503.
const bcryptWait = 3 * time.Second

var errBusy = errors.New("too many logins in progress")

// raiseProcsForBcrypt returns how many bcrypt comparisons serve runs at once,
// half the cores, and gives the scheduler as many Ps again: a comparison
// holds its P for a quarter second, and the cheap requests keep one per core
// (docs/performance.md). An operator's GOMAXPROCS stays; a third compares.
func raiseProcsForBcrypt() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return max(1, runtime.GOMAXPROCS(0)/3)
	}
	runtime.SetDefaultGOMAXPROCS() // the cores, or the container's limit: serving twice does not add up
	cores := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(cores + max(1, cores/2))
	return max(1, cores/2)
}

// bcryptLimiter bounds the bcrypt comparisons this process runs at once,
// and holds the dummy hash that unknown emails are compared against.
type bcryptLimiter struct {
	slots     chan struct{}
	dummyHash []byte
}

// newBcryptLimiter makes the dummy hash at cost, as a wrong password costs.
func newBcryptLimiter(cost, slots int) *bcryptLimiter {
	dummy, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
	if err != nil {
		panic("bcrypt: " + err.Error()) // only for a cost out of range, which config rules out
	}
	return &bcryptLimiter{slots: make(chan struct{}, max(1, slots)), dummyHash: dummy}
}

// compare runs one bcrypt comparison in a free slot, waiting at most
// bcryptWait for one. No hash compares against the dummy hash, and fails.
func (b *bcryptLimiter) compare(ctx context.Context, hash, password string) (ok bool, err error) {
	select {
	case b.slots <- struct{}{}:
	case <-time.After(bcryptWait):
		return false, errBusy
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-b.slots }()
	if hash == "" {
		bcrypt.CompareHashAndPassword(b.dummyHash, []byte(password))
		return false, nil
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil, nil
}

// requireUser lets a request through only with a valid bearer token (RFC
// 6750 §2.1: from the Authorization header alone) whose account still
// exists with the token's security stamp, and whose session is live.
// Handlers get the caller from currentCaller.
func requireUser(d deps, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Split at the first space, as the original does (compat.go).
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			noBearerToken(w, r)
			return
		}
		claims, err := verifyToken(token, d.keys, d.now())
		if errors.Is(err, errTokenExpired) {
			expiredToken(w, r)
			return
		}
		if err != nil {
			badToken(w, r)
			return
		}
		// One budget for all of the request's queries, this lookup and the
		// handler's own, so that it is answered within queryTimeout.
		ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
		defer cancel()
		u, ok, err := d.store.tokenUser(ctx, claims.Sub, claims.Sid)
		if err != nil {
			databaseFailed(w, r, d.log, err)
			return
		}
		// A missing stamp is "": it passes only for an account without one.
		if !ok || subtle.ConstantTimeCompare([]byte(claims.Stamp), []byte(u.Stamp)) != 1 {
			badToken(w, r)
			return
		}
		addLogAttrs(r, slog.String("user", claims.Sub))
		h.ServeHTTP(w, r.WithContext(context.WithValue(ctx, callerKey{}, caller{u, claims.Sid})))
	})
}

// caller is who sent a request that requireUser let through: the token's
// account, and its session's id ("" for the original's tokens).
type caller struct {
	user
	sessionID string
}

type callerKey struct{}

// currentCaller is the caller, for a handler behind requireUser (authed in
// routes). Behind no check there is no caller: that is a bug, and a 500.
func currentCaller(r *http.Request) caller {
	c, ok := r.Context().Value(callerKey{}).(caller)
	if !ok {
		panic("currentCaller: route " + r.Pattern + " is not wrapped in authed (server.go)")
	}
	return c
}
