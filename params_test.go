package main

import (
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// FuzzParams checks the parameter readers against API.md's grammar: an
// integer is an optional sign and ASCII digits, a float plain decimal text
// and finite. Nothing else is accepted, and a short enough match is.
func FuzzParams(f *testing.F) {
	for _, s := range []string{"1", "-7", "+0", "8.8", "9e0", ".5", "5.", "1e309", "0x1p3", "1_0", " 1", "nan", "Inf", "٣", ""} {
		f.Add(s)
	}
	integer := regexp.MustCompile(`^[+-]?[0-9]+$`)
	decimal := regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)
	f.Fuzz(func(t *testing.T, s string) {
		r := httptest.NewRequest("GET", "/x?"+url.Values{"v": {s}}.Encode(), nil)
		pi, pf := readParams(r), readParams(r)
		pi.int(inQuery, "v")
		x := pf.float(inQuery, "v")
		digits := len(strings.TrimLeft(s, "+-0"))
		switch {
		case pi.problems == nil && !integer.MatchString(s):
			t.Errorf("int accepted %q", s)
		case pi.problems != nil && integer.MatchString(s) && digits <= 9:
			t.Errorf("int refused %q", s)
		case pf.problems == nil && (!decimal.MatchString(s) || math.IsInf(x, 0) || math.IsNaN(x)):
			t.Errorf("float accepted %q as %v", s, x)
		case pf.problems != nil && decimal.MatchString(s) && !strings.ContainsAny(s, "eE") && digits <= 15:
			t.Errorf("float refused %q", s)
		}
	})
}

// TestPathParameter reads a path parameter as a new service would: its
// problems are reported at loc ["path", name].
func TestPathParameter(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /x/{id}", func(w http.ResponseWriter, r *http.Request) {
		p := readParams(r)
		id := p.int(inPath, "id")
		if p.problems != nil {
			validationFailed(w, r, p.problems)
			return
		}
		writeJSON(w, http.StatusOK, id)
	})
	app := serveHandler(t, mux)
	notInt := `{"detail":[{"loc":["path","id"],"msg":"value is not a valid integer","type":"type_error.integer"}]}`
	app.do(t, "GET", "/x/-7", nil, nil).expect(t, 200, "-7")
	app.do(t, "GET", "/x/7.0", nil, nil).expect(t, 422, notInt)
	app.do(t, "GET", "/x/%20", nil, nil).expect(t, 422, notInt)
}
