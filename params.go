package main

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// params reads a request's query and path parameters and collects their
// problems, so that one 422 lists them all. A handler reads every
// parameter, then answers validationFailed(w, r, p.problems) if there are
// any, as handleNewMovies does.
//
// The query is read by url.ParseQuery: a pair whose %-escape is malformed,
// or that holds a ";", counts as absent. When a parameter is repeated, the
// last value counts.
type params struct {
	r        *http.Request
	query    url.Values
	problems []fieldError
}

func readParams(r *http.Request) *params {
	return &params{r: r, query: r.URL.Query()}
}

// queryInt reads query parameter name as a 32-bit integer (PostgreSQL's
// INTEGER).
func (p *params) queryInt(name string) int32 {
	s, ok := p.queryValue(name)
	if !ok {
		return 0
	}
	return p.int32("query", name, s)
}

// queryFloat reads query parameter name as a finite number.
func (p *params) queryFloat(name string) float64 {
	s, ok := p.queryValue(name)
	if !ok {
		return 0
	}
	// Plain decimal text only: ParseFloat would also read "inf", "nan",
	// hex ("0x1p3") and "_" separators.
	f, err := strconv.ParseFloat(s, 64)
	// Past float64's range it is an error, so no infinity gets through.
	if err != nil || strings.Trim(s, "0123456789+-.eE") != "" {
		p.problems = append(p.problems, notFloat("query", name))
	}
	return f
}

// pathInt reads path parameter name, a wildcard of the route's pattern
// such as {director_id}, as a 32-bit integer.
func (p *params) pathInt(name string) int32 {
	return p.int32("path", name, p.r.PathValue(name))
}

// queryValue returns the last value of query parameter name, adding a
// problem when there is none.
func (p *params) queryValue(name string) (string, bool) {
	v := p.query[name]
	if len(v) == 0 {
		p.problems = append(p.problems, missingField("query", name))
		return "", false
	}
	return v[len(v)-1], true
}

// int32 reads s, an optional sign and ASCII digits, as a 32-bit integer.
// Like the original's validator, it refuses more than 4300 characters
// before reading them, even a small number padded with zeros.
func (p *params) int32(in, name, s string) int32 {
	n, err := strconv.ParseInt(s, 10, 32) // base 10: no "_", no "0x"
	if err != nil || len(s) > 4300 {
		p.problems = append(p.problems, notInteger(in, name))
	}
	return int32(n)
}
