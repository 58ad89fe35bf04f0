package main

import (
	"math"
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
		pi.int("query", "v")
		x := pf.float("query", "v")
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
