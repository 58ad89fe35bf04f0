package main

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// seedMovies loads the sample catalogue, plus one movie whose title needs
// escaping, into a test database. That movie goes in first, so that lists
// come out in movie_id order only if the query orders them.
func seedMovies(t testing.TB, db *sql.DB) {
	t.Helper()
	if _, err := db.Exec(`INSERT INTO myapi.movies VALUES (9, 'Amélie & "Friends" <1>', 2001, 8.3)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(samplesSQL); err != nil {
		t.Fatal(err)
	}
}

// moviesApp serves a seeded database and returns it with a valid token.
func moviesApp(t *testing.T) (*testApp, http.Header) {
	t.Helper()
	dsn := newTestDatabase(t)
	seedMovies(t, openTestDB(t, dsn))
	env := testEnv(t, dsn)
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)
	return app, bearer(app.token(t, "ada@example.com", "correct horse"))
}

const (
	shawshank  = `{"movie_id":1,"title":"The Shawshank Redemption","released":1994,"rating":9.2}`
	darkKnight = `{"movie_id":3,"title":"The Dark Knight","released":2008,"rating":9.0}`
	inception  = `{"movie_id":8,"title":"Inception","released":2010,"rating":8.8}`
	amelie     = `{"movie_id":9,"title":"Amélie & \"Friends\" <1>","released":2001,"rating":8.3}`
)

func TestGetMovie(t *testing.T) {
	t.Parallel()
	app, auth := moviesApp(t)
	cases := []struct {
		path   string
		status int
		body   string
	}{
		{"/movies/?movie_id=1", 200, shawshank},
		{"/movies?movie_id=1", 200, shawshank}, // no redirect, unlike the original
		{"/movies/?movie_id=3", 200, darkKnight},
		{"/movies/?movie_id=9", 200, amelie},
		{"/movies/?movie_id=%2B1", 200, shawshank},
		{"/movies/?movie_id=5&movie_id=1", 200, shawshank}, // the last value counts
		{"/movies/?movie_id=1&other=x", 200, shawshank},
		{"/movies/?movie_id=1&other=50%", 200, shawshank},    // a malformed pair counts as absent
		{"/movies/?movie_id=1&movie_id=50%", 200, shawshank}, // even when it repeats the name
		{"/movies/?movie_id=404", 404, `{"detail":"Movie not found"}`},
		{"/movies/?movie_id=-1", 404, `{"detail":"Movie not found"}`},
		{"/movies/?movie_id=2147483647", 404, `{"detail":"Movie not found"}`},
		{"/movies/?movie_id=" + strings.Repeat("0", 4299) + "1", 200, shawshank},
		{"/movies/", 422, `{"detail":[{"loc":["query","movie_id"],"msg":"field required","type":"value_error.missing"}]}`},
		{"/movies/?movie_id=%zz", 422, `{"detail":[{"loc":["query","movie_id"],"msg":"field required","type":"value_error.missing"}]}`},
		{"/movies/?movie_id", 422, `{"detail":[{"loc":["query","movie_id"],"msg":"value is not a valid integer","type":"type_error.integer"}]}`},
	}
	notInt := `{"detail":[{"loc":["query","movie_id"],"msg":"value is not a valid integer","type":"type_error.integer"}]}`
	// Plain decimal text only: no spaces, "_", hex, or digits of other scripts.
	for _, bad := range []string{"abc", "1.5", "", "2147483648", "-2147483649", "99999999999999999999", "0x10", "1e3", "%00",
		"_1", "1_0", "%201%20", "+1", "%EF%BC%91", "%D9%A1", strings.Repeat("0", 4300) + "1"} {
		cases = append(cases, struct {
			path   string
			status int
			body   string
		}{"/movies/?movie_id=" + bad, 422, notInt})
	}
	for _, c := range cases {
		res := app.do(t, "GET", c.path, auth, nil)
		if res.status != c.status || res.body != c.body {
			t.Errorf("GET %s = %d %s\nwant %d %s", c.path, res.status, res.body, c.status, c.body)
		}
		if ct := res.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s: Content-Type %q", c.path, ct)
		}
	}
	// HEAD follows GET, without the body.
	res := app.do(t, "HEAD", "/movies/?movie_id=1", auth, nil)
	if res.status != 200 || res.body != "" {
		t.Errorf("HEAD = %d %q", res.status, res.body)
	}
	app.do(t, "POST", "/movies/?movie_id=1", auth, nil).expect(t, 405, `{"detail":"Method Not Allowed"}`)
}

func TestNewMovies(t *testing.T) {
	t.Parallel()
	app, auth := moviesApp(t)
	missing := func(name string) string {
		return `{"loc":["query","` + name + `"],"msg":"field required","type":"value_error.missing"}`
	}
	notInt := `{"loc":["query","year"],"msg":"value is not a valid integer","type":"type_error.integer"}`
	notFloat := `{"loc":["query","rating"],"msg":"value is not a valid float","type":"type_error.float"}`
	cases := []struct {
		query  string
		status int
		body   string
	}{
		{"year=2005&rating=8.8", 200, "[" + darkKnight + "," + inception + "]"},
		{"year=2005&rating=8.81", 200, "[" + darkKnight + "]"},
		{"year=2001&rating=8", 200, "[" + darkKnight + "," + inception + "," + amelie + "]"},
		{"year=2011&rating=0", 200, `[]`},
		{"year=1900&rating=9.5", 200, `[]`},
		{"year=1994&rating=8.9", 200, `[` + shawshank + `,{"movie_id":3,"title":"The Dark Knight","released":2008,"rating":9.0},{"movie_id":7,"title":"Pulp Fiction","released":1994,"rating":8.9}]`},
		{"year=2010&rating=-1e300", 200, "[" + inception + "]"},
		{"year=2010&rating=.5e1", 200, "[" + inception + "]"},
		{"year=%2B2010&rating=%2B8.", 200, "[" + inception + "]"},
		{"", 422, `{"detail":[` + missing("year") + `,` + missing("rating") + `]}`},
		{"rating=1", 422, `{"detail":[` + missing("year") + `]}`},
		{"year=1", 422, `{"detail":[` + missing("rating") + `]}`},
		{"year=x&rating=y", 422, `{"detail":[` + notInt + `,` + notFloat + `]}`},
		{"year=2000.5&rating=", 422, `{"detail":[` + notInt + `,` + notFloat + `]}`},
		{"year=99999999999&rating=1", 422, `{"detail":[` + notInt + `]}`},
	}
	for _, bad := range []string{"nan", "NaN", "inf", "-inf", "Infinity", "1e400", "0x1p3", "1,5", "abc", "1_0", "%208.8", "%D9%A8", "e5"} {
		cases = append(cases, struct {
			query  string
			status int
			body   string
		}{"year=2000&rating=" + bad, 422, `{"detail":[` + notFloat + `]}`})
	}
	for _, c := range cases {
		res := app.do(t, "GET", "/movies/new?"+c.query, auth, nil)
		if res.status != c.status || res.body != c.body {
			t.Errorf("GET /movies/new?%s = %d %s\nwant %d %s", c.query, res.status, res.body, c.status, c.body)
		}
	}
}

// TestQueryThatDoesNotFitIs500 adds a column to myapi.movies, which the
// queries must not mind, then renames one they read: that is a bug, not an
// outage, so both routes answer 500, with the cause in the log at ERROR
// and not in the body.
func TestQueryThatDoesNotFitIs500(t *testing.T) {
	t.Parallel()
	dsn := newTestDatabase(t)
	db := openTestDB(t, dsn)
	seedMovies(t, db)
	createUser(t, testEnv(t, dsn), "Ada", "ada@example.com", "correct horse")
	logs := &syncBuffer{}
	h := newHandler(testDeps(newLogger(logs, "text"), db))
	get := func(target string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", target, nil)
		r.Header.Set("Authorization", "Bearer "+signToken([]byte(testTokenKey), accountClaims(t, db, "ada@example.com")))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if _, err := db.Exec("ALTER TABLE myapi.movies ADD COLUMN director TEXT"); err != nil {
		t.Fatal(err)
	}
	if w := get("/movies/new?year=2010&rating=8"); w.Code != 200 || w.Body.String() != "["+inception+"]" {
		t.Errorf("after a column was added: %d %s", w.Code, w.Body)
	}
	if _, err := db.Exec("ALTER TABLE myapi.movies RENAME COLUMN title TO name"); err != nil {
		t.Fatal(err)
	}
	// New connections: those open may have the old query planned.
	h = newHandler(testDeps(newLogger(logs, "text"), openTestDB(t, dsn)))
	for _, target := range []string{"/movies/?movie_id=1", "/movies/new?year=1990&rating=9"} {
		if w := get(target); w.Code != 500 || w.Body.String() != `{"detail":"Internal Server Error"}` {
			t.Errorf("GET %s = %d %s, want 500", target, w.Code, w.Body)
		}
	}
	if n := strings.Count(logs.String(), `level=ERROR msg="query failed" error="ERROR: column`); n != 2 {
		t.Errorf("the log shows the cause %d times, want 2:\n%s", n, logs)
	}
}

