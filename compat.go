package main

import (
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// What myapi keeps only so that the original's clients, tokens and recorded
// answers work unchanged (API.md), each with its reason. Three one-line
// choices stay where they act: GET /movies beside GET /movies/ (server.go;
// the original redirects, and its clients expect the same answer), no HTML
// escaping in writeJSON (server.go; recorded answers are compared byte for
// byte), and "Bearer <token>" split at the first space (auth.go).

// The original's 401 texts read swapped, but its clients match on them.
const (
	detailNoToken  = "Invalid token"
	detailBadToken = "Invalid credentials"
)

// rating is a NUMERIC(2,1) score, written with its decimal (9.0, not 9).
type rating float64

func (r rating) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(r), 'f', 1, 64), nil
}

// The original's tokens expire by expires_at, Python's str(datetime) in UTC,
// not by exp: myapi writes and reads both, so that tokens pass both ways.
// Dates lie in years 1 to 9999, the years a Python datetime holds.
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

// decodedPaths routes by the decoded path, as the original does: "%2F" is a
// "/" like any other. A path with "//", "/./" or "/../", which ServeMux would
// redirect in HTML, is 404, and so is one not starting with "/" ("*").
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
// as the original does, when that has a route, and reports whether it did.
// Never a DELETE: DELETE /sessions/ must not end up as DELETE /sessions.
func redirectToOtherSlash(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) bool {
	other, trimmed := strings.CutSuffix(r.URL.Path, "/")
	if !trimmed {
		other += "/"
	}
	if other == "" || r.Method == http.MethodDelete || allowedMethods(mux, r, other) == nil {
		return false
	}
	u := *r.URL
	u.Path, u.RawPath = other, ""
	w.Header().Set("Location", u.RequestURI())
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}
