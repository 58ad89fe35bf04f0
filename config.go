package main

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const minKeyBytes = 32 // RFC 7518 §3.2: an HS256 key is at least as long as the hash

// config is everything myapi reads from its environment.
type config struct {
	Env             string         // MYAPI_ENV: selects the database entry
	DatabaseURL     string         // MYAPI_DATABASE__<ENV>; empty in dev means the local cluster
	TokenKey        []byte         // signs and verifies tokens; nil in dev until devTokenKey fills it
	PreviousKeys    [][]byte       // still verify, never sign (key rotation)
	TokenTTL        time.Duration  // lifetime of a new token
	SessionTTL      time.Duration  // a session's absolute lifetime
	SessionIdle     time.Duration  // a session ends this long after its latest refresh
	Addr            string         // listen address
	BcryptCost      int            // cost of new password hashes
	DBMaxConns      int            // connection pool size
	ShutdownTimeout time.Duration  // grace period for in-flight requests
	LogFormat       string         // "text" or "json"
	TrustedProxies  []netip.Prefix // peers whose X-Forwarded-For is believed
	Dir             string         // local state: dev token key and dev cluster
}

// loadConfig reads getenv, then the file MYAPI_DOTENV names (.env): every
// problem at once, and never a secret value.
func loadConfig(getenv func(string) string) (config, error) {
	file, err := readDotenv(cmp.Or(getenv("MYAPI_DOTENV"), ".env"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return config{}, err
	}
	get := func(key, def string) string { return cmp.Or(getenv(key), file[key], def) }
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	cfg := config{
		Env:       strings.ToLower(get("MYAPI_ENV", "dev")),
		Addr:      get("MYAPI_ADDR", "127.0.0.1:8000"),
		LogFormat: get("MYAPI_LOG_FORMAT", "text"),
		Dir:       get("MYAPI_DIR", ".myapi"),
	}
	dev := cfg.Env == "dev" // dev has a local cluster and devTokenKey
	dbVar := "MYAPI_DATABASE__" + strings.ToUpper(cfg.Env)
	if cfg.DatabaseURL = get(dbVar, ""); cfg.DatabaseURL == "" && !dev {
		bad("%s is required when MYAPI_ENV is %q (a PostgreSQL URL or DSN)", dbVar, cfg.Env)
	}
	switch key := get("MYAPI_TOKEN_KEY", ""); {
	case key == "" && !dev:
		bad("MYAPI_TOKEN_KEY is required when MYAPI_ENV is %q (at least %d bytes, e.g. openssl rand -base64 48)", cfg.Env, minKeyBytes)
	case key != "" && len(key) < minKeyBytes:
		bad("MYAPI_TOKEN_KEY is too short: %d bytes, need at least %d", len(key), minKeyBytes)
	case key != "":
		cfg.TokenKey = []byte(key)
	}
	if prev := get("MYAPI_TOKEN_KEY_PREVIOUS", ""); prev != "" {
		for i, key := range strings.Split(prev, ",") {
			if key = strings.TrimSpace(key); len(key) < minKeyBytes {
				bad("MYAPI_TOKEN_KEY_PREVIOUS: key %d is too short: %d bytes, need at least %d", i+1, len(key), minKeyBytes)
			}
			cfg.PreviousKeys = append(cfg.PreviousKeys, []byte(key)) // discarded with any problem
		}
	}
	cfg.TokenTTL = positiveDuration(get, "MYAPI_TOKEN_TTL", "60m", bad)
	cfg.SessionTTL = positiveDuration(get, "MYAPI_SESSION_TTL", "720h", bad)
	cfg.SessionIdle = positiveDuration(get, "MYAPI_SESSION_IDLE", "168h", bad)
	cfg.ShutdownTimeout = positiveDuration(get, "MYAPI_SHUTDOWN_TIMEOUT", "10s", bad)
	cfg.BcryptCost = intInRange(get, "MYAPI_BCRYPT_COST", 12, bcrypt.MinCost, bcrypt.MaxCost, bad)
	// About two connections per core, and more for requests on the network.
	cfg.DBMaxConns = intInRange(get, "MYAPI_DB_MAX_CONNS", 4*runtime.NumCPU()+2, 1, 1000, bad)
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		bad("MYAPI_LOG_FORMAT must be text or json, not %q", cfg.LogFormat)
	}
	cfg.TrustedProxies = parseProxies(get("MYAPI_TRUSTED_PROXIES", ""), bad)
	if problems != nil {
		return config{}, errors.New(strings.Join(problems, "\n"))
	}
	return cfg, nil
}