func TestRatingIsWrittenWithItsDecimal(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		r    rating
		want string
	}{{9, "9.0"}, {9.2, "9.2"}, {0, "0.0"}, {-1.5, "-1.5"}, {8.8, "8.8"}} {
		b, err := c.r.MarshalJSON()
		if err != nil || string(b) != c.want {
			t.Errorf("rating %v = %s, %v; want %s", float64(c.r), b, err, c.want)
		}
	}
}

// benchmarkMovies runs a request through the whole handler stack (bearer
// check and user lookup included) against the real database.
func benchmarkMovies(b *testing.B, target, want string) {
	dsn := newTestDatabase(b)
	db := openTestDB(b, dsn)
	seedMovies(b, db)
	createUser(b, testEnv(b, dsn), "Ada", "ada@example.com", "correct horse")
	key := []byte(testTokenKey)
	h := newHandler(testDeps(newLogger(io.Discard, "text"), db))
	auth := "Bearer " + signToken(key, accountClaims(b, db, "ada@example.com"))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequestWithContext(context.Background(), "GET", target, nil)
			r.Header.Set("Authorization", auth)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 || !strings.HasPrefix(w.Body.String(), want) {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
}

func BenchmarkGetMovie(b *testing.B) {
	benchmarkMovies(b, "/movies/?movie_id=1", shawshank)
}

func BenchmarkNewMovies(b *testing.B) {
	benchmarkMovies(b, "/movies/new?year=1990&rating=9", "["+shawshank)
}

// TestPathParameter reads a path parameter as a new service would: its
// problems are reported at loc ["path", name].
func TestPathParameter(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /x/{id}", func(w http.ResponseWriter, r *http.Request) {
		p := readParams(r)
		id := p.int("path", "id")
		if p.problems != nil {
			validationFailed(w, r, p.problems)
			return
		}
		writeJSON(w, http.StatusOK, id)
	})
	for path, want := range map[string]string{
		"/x/-7":  "-7",
		"/x/7.0": `{"detail":[{"loc":["path","id"],"msg":"value is not a valid integer","type":"type_error.integer"}]}`,
		"/x/%20": `{"detail":[{"loc":["path","id"],"msg":"value is not a valid integer","type":"type_error.integer"}]}`,
	} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Body.String() != want {
			t.Errorf("GET %s = %d %s, want %s", path, w.Code, w.Body, want)
		}
	}
}
