package main

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Movie is a row of myapi.movies, in the original's JSON shape.
type Movie struct {
	ID       int32  `json:"movie_id"`
	Title    string `json:"title"`
	Released int32  `json:"released"`
	Rating   rating `json:"rating"`
}

// rating is a NUMERIC(2,1) score. It is always written with its decimal
// (9.0, never 9), as the original writes it.
type rating float64

func (r rating) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(r), 'f', 1, 64), nil
}

// handleGetMovie is GET /movies/?movie_id=N.
func handleGetMovie(log *slog.Logger, s *store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := parseQuery(r.URL.RawQuery)
		var problems []fieldError
		id := queryInt(q, "movie_id", &problems)
		if problems != nil {
			validationFailed(w, r, problems)
			return
		}
		m, err := s.movie(r.Context(), id)
		switch {
		case errors.Is(err, errNotFound):
			movieNotFound(w, r)
		case err != nil:
			serviceUnavailable(w, r, log, err)
		default:
			writeJSON(w, http.StatusOK, m)
		}
	})
}

// handleNewMovies is GET /movies/new?year=Y&rating=R: the movies released
// in or after Y and rated R or more, by movie_id.
func handleNewMovies(log *slog.Logger, s *store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := parseQuery(r.URL.RawQuery)
		var problems []fieldError
		year := queryInt(q, "year", &problems)
		minRating := queryFloat(q, "rating", &problems)
		if problems != nil {
			validationFailed(w, r, problems)
			return
		}
		movies, err := s.newMovies(r.Context(), year, minRating)
		if err != nil {
			serviceUnavailable(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, movies)
	})
}

// queryInt reads a 32-bit integer parameter (the columns are INTEGER),
// adding a problem when it is missing or is not one.
func queryInt(q url.Values, name string, problems *[]fieldError) int32 {
	s, ok := lastValue(q, name)
	if !ok {
		*problems = append(*problems, missingField("query", name))
		return 0
	}
	n, err := strconv.ParseInt(pythonNumber(s), 10, 32)
	// The original's validator refuses a string of more than 4300
	// characters before reading it (Python's int() limit, CVE-2020-10735),
	// even one that pads a small number with zeros or spaces.
	if err != nil || utf8.RuneCountInString(s) > 4300 {
		*problems = append(*problems, notInteger("query", name))
		return 0
	}
	return int32(n)
}

// queryFloat reads a finite number parameter, adding a problem when it is
// missing or is not one. NaN and infinities are not numbers here.
func queryFloat(q url.Values, name string, problems *[]fieldError) float64 {
	s, ok := lastValue(q, name)
	if !ok {
		*problems = append(*problems, missingField("query", name))
		return 0
	}
	s = pythonNumber(s)
	f, err := strconv.ParseFloat(s, 64)
	// Go reads hex floats ("0x1p3"); Python's float() does not.
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(s, "xX") {
		*problems = append(*problems, notFloat("query", name))
		return 0
	}
	return f
}

// pythonNumber brings a number that Python's int() and float() read, as the
// original does, to Go's syntax: no surrounding space, digits of any script
// ("１", "١") as ASCII, no underscores between digits ("1_000").
func pythonNumber(s string) string {
	s = strings.Map(asciiDigit, strings.TrimSpace(s))
	if !strings.Contains(s, "_") {
		return s
	}
	b := []byte(s)
	out := b[:0]
	for i, c := range b {
		if c == '_' {
			if i == 0 || i == len(b)-1 || !isDigit(b[i-1]) || !isDigit(b[i+1]) {
				return s
			}
			continue
		}
		out = append(out, c)
	}
	return string(out)
}

// asciiDigit maps a decimal digit of any script (Unicode's Nd, which
// Python reads) to ASCII. Each script's digits are a run of ten from zero,
// so a digit's value is its distance from the start of its run, modulo ten.
func asciiDigit(r rune) rune {
	if r < utf8.RuneSelf || !unicode.IsDigit(r) {
		return r
	}
	zero := r
	for unicode.IsDigit(zero - 1) {
		zero--
	}
	return '0' + (r-zero)%10
}

// movie returns the movie with id, or errNotFound.
func (s *store) movie(ctx context.Context, id int32) (m Movie, err error) {
	err = queryRow(ctx, s.db, "SELECT movie_id, title, released, rating FROM myapi.movies WHERE movie_id = $1",
		[]any{id}, &m.ID, &m.Title, &m.Released, (*float64)(&m.Rating))
	return m, err
}

// newMovies reads the set-returning ("table-valued") function
// myapi.new_movies: the query lives in schema.sql, and Go only names it; the
// casts let PostgreSQL check the arguments. The rating goes as the shortest
// decimal that names the float ("8.9", not 8.90000000000000035...), so that
// rating=8.9 finds the 8.9s.
func (s *store) newMovies(ctx context.Context, year int32, minRating float64) ([]Movie, error) {
	return queryAll(ctx, s.db, "SELECT * FROM myapi.new_movies($1::integer, $2::numeric)", scanMovie,
		year, strconv.FormatFloat(minRating, 'g', -1, 64))
}

func scanMovie(rows *sql.Rows) (Movie, error) {
	var m Movie
	err := rows.Scan(&m.ID, &m.Title, &m.Released, (*float64)(&m.Rating))
	return m, err
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
