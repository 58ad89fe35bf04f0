package main

import (
	"context"
	"errors"
	"net/http"
	"strconv"
)

// Movie is a row of myapi.movies.
type Movie struct {
	ID       int32  `json:"movie_id"`
	Title    string `json:"title"`
	Released int32  `json:"released"`
	Rating   rating `json:"rating"`
}

// handleGetMovie is GET /movies/?movie_id=N.
func handleGetMovie(d deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := readParams(r)
		id := p.int(inQuery, "movie_id")
		if p.problems != nil {
			validationFailed(w, r, p.problems)
			return
		}
		m, err := d.store.movie(r.Context(), id)
		switch {
		case errors.Is(err, errNotFound):
			movieNotFound(w, r)
		case err != nil:
			databaseFailed(w, r, d.log, err)
		default:
			writeJSON(w, http.StatusOK, m)
		}
	})
}

// handleNewMovies is GET /movies/new?year=Y&rating=R.
func handleNewMovies(d deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := readParams(r)
		year := p.int(inQuery, "year")
		minRating := p.float(inQuery, "rating")
		if p.problems != nil {
			validationFailed(w, r, p.problems)
			return
		}
		movies, err := d.store.newMovies(r.Context(), year, minRating)
		if err != nil {
			databaseFailed(w, r, d.log, err)
			return
		}
		writeJSON(w, http.StatusOK, movies)
	})
}

// movie returns the movie with id, or errNotFound.
func (s *store) movie(ctx context.Context, id int32) (m Movie, err error) {
	err = queryRow(ctx, s.db, "SELECT movie_id, title, released, rating FROM myapi.movies WHERE movie_id = $1",
		[]any{id}, movieColumns(&m)...)
	return m, err
}

// newMovies reads the set-returning ("table-valued") function
// myapi.new_movies, which schema.sql holds. The rating goes as the shortest
// decimal ("8.9", not 8.90000000000000035...): rating=8.9 finds the 8.9s.
func (s *store) newMovies(ctx context.Context, year int32, minRating float64) ([]Movie, error) {
	return queryAll(ctx, s.db, `SELECT movie_id, title, released, rating
		FROM myapi.new_movies($1::integer, $2::numeric)`,
		[]any{year, strconv.FormatFloat(minRating, 'g', -1, 64)}, movieColumns)
}

// movieColumns are the fields of m that the queries' columns fill, in order.
func movieColumns(m *Movie) []any { return []any{&m.ID, &m.Title, &m.Released, (*float64)(&m.Rating)} }