func positiveDuration(get func(key, def string) string, key, def string, bad func(string, ...any)) time.Duration {
	s := get(key, def)
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		bad("%s must be a positive duration such as 60m or 10s, not %q", key, s)
	}
	return d
}

func intInRange(get func(key, def string) string, key string, def, lo, hi int, bad func(string, ...any)) int {
	s := get(key, strconv.Itoa(def))
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		bad("%s must be a whole number from %d to %d, not %q", key, lo, hi, s)
	}
	return n
}

// parseProxies reads a comma-separated list of addresses and CIDR prefixes.
func parseProxies(list string, bad func(string, ...any)) (proxies []netip.Prefix) {
	if list == "" {
		return nil
	}
	for _, s := range strings.Split(list, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if a, aerr := netip.ParseAddr(strings.TrimSpace(s)); aerr == nil {
			p, err = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil // a prefix of one address
		}
		if err != nil {
			bad("MYAPI_TRUSTED_PROXIES: %q is not an IP address or CIDR prefix", s)
		}
		proxies = append(proxies, p.Masked())
	}
	return proxies
}

// devTokenKey returns the dev signing key kept in dir, made on first use,
// so that tokens survive a restart and no two clones share a key.
func devTokenKey(dir string) ([]byte, error) {
	return readOrCreateSecret(filepath.Join(dir, "token_key"), minKeyBytes)
}

// readOrCreateSecret returns the secret kept in path, first writing a new one
// (0600) when the file is missing or shorter than minLen bytes.
func readOrCreateSecret(path string, minLen int) ([]byte, error) {
	switch b, err := os.ReadFile(path); {
	case err == nil && len(b) >= minLen:
		return b, nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	b := []byte(rand.Text() + rand.Text()) // 52 base32 characters, 260 bits
	return b, os.WriteFile(path, b, 0o600)
}

// readDotenv reads a .env file: KEY=VALUE lines, blank lines and # comments.
func readDotenv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vars := make(map[string]string)
	for i, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		key, value, err := parseDotenvLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		vars[key] = value
	}
	return vars, nil
}

var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) // a variable name

// parseDotenvLine parses KEY=VALUE, with an optional "export " prefix and a
// single- or double-quoted value. Errors never quote the value: it may be a secret.
func parseDotenvLine(line string) (key, value string, err error) {
	key, value, found := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "export "), "=")
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	switch {
	case !found:
		return "", "", errors.New("expected KEY=VALUE")
	case !envKey.MatchString(key):
		return "", "", errors.New("invalid variable name (letters, digits and _ only)")
	case value == "" || value[0] != '"' && value[0] != '\'':
		// An unquoted value ends at " #", so "KEY=abc # note" is "abc";
		// a # inside a word (a URL fragment, a password) is kept.
		value, _, _ = strings.Cut(value, " #")
		return key, strings.TrimSpace(value), nil
	}
	quoted, rest, closed := strings.Cut(value[1:], value[:1])
	switch rest = strings.TrimSpace(rest); {
	case !closed:
		return "", "", fmt.Errorf("%s: unterminated %s quote", key, value[:1])
	case rest != "" && rest[0] != '#':
		return "", "", fmt.Errorf("%s: unexpected text after the closing quote", key)
	}
	return key, quoted, nil
}
