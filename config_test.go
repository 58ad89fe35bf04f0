package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeDotenv writes a .env file for one test and returns its path.
func writeDotenv(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(mapEnv(map[string]string{"MYAPI_DOTENV": "testdata/no.env"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Env != "dev" || cfg.DatabaseURL != "" || cfg.TokenKey != nil || cfg.Addr != "127.0.0.1:8000" ||
		cfg.TokenTTL != time.Hour || cfg.BcryptCost != 12 || cfg.ShutdownTimeout != 10*time.Second ||
		cfg.LogFormat != "text" || cfg.Dir != ".myapi" || cfg.DBMaxConns < 1 {
		t.Errorf("defaults: %+v", cfg)
	}
}

// TestConfigEnvironmentWinsOverDotenv also reads trusted proxies: an address
// is a prefix of its full length, unmapped, and a prefix is masked.
func TestConfigEnvironmentWinsOverDotenv(t *testing.T) {
	t.Parallel()
	path := writeDotenv(t, `
# the production settings
export MYAPI_ENV=prod
MYAPI_DATABASE__PROD="postgres://app@db/app"
MYAPI_TOKEN_KEY='from-the-file-0123456789-0123456789'
MYAPI_ADDR=0.0.0.0:9000   # every interface
MYAPI_TOKEN_TTL=15m
MYAPI_TRUSTED_PROXIES=10.1.2.3, 192.168.0.0/16,::1,::ffff:10.9.9.9,10.8.1.2/8
`)
	cfg, err := loadConfig(mapEnv(map[string]string{
		"MYAPI_DOTENV":    path,
		"MYAPI_TOKEN_KEY": "from-the-environment-0123456789-0123456789",
		"MYAPI_TOKEN_TTL": "2h",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Env != "prod" || cfg.DatabaseURL != "postgres://app@db/app" || cfg.Addr != "0.0.0.0:9000" ||
		fmt.Sprint(cfg.TrustedProxies) != "[10.1.2.3/32 192.168.0.0/16 ::1/128 10.9.9.9/32 10.0.0.0/8]" {
		t.Errorf("values from .env: %+v", cfg)
	}
	if string(cfg.TokenKey) != "from-the-environment-0123456789-0123456789" || cfg.TokenTTL != 2*time.Hour {
		t.Errorf("the environment did not win: key %q, ttl %v", cfg.TokenKey, cfg.TokenTTL)
	}
}

func TestConfigReportsEveryProblemWithoutSecrets(t *testing.T) {
	t.Parallel()
	const secret = "tooshort-secret"
	_, err := loadConfig(mapEnv(map[string]string{
		"MYAPI_DOTENV":           "testdata/no.env",
		"MYAPI_ENV":              "Stage",
		"MYAPI_TOKEN_KEY":        secret,
		"MYAPI_TOKEN_TTL":        "forever",
		"MYAPI_BCRYPT_COST":      "99",
		"MYAPI_DB_MAX_CONNS":     "0",
		"MYAPI_SHUTDOWN_TIMEOUT": "-1s",
		"MYAPI_LOG_FORMAT":       "xml",
		"MYAPI_TRUSTED_PROXIES":  "10.0.0.0/8, nonsense",
	}))
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		"MYAPI_DATABASE__STAGE is required",
		"MYAPI_TOKEN_KEY is too short: 15 bytes",
		"MYAPI_TOKEN_TTL must be a positive duration",
		"MYAPI_SHUTDOWN_TIMEOUT must be a positive duration",
		"MYAPI_BCRYPT_COST must be a whole number from 4 to 31",
		"MYAPI_DB_MAX_CONNS must be a whole number",
		"MYAPI_LOG_FORMAT must be text or json",
		`MYAPI_TRUSTED_PROXIES: " nonsense" is not`,
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d = %q, want prefix %q", i+1, lines[i], want[i])
		}
	}
	if strings.Contains(err.Error(), secret) {
		t.Error("the error shows the key")
	}
}

// TestDevTokenKeyIsGeneratedOnceAndPrivate also replaces a key file cut
// short, which would sign with a weak key.
func TestDevTokenKeyIsGeneratedOnceAndPrivate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	k1, err1 := devTokenKey(dir)
	k2, err2 := devTokenKey(dir)
	if err1 != nil || err2 != nil || len(k1) < minKeyBytes || string(k1) != string(k2) {
		t.Errorf("keys %q and %q (%v, %v): want one key of at least %d bytes", k1, k2, err1, err2, minKeyBytes)
	}
	fi, err := os.Stat(filepath.Join(dir, "token_key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token_key: %v, %v; want mode 0600", fi.Mode(), err)
	}
	if k3, _ := devTokenKey(t.TempDir()); string(k3) == string(k1) {
		t.Error("two state directories got the same key")
	}
	if err := os.WriteFile(filepath.Join(dir, "token_key"), k1[:minKeyBytes-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if k4, err := devTokenKey(dir); err != nil || len(k4) < minKeyBytes || string(k4) == string(k1) {
		t.Errorf("after a short key file: %q, %v; want a new key", k4, err)
	}
}

func TestParseDotenvLine(t *testing.T) {
	t.Parallel()
	cases := []struct{ line, key, value, err string }{
		{line: "A=1", key: "A", value: "1"},
		{line: "export A=1", key: "A", value: "1"},
		{line: " A = 1 ", key: "A", value: "1"},
		{line: "A=", key: "A", value: ""},
		{line: `A="x y # z"`, key: "A", value: "x y # z"},
		{line: `A='it''`, err: "unexpected text after the closing quote"},
		{line: `A='a "b"' # note`, key: "A", value: `a "b"`},
		{line: "A=abc # note", key: "A", value: "abc"},
		{line: "A=p#ss", key: "A", value: "p#ss"},
		{line: "A=postgres://u:p@h/db?x=1", key: "A", value: "postgres://u:p@h/db?x=1"},
		{line: `A="unterminated`, err: "unterminated"},
		{line: "just words", err: "expected KEY=VALUE"},
		{line: "1A=x", err: "invalid variable name"},
		{line: "A-B=x", err: "invalid variable name"},
		{line: "=x", err: "invalid variable name"},
	}
	for _, c := range cases {
		key, value, err := parseDotenvLine(c.line)
		if c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%q: error %v, want one containing %q", c.line, err, c.err)
		}
		if c.err == "" && (err != nil || key != c.key || value != c.value) {
			t.Errorf("%q = %q, %q, %v; want %q, %q", c.line, key, value, err, c.key, c.value)
		}
	}
}

// TestReadDotenv reads blank lines, comments and CRLF line ends, and names
// the line of an error without showing its value.
func TestReadDotenv(t *testing.T) {
	t.Parallel()
	vars, err := readDotenv(writeDotenv(t, "# a comment\r\n  # indented\n\n   \nA=1\r\nexport B='two'\n"))
	if err != nil || vars["A"] != "1" || vars["B"] != "two" || len(vars) != 2 {
		t.Errorf("vars = %v, %v", vars, err)
	}
	path := writeDotenv(t, "A=1\n\nB=\"secret-value\nC=3\n")
	_, err = readDotenv(path)
	if err == nil || !strings.Contains(err.Error(), path+":3:") || strings.Contains(err.Error(), "secret-value") {
		t.Errorf("error %v, want one naming %s:3 and not the value", err, path)
	}
}

func FuzzParseDotenv(f *testing.F) {
	for _, seed := range []string{"A=1", "export A='x'", `A="y" # c`, "# c", "A=b #c", `A="`, "=", "A=p#ss", "\xff=1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		key, value, err := parseDotenvLine(line)
		if err != nil {
			// Errors never quote the value, which may be a secret.
			_, v, _ := strings.Cut(line, "=")
			if v = strings.Trim(strings.TrimSpace(v), `"'`); key != "" || value != "" || len(v) > 3 && strings.Contains(err.Error(), v) {
				t.Fatalf("%q: error %q, with %q %q", line, err, key, value)
			}
			return
		}
		if !envKey.MatchString(key) || !strings.Contains(line, key) || !strings.Contains(line, value) {
			t.Fatalf("%q: key %q value %q are not from the line", line, key, value)
		}
		// What parses must parse the same when written back quoted,
		// unless the value holds both kinds of quote.
		if !strings.Contains(value, `"`) {
			k2, v2, err2 := parseDotenvLine(key + `="` + value + `"`)
			if err2 != nil || k2 != key || v2 != value {
				t.Fatalf("%q: round trip gave %q %q %v", line, k2, v2, err2)
			}
		}
	})
}

func TestDotenvExampleLoads(t *testing.T) {
	t.Parallel()
	vars, err := readDotenv(".env.example")
	_, cfgErr := loadConfig(mapEnv(map[string]string{"MYAPI_DOTENV": ".env.example"}))
	if err != nil || vars["MYAPI_ENV"] != "dev" || cfgErr != nil {
		t.Errorf("the example configuration: %v, %v; loadConfig: %v", vars, err, cfgErr)
	}
}
