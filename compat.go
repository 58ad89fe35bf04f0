package main

import (
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// What myapi keeps only so that the FastAPI service's clients, tokens and
// recorded answers work unchanged (API.md), each with its reason. Most of it
// is here; three one-line choices stay where they act, pointing here:
//
//   - GET /movies is routed beside GET /movies/ (server.go): the original
//     redirects it, and a client that follows expects the same answer.
//   - writeJSON escapes no HTML (server.go): the original writes "<" and
//     "&" as they are, and recorded answers are compared byte for byte.
//   - requireUser splits "Bearer <token>" at the first space (auth.go), so
//     "Bearer  <token>" is a bad token, as it is in the original.

// The original's 401 texts read swapped, but its clients match on them:
// "Invalid token" when no bearer token came, "Invalid credentials" for a
// token that came and is bad.
const (
	detailNoToken  = "Invalid token"
	detailBadToken = "Invalid credentials"
)

// rating is a NUMERIC(2,1) score, always written with its decimal (9.0,
// never 9), as the original writes it.
type rating float64

func (r rating) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(r), 'f', 1, 64), nil
}

// The original's tokens expire by expires_at, Python's str(datetime) in
// UTC ("2026-12-07 18:33:49"), not by exp. myapi writes it beside exp and
// reads it, so that tokens pass both ways when the two share a key. Dates
// lie in years 1 to 9999, the years a Python datetime holds.
const (
	expiresAtLayout = time.DateTime // time.Parse also reads the ".ffffff" Python adds
	minNumericDate  = -62135596800  // 0001-01-01T00:00:00Z
	maxNumericDate  = 253402300800  // 10000-01-01T00:00:00Z
)

// dateTimeUTC reads v as an expires_at string.
func dateTimeUTC(v any) (time.Time, bool) {
	s, ok := v.(string)
	t, err := time.Parse(expiresAtLayout, s)
	return t, ok && err == nil && t.Year() >= 1 // four digits allow year 0
}

// decodedPaths routes every request by its decoded path, as the original
// does: "%2F" is a "/" like any other, where ServeMux would keep it inside a
// segment. A path with "//", "/./" or "/../" is 404, where ServeMux would
// redirect it with an HTML body, and so is one that does not start with "/"
// ("*", a CONNECT's ""), which ServeMux answers in plain text.
func decodedPaths(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if !strings.HasPrefix(p, "/") || clean != p {
			notFound(w, r)
			return
		}
		if r.URL.RawPath != "" {
			r = r.Clone(r.Context()) // a handler must not change the request it was given
			r.URL.RawPath = ""
		}
		h.ServeHTTP(w, r)
	})
}

// redirectToOtherSlash answers 307 to the path's other trailing-slash form,
// the query kept, when that form has a route, and reports whether it did:
// the original redirects /token/ to /token and /movies/new/ to /movies/new.
func redirectToOtherSlash(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) bool {
	other, trimmed := strings.CutSuffix(r.URL.Path, "/")
	if !trimmed {
		other += "/"
	}
	if other == "" || allowedMethods(mux, r, other) == nil {
		return false
	}
	u := *r.URL
	u.Path, u.RawPath = other, ""
	w.Header().Set("Location", u.RequestURI())
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}
