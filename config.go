package main

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// minKeyBytes is the shortest HS256 key accepted: RFC 7518 §3.2 asks for a
// key at least as long as the hash output.
const minKeyBytes = 32

// config is everything myapi reads from its environment.
type config struct {
	Env             string         // MYAPI_ENV: selects the database entry
	DatabaseURL     string         // MYAPI_DATABASE__<ENV>; empty in dev means the local cluster
	TokenKey        []byte         // signs and verifies tokens; nil in dev until devTokenKey fills it
	PreviousKeys    [][]byte       // still verify, never sign (key rotation)
	TokenTTL        time.Duration  // lifetime of a new token
	Addr            string         // listen address
	BcryptCost      int            // cost of new password hashes
	DBMaxConns      int            // connection pool size
	ShutdownTimeout time.Duration  // grace period for in-flight requests
	LogFormat       string         // "text" or "json"
	TrustedProxies  []netip.Prefix // peers whose X-Forwarded-For is believed
	Dir             string         // local state: dev token key and dev cluster
}

// configError lists every problem found in the configuration, one per line.
type configError []string

func (e configError) Error() string { return strings.Join(e, "\n") }

// loadConfig reads the configuration from getenv, falling back to the
// dotenv file at dotenvPath (a missing file is fine). It reports every
// problem at once and never includes a secret value in an error.
func loadConfig(getenv func(string) string) (config, error) {
	dotenvPath := getenv("MYAPI_DOTENV")
	if dotenvPath == "" {
		dotenvPath = ".env"
	}
	file, err := readDotenv(dotenvPath)
	if err != nil {
		return config{}, err
	}
	lookup := func(key string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return file[key]
	}

	var problems configError
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	cfg := config{
		Env:       strings.ToLower(orDefault(lookup("MYAPI_ENV"), "dev")),
		Addr:      orDefault(lookup("MYAPI_ADDR"), "127.0.0.1:8000"),
		LogFormat: orDefault(lookup("MYAPI_LOG_FORMAT"), "text"),
		Dir:       orDefault(lookup("MYAPI_DIR"), ".myapi"),
	}
	dev := cfg.Env == "dev"

	dbVar := "MYAPI_DATABASE__" + strings.ToUpper(cfg.Env)
	cfg.DatabaseURL = lookup(dbVar)
	if cfg.DatabaseURL == "" && !dev {
		bad("%s is required when MYAPI_ENV is %q (a PostgreSQL URL or DSN)", dbVar, cfg.Env)
	}

	switch key := lookup("MYAPI_TOKEN_KEY"); {
	case key == "" && !dev:
		bad("MYAPI_TOKEN_KEY is required when MYAPI_ENV is %q (at least %d bytes, e.g. openssl rand -base64 48)", cfg.Env, minKeyBytes)
	case key != "" && len(key) < minKeyBytes:
		bad("MYAPI_TOKEN_KEY is too short: %d bytes, need at least %d", len(key), minKeyBytes)
	case key != "":
		cfg.TokenKey = []byte(key)
	}
	if prev := lookup("MYAPI_TOKEN_KEY_PREVIOUS"); prev != "" {
		for i, key := range strings.Split(prev, ",") {
			key = strings.TrimSpace(key)
			if len(key) < minKeyBytes {
				bad("MYAPI_TOKEN_KEY_PREVIOUS: key %d is too short: %d bytes, need at least %d", i+1, len(key), minKeyBytes)
				continue
			}
			cfg.PreviousKeys = append(cfg.PreviousKeys, []byte(key))
		}
	}

	cfg.TokenTTL = parseDuration(lookup, "MYAPI_TOKEN_TTL", 60*time.Minute, bad)
	cfg.ShutdownTimeout = parseDuration(lookup, "MYAPI_SHUTDOWN_TIMEOUT", 10*time.Second, bad)
	cfg.BcryptCost = parseInt(lookup, "MYAPI_BCRYPT_COST", 12, bcrypt.MinCost, bcrypt.MaxCost, bad)
	cfg.DBMaxConns = parseInt(lookup, "MYAPI_DB_MAX_CONNS", defaultMaxConns(), 1, 1000, bad)

	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		bad("MYAPI_LOG_FORMAT must be text or json, not %q", cfg.LogFormat)
	}
	if proxies := lookup("MYAPI_TRUSTED_PROXIES"); proxies != "" {
		for _, s := range strings.Split(proxies, ",") {
			p, err := parsePrefix(strings.TrimSpace(s))
			if err != nil {
				bad("MYAPI_TRUSTED_PROXIES: %q is not an IP address or CIDR prefix", s)
				continue
			}
			cfg.TrustedProxies = append(cfg.TrustedProxies, p)
		}
	}

	if problems != nil {
		return config{}, problems
	}
	return cfg, nil
}

