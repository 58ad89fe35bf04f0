package main

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// params reads a request's parameters and collects their problems, so that
// one 422 lists them all. In the query, a pair with a malformed %-escape or
// a ";" counts as absent (url.ParseQuery), and the last of a repeated one counts.
type params struct {
	r        *http.Request
	query    url.Values
	problems []fieldError
}

func readParams(r *http.Request) *params { return &params{r: r, query: r.URL.Query()} }

// location is where a parameter is: not a string, so that a typo cannot compile.
type location int

const (
	inQuery location = iota
	inPath
)

func (l location) String() string { return [...]string{"query", "path"}[l] }

// int reads a parameter as a 32-bit integer (PostgreSQL's INTEGER): an
// optional sign and ASCII digits. Like the original's validator, it refuses
// more than 4300 characters before reading them.
func (p *params) int(in location, name string) int32 {
	s, ok := p.value(in, name)
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 32) // base 10: no "_", no "0x"
	if err != nil || len(s) > 4300 {
		p.problems = append(p.problems, notInteger(in.String(), name))
	}
	return int32(n)
}

// float reads a parameter as a finite number in plain decimal text: an
// optional sign, digits with an optional point, an optional exponent.
func (p *params) float(in location, name string) float64 {
	s, ok := p.value(in, name)
	if !ok {
		return 0
	}
	// ParseFloat also reads "inf", "nan" and hex; past float64's range it
	// fails, so no infinity gets through.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || strings.Trim(s, "0123456789+-.eE") != "" {
		p.problems = append(p.problems, notFloat(in.String(), name))
	}
	return f
}

// value returns a parameter's value, adding a problem when there is none.
func (p *params) value(in location, name string) (string, bool) {
	if in == inPath {
		return p.r.PathValue(name), true
	}
	v := p.query[name]
	if len(v) == 0 {
		p.problems = append(p.problems, missingField(in.String(), name))
		return "", false
	}
	return v[len(v)-1], true
}
