package main

import (
	"context"
	"database/sql"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// seedMovies loads the sample catalogue, plus one movie whose title needs
// escaping, into a test database. That movie goes in first, so that lists
// come out in movie_id order only if the query orders them.
func seedMovies(t testing.TB, db *sql.DB) {
	t.Helper()
	mustExec(t, db, `INSERT INTO myapi.movies VALUES (9, 'Amélie & "Friends" <1>', 2001, 8.3)`)
	mustExec(t, db, samplesSQL)
}

const (
	shawshank  = `{"movie_id":1,"title":"The Shawshank Redemption","released":1994,"rating":9.2}`
	darkKnight = `{"movie_id":3,"title":"The Dark Knight","released":2008,"rating":9.0}`
	inception  = `{"movie_id":8,"title":"Inception","released":2010,"rating":8.8}`
	amelie     = `{"movie_id":9,"title":"Amélie & \"Friends\" <1>","released":2001,"rating":8.3}`
)

func TestGetMovie(t *testing.T) {
	t.Parallel()
	app, auth := sampleApp(t)
	get := func(path string, status int, body string) {
		t.Helper()
		res := app.do(t, "GET", path, auth, nil)
		if res.status != status || res.body != body || res.header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s = %d %s (%s)\nwant %d %s (application/json)", path, res.status, res.body, res.header.Get("Content-Type"), status, body)
		}
	}
	for path, body := range map[string]string{
		"/movies/?movie_id=1":                                  shawshank,
		"/movies?movie_id=1":                                   shawshank, // no redirect, unlike the original
		"/movies/?movie_id=3":                                  darkKnight,
		"/movies/?movie_id=9":                                  amelie,
		"/movies/?movie_id=%2B1":                               shawshank,
		"/movies/?movie_id=5&movie_id=1":                       shawshank, // the last value counts
		"/movies/?movie_id=1&other=x":                          shawshank,
		"/movies/?movie_id=1&other=50%":                        shawshank, // a malformed pair counts as absent
		"/movies/?movie_id=1&movie_id=50%":                     shawshank, // even when it repeats the name
		"/movies/?movie_id=" + strings.Repeat("0", 4299) + "1": shawshank,
	} {
		get(path, 200, body)
	}
	for _, id := range []string{"404", "-1", "2147483647"} {
		get("/movies/?movie_id="+id, 404, `{"detail":"Movie not found"}`)
	}
	missing := `{"detail":[{"loc":["query","movie_id"],"msg":"field required","type":"value_error.missing"}]}`
	get("/movies/", 422, missing)
	get("/movies/?movie_id=%zz", 422, missing)
	notInt := `{"detail":[{"loc":["query","movie_id"],"msg":"value is not a valid integer","type":"type_error.integer"}]}`
	get("/movies/?movie_id", 422, notInt)
	// Plain decimal text only: no spaces, "_", hex, or digits of other scripts.
	for _, bad := range []string{"", "abc", "1.5", "2147483648", "-2147483649", "99999999999999999999", "0x10", "1e3", "%00",
		"_1", "1_0", "%201%20", "+1", "%EF%BC%91", "%D9%A1", strings.Repeat("0", 4300) + "1"} {
		get("/movies/?movie_id="+bad, 422, notInt)
	}
	// HEAD follows GET, without the body.
	app.do(t, "HEAD", "/movies/?movie_id=1", auth, nil).expect(t, 200, "")
	app.do(t, "POST", "/movies/?movie_id=1", auth, nil).expect(t, 405, `{"detail":"Method Not Allowed"}`)
}