// defaultMaxConns sizes the pool for the machine: PostgreSQL itself wants
// about two connections per core, and a few more cover requests waiting on
// the network rather than on the CPU.
func defaultMaxConns() int { return 4*runtime.NumCPU() + 2 }

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func parseDuration(lookup func(string) string, key string, def time.Duration, bad func(string, ...any)) time.Duration {
	s := lookup(key)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		bad("%s must be a positive duration such as 60m or 10s, not %q", key, s)
		return def
	}
	return d
}

func parseInt(lookup func(string) string, key string, def, lo, hi int, bad func(string, ...any)) int {
	s := lookup(key)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		bad("%s must be a whole number from %d to %d, not %q", key, lo, hi, s)
		return def
	}
	return n
}

// parsePrefix accepts a CIDR prefix or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// devTokenKey returns the dev signing key kept in dir, generating it with
// crypto/rand on first use. Keeping it on disk means tokens survive a
// restart; keeping it out of the repository means no two clones share it.
func devTokenKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, "token_key")
	key, err := os.ReadFile(path)
	if err == nil && len(key) >= minKeyBytes {
		return key, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read dev token key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	key = []byte(rand.Text() + rand.Text()) // 52 base32 characters, 260 bits
	if err := os.WriteFile(path, key, 0o600); err != nil {
		return nil, fmt.Errorf("write dev token key: %w", err)
	}
	return key, nil
}

// readDotenv parses a .env file: KEY=VALUE lines, an optional "export "
// prefix, # comments, blank lines, and single- or double-quoted values.
// A missing file is an empty one.
func readDotenv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	vars := make(map[string]string)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		key, value, ok, err := parseDotenvLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if ok {
			vars[key] = value
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return vars, nil
}

// parseDotenvLine parses one line of a .env file. ok is false for a blank
// line or a comment. Errors never quote the value: it may be a secret.
func parseDotenvLine(line string) (key, value string, ok bool, err error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", "", false, nil
	}
	line = strings.TrimPrefix(line, "export ")
	key, value, found := strings.Cut(line, "=")
	key = strings.TrimSpace(key)
	if !found {
		return "", "", false, errors.New("expected KEY=VALUE")
	}
	if !validEnvKey(key) {
		return "", "", false, errors.New("invalid variable name (letters, digits and _ only)")
	}
	value = strings.TrimSpace(value)
	if value == "" {
		return key, "", true, nil
	}
	switch q := value[0]; q {
	case '"', '\'':
		end := strings.IndexByte(value[1:], q)
		if end < 0 {
			return "", "", false, fmt.Errorf("%s: unterminated %c quote", key, q)
		}
		rest := strings.TrimSpace(value[end+2:])
		if rest != "" && rest[0] != '#' {
			return "", "", false, fmt.Errorf("%s: unexpected text after the closing quote", key)
		}
		return key, value[1 : end+1], true, nil
	}
	// An unquoted value ends at " #", so "KEY=abc # note" is "abc";
	// a # inside a word (a URL fragment, a password) is kept.
	if i := strings.Index(value, " #"); i >= 0 {
		value = strings.TrimSpace(value[:i])
	}
	return key, value, true, nil
}

func validEnvKey(key string) bool {
	if key == "" || (key[0] >= '0' && key[0] <= '9') {
		return false
	}
	for _, c := range []byte(key) {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
