package main

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// params reads a request's parameters, from the query or the path (a
// wildcard of the route's pattern), and collects their problems, so that one
// 422 lists them all. url.ParseQuery reads the query: a pair with a malformed
// %-escape or a ";" counts as absent; of a repeated parameter, the last counts.
type params struct {
	r        *http.Request
	query    url.Values
	problems []fieldError
}

func readParams(r *http.Request) *params {
	return &params{r: r, query: r.URL.Query()}
}

// queryInt reads query parameter name as a 32-bit integer.
func (p *params) queryInt(name string) int32 {
	s, ok := p.queryValue(name)
	return p.int(s, ok, "query", name)
}

// pathInt reads the route's wildcard {name} as a 32-bit integer.
func (p *params) pathInt(name string) int32 {
	return p.int(p.r.PathValue(name), true, "path", name)
}

// queryFloat reads query parameter name as a finite number in plain decimal
// text: an optional sign, digits with an optional point, an optional exponent.
func (p *params) queryFloat(name string) float64 {
	s, ok := p.queryValue(name)
	if !ok {
		return 0
	}
	// ParseFloat also reads "inf", "nan" and hex; past float64's range it
	// fails, so no infinity gets through.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || strings.Trim(s, "0123456789+-.eE") != "" {
		p.problems = append(p.problems, notFloat("query", name))
	}
	return f
}

// int reads s, found in the request, as a 32-bit integer (PostgreSQL's
// INTEGER): an optional sign and ASCII digits. Like the original's
// validator, it refuses more than 4300 characters before reading them.
func (p *params) int(s string, found bool, in, name string) int32 {
	if !found {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 32) // base 10: no "_", no "0x"
	if err != nil || len(s) > 4300 {
		p.problems = append(p.problems, notInteger(in, name))
	}
	return int32(n)
}

// queryValue returns a query parameter's value, adding a problem when there is none.
func (p *params) queryValue(name string) (string, bool) {
	v := p.query[name]
	if len(v) == 0 {
		p.problems = append(p.problems, missingField("query", name))
		return "", false
	}
	return v[len(v)-1], true
}