func TestNewMovies(t *testing.T) {
	t.Parallel()
	app, auth := sampleApp(t)
	get := func(query string, status int, body string) {
		t.Helper()
		if res := app.do(t, "GET", "/movies/new?"+query, auth, nil); res.status != status || res.body != body {
			t.Errorf("GET /movies/new?%s = %d %s\nwant %d %s", query, res.status, res.body, status, body)
		}
	}
	for query, movies := range map[string]string{
		"year=2005&rating=8.8":      darkKnight + "," + inception,
		"year=2005&rating=8.81":     darkKnight,
		"year=2001&rating=8":        darkKnight + "," + inception + "," + amelie,
		"year=2011&rating=0":        "",
		"year=1900&rating=9.5":      "",
		"year=1994&rating=8.9":      shawshank + "," + darkKnight + `,{"movie_id":7,"title":"Pulp Fiction","released":1994,"rating":8.9}`,
		"year=2010&rating=-1e300":   inception,
		"year=2010&rating=.5e1":     inception,
		"year=%2B2010&rating=%2B8.": inception,
	} {
		get(query, 200, "["+movies+"]")
	}
	missing := func(name string) string {
		return `{"loc":["query","` + name + `"],"msg":"field required","type":"value_error.missing"}`
	}
	notInt := `{"loc":["query","year"],"msg":"value is not a valid integer","type":"type_error.integer"}`
	notFloat := `{"loc":["query","rating"],"msg":"value is not a valid float","type":"type_error.float"}`
	for query, problems := range map[string]string{
		"":                          missing("year") + "," + missing("rating"),
		"rating=1":                  missing("year"),
		"year=1":                    missing("rating"),
		"year=x&rating=y":           notInt + "," + notFloat,
		"year=2000.5&rating=":       notInt + "," + notFloat,
		"year=99999999999&rating=1": notInt,
	} {
		get(query, 422, `{"detail":[`+problems+`]}`)
	}
	for _, bad := range []string{"nan", "NaN", "inf", "-inf", "Infinity", "1e400", "0x1p3", "1,5", "abc", "1_0", "%208.8", "%D9%A8", "e5"} {
		get("year=2000&rating="+bad, 422, `{"detail":[`+notFloat+`]}`)
	}
}

// TestQueryThatDoesNotFitIs500 adds a column to myapi.movies, which the
// queries must not mind, then renames one they read: that is a bug, not an
// outage, so both routes answer 500, with the cause in the log at ERROR
// and not in the body.
func TestQueryThatDoesNotFitIs500(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	db := openTestDB(t, dsn)
	seedMovies(t, db)
	auth := signedBearer(t, db, "ada@example.com")
	logs := &syncBuffer{}
	mustExec(t, db, "ALTER TABLE myapi.movies ADD COLUMN director TEXT")
	app := serveHandler(t, newHandler(testDeps(newLogger(logs, "text"), db)))
	app.do(t, "GET", "/movies/new?year=2010&rating=8", auth, nil).expect(t, 200, "["+inception+"]")
	mustExec(t, db, "ALTER TABLE myapi.movies RENAME COLUMN title TO name")
	// New connections: those open may have the old query planned.
	app = serveHandler(t, newHandler(testDeps(newLogger(logs, "text"), openTestDB(t, dsn))))
	for _, target := range []string{"/movies/?movie_id=1", "/movies/new?year=1990&rating=9"} {
		app.do(t, "GET", target, auth, nil).expect(t, 500, `{"detail":"Internal Server Error"}`)
	}
	if n := strings.Count(logs.String(), `level=ERROR msg="query failed" error="ERROR: column`); n != 2 {
		t.Errorf("the log shows the cause %d times, want 2:\n%s", n, logs)
	}
}

// TestRowWithoutJSONIs500: NUMERIC holds NaN, which JSON cannot; writeJSON's
// panic is a 500 with the cause in the log.
func TestRowWithoutJSONIs500(t *testing.T) {
	t.Parallel()
	dsn, _ := databaseWithAda(t)
	db := openTestDB(t, dsn)
	mustExec(t, db, "INSERT INTO myapi.movies VALUES (1, 'Nothing', 2000, 'NaN')")
	logs := &syncBuffer{}
	app := serveHandler(t, newHandler(testDeps(newLogger(logs, "text"), db)))
	app.do(t, "GET", "/movies/?movie_id=1", signedBearer(t, db, "ada@example.com"), nil).expect(t, 500, `{"detail":"Internal Server Error"}`)
	if !strings.Contains(logs.String(), `level=ERROR msg=panic panic="writeJSON: json: error calling MarshalJSON`) {
		t.Errorf("the log does not show the cause:\n%s", logs)
	}
}

func TestRatingIsWrittenWithItsDecimal(t *testing.T) {
	t.Parallel()
	for r, want := range map[rating]string{9: "9.0", 9.2: "9.2", 0: "0.0", -1.5: "-1.5", 8.8: "8.8"} {
		if b, err := r.MarshalJSON(); err != nil || string(b) != want {
			t.Errorf("rating %v = %s, %v; want %s", float64(r), b, err, want)
		}
	}
}

// benchmarkMovies runs a request through the whole handler stack (bearer
// check and user lookup included) against the real database.
func benchmarkMovies(b *testing.B, target, want string) {
	dsn, _ := databaseWithAda(b)
	db := openTestDB(b, dsn)
	seedMovies(b, db)
	h := newHandler(testDeps(newLogger(io.Discard, "text"), db))
	auth := signedBearer(b, db, "ada@example.com").Get("Authorization")
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
