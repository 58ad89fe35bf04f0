package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// bcrypt reads only the first 72 bytes of a password. Longer ones are
// refused, before hashing and before comparing, so that no two different
// passwords are ever the same password.
const (
	minPasswordBytes = 8
	maxPasswordBytes = 72
)

// user is a row of myapi.users.
type user struct {
	ID             int
	Name           string
	Email          string
	HashedPassword string
}

// tokenResponse is the body of a successful login (RFC 6749 §5.1).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
}

// loginForm is the OAuth2 password grant's form (RFC 6749 §4.3.2).
type loginForm struct {
	Username, Password, GrantType string
}

// handleToken is POST /token: the OAuth2 password grant.
func handleToken(log *slog.Logger, s *store, guard *loginGuard, key []byte, ttl time.Duration, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		form, err := readLoginForm(w, r)
		if err != nil {
			// The connection closes after the answer, so that what is
			// left of the body, if anything, need not be read.
			w.Header().Set("Connection", "close")
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				errorResponse(w, r, http.StatusRequestEntityTooLarge, "Request body too large")
			} else {
				errorResponse(w, r, http.StatusBadRequest, "There was an error parsing the body")
			}
			return
		}
		if problems := form.validate(); problems != nil {
			validationFailed(w, r, problems)
			return
		}

		client, account := guard.clientKey(r), accountKey(form.Username)
		wait, err := guard.attempt(r.Context(), client, account, now)
		if err != nil { // too long a wait for the attempts in flight
			w.Header().Set("Retry-After", "1")
			errorResponse(w, r, http.StatusServiceUnavailable, "Service unavailable")
			return
		}
		if wait > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds()+0.999)))
			errorResponse(w, r, http.StatusTooManyRequests, "Too many failed login attempts, try again later")
			return
		}

		// The attempt ends exactly once, when the handler returns: a
		// release unless it was judged, so that not even a panic leaves it
		// counted as in flight.
		end := guard.release
		defer func() { end(client, account) }()

		u, err := authenticate(r.Context(), s, guard, form.Username, form.Password)
		switch {
		case errors.Is(err, errBadCredentials):
			end = guard.fail
			log.LogAttrs(r.Context(), slog.LevelInfo, "login failed")
			w.Header().Set("WWW-Authenticate", "Bearer")
			errorResponse(w, r, http.StatusUnauthorized, "Incorrect username or password")
			return
		case errors.Is(err, errBusy):
			w.Header().Set("Retry-After", "1")
			errorResponse(w, r, http.StatusServiceUnavailable, "Service unavailable")
			return
		case err != nil:
			serviceUnavailable(w, r, log, err)
			return
		}
		end = guard.succeed

		t := now()
		token := signToken(key, tokenClaims{Sub: u.Email, Name: u.Name, IssuedAt: t, ExpiresAt: t.Add(ttl)})
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		writeJSON(w, http.StatusOK, tokenResponse{AccessToken: token, TokenType: "bearer"})
	})
}

// readLoginForm reads a urlencoded or multipart form of at most
// maxBodyBytes. Anything that is not a form reads as an empty one, which
// validate then reports field by field, as the original does. The error is
// an *http.MaxBytesError for a body over the limit, which a declared
// Content-Length shows before a byte is read, and otherwise a body that
// could not be read (cut short, too slow) or a multipart body that could
// not be parsed (malformed, or more than mime/multipart's 1000 parts),
// which the original answers 400 too.
func readLoginForm(w http.ResponseWriter, r *http.Request) (loginForm, error) {
	if r.ContentLength > maxBodyBytes {
		return loginForm{}, &http.MaxBytesError{Limit: maxBodyBytes}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var form url.Values
	switch mediaType {
	case "application/x-www-form-urlencoded":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return loginForm{}, err
		}
		form = parseQuery(string(body))
	case "multipart/form-data":
		values, err := readMultipart(r)
		if err != nil {
			return loginForm{}, err
		}
		form = values
	default:
		// Read it anyway, so that an oversized body is 413 whatever its type.
		_, err := io.Copy(io.Discard, r.Body)
		return loginForm{}, err
	}
	// A repeated field counts by its last value, as in the original. Only
	// the body counts, never the query string.
	last := func(name string) string {
		v := form[name]
		if len(v) == 0 {
			return ""
		}
		return v[len(v)-1]
	}
	return loginForm{Username: last("username"), Password: last("password"), GrantType: last("grant_type")}, nil
}

// readMultipart reads a multipart form's values. It reads the body alone:
// r.ParseMultipartForm would also parse the query string and fail on one
// that url.ParseQuery refuses, though only the body counts here.
func readMultipart(r *http.Request) (url.Values, error) {
	mr, err := r.MultipartReader()
	if err == nil {
		var f *multipart.Form
		if f, err = mr.ReadForm(maxBodyBytes); err == nil {
			defer f.RemoveAll()
			return f.Value, nil
		}
	}
	// A parse error may come before the limit would have: a body over it
	// is still 413.
	if _, rest := io.Copy(io.Discard, r.Body); rest != nil {
		err = rest
	}
	return nil, fmt.Errorf("read multipart form: %w", err)
}

// validate lists the form's problems in the order the original does.
func (f loginForm) validate() []fieldError {
	var problems []fieldError
	if f.Username == "" {
		problems = append(problems, missingField("body", "username"))
	}
	if f.Password == "" {
		problems = append(problems, missingField("body", "password"))
	}
	// The original's pattern matched any value starting with "password";
	// only the grant itself is accepted here.
	if f.GrantType != "" && f.GrantType != "password" {
		problems = append(problems, notMatching("body", "grant_type", "password"))
	}
	return problems
}

// accountKey is what the throttle counts an account's failures under: the
// email folded to lower case, so that case variants count together, and
// cut to the longest an email can be (RFC 5321), so that the throttle's
// memory stays bounded whatever a client sends as a username.
func accountKey(username string) string {
	const maxEmailBytes = 254
	if len(username) > maxEmailBytes {
		username = username[:maxEmailBytes]
	}
	return strings.ToLower(username)
}

// errBadCredentials is an unknown email or a wrong password: the two are
// one error, so that no response tells which accounts exist.
var errBadCredentials = errors.New("incorrect username or password")

// authenticate returns the user whose email and password these are. For
// an unknown email it still runs a bcrypt comparison, against a dummy
// hash, so that the answer takes as long as for a wrong password.
func authenticate(ctx context.Context, s *store, guard *loginGuard, email, password string) (user, error) {
	if len(password) > maxPasswordBytes {
		return user{}, errBadCredentials
	}
	u, err := s.userByEmail(ctx, email)
	var hash []byte
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, errNotText):
	case err != nil:
		return user{}, err
	default:
		hash = []byte(u.HashedPassword)
	}
	ok, err := guard.compare(ctx, hash, password)
	if err != nil {
		return user{}, err
	}
	if !ok {
		return user{}, errBadCredentials
	}
	return u, nil
}

type userKey struct{}

// userFrom returns the user requireUser authenticated.
func userFrom(ctx context.Context) (user, bool) {
	u, ok := ctx.Value(userKey{}).(user)
	return u, ok
}

// requireUser lets a request through only with a valid bearer token
// (RFC 6750 §2.1: from the Authorization header, never the query string)
// whose subject is still a user: deleting a user revokes their tokens.
func requireUser(log *slog.Logger, s *store, keys tokenKeys, now func() time.Time, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			unauthorized(w, r, "Bearer", "Invalid token")
			return
		}
		claims, err := verifyToken(strings.TrimSpace(token), keys, now())
		if errors.Is(err, errTokenExpired) {
			unauthorized(w, r, `Bearer error="invalid_token"`, "Token expired")
			return
		}
		if err != nil {
			unauthorized(w, r, `Bearer error="invalid_token"`, "Invalid credentials")
			return
		}
		// One budget for all of the request's queries, this lookup and the
		// handler's own, so that it is answered, 503 at worst, within
		// queryTimeout, however many queries it makes.
		ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
		defer cancel()
		u, err := s.userByEmail(ctx, claims.Sub)
		if errors.Is(err, errNotFound) || errors.Is(err, errNotText) {
			unauthorized(w, r, `Bearer error="invalid_token"`, "Invalid credentials")
			return
		}
		if err != nil {
			serviceUnavailable(w, r, log, err)
			return
		}
		if info := infoFrom(r.Context()); info != nil {
			info.user = u.Email
		}
		u.HashedPassword = "" // nothing downstream needs it
		h.ServeHTTP(w, r.WithContext(context.WithValue(ctx, userKey{}, u)))
	})
}

// runCreateUser is the create-user command.
func runCreateUser(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("create-user", flag.ContinueOnError)
	name := fs.String("name", "", "the user's name")
	email := fs.String("email", "", "the user's email, their login")
	password := fs.String("password", "", "the password (visible to other users of this machine: prefer -password-stdin)")
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if (*password == "") == !*fromStdin {
		fmt.Fprintln(stderr, "create-user: give exactly one of -password and -password-stdin")
		fs.Usage()
		return errUsage
	}
	if *fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return fmt.Errorf("create-user: read password from stdin: %w", err)
		}
		*password = strings.TrimRight(line, "\r\n")
	}
	if err := validateNewUser(*name, *email, *password); err != nil {
		return fmt.Errorf("create-user: %w", err)
	}

	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(*password), cfg.BcryptCost)
	if err != nil {
		return fmt.Errorf("create-user: hash password: %w", err)
	}
	db, closeDB, err := openDatabase(ctx, cfg, newLogger(stderr, cfg.LogFormat))
	if err != nil {
		return fmt.Errorf("create-user: %w", err)
	}
	defer closeDB()
	if err := migrate(ctx, db, cfg.Env == "dev"); err != nil {
		return fmt.Errorf("create-user: %w", err)
	}
	id, err := (&store{db: db}).createUser(ctx, *name, *email, string(hash))
	if errors.Is(err, errDuplicate) {
		return fmt.Errorf("create-user: a user with email %s already exists", *email)
	}
	if err != nil {
		return fmt.Errorf("create-user: %w", err)
	}
	fmt.Fprintf(stdout, "create-user: created user %d, %s\n", id, *email)
	return nil
}

// validateNewUser checks a new user's fields. The email must be a bare
// address (no display name), since it is stored as given and is the login.
func validateNewUser(name, email, password string) error {
	var problems []string
	if strings.TrimSpace(name) == "" {
		problems = append(problems, "-name is required")
	} else if !isText(name) {
		problems = append(problems, "-name must be UTF-8 text without NUL bytes")
	}
	if a, err := mail.ParseAddress(email); err != nil || a.Name != "" || a.Address != email {
		problems = append(problems, fmt.Sprintf("-email %q is not an email address", email))
	}
	if n := len(password); n < minPasswordBytes || n > maxPasswordBytes {
		problems = append(problems, fmt.Sprintf("the password must be %d to %d bytes long", minPasswordBytes, maxPasswordBytes))
	}
	if problems != nil {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
