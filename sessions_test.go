package main

import (
	"net/url"
	"strings"
	"testing"
)

// offlineLogin logs in with offline_access and returns the grant.
func offlineLogin(t testing.TB, a *testApp, email, password string) tokenResponse {
	t.Helper()
	form := url.Values{"username": {email}, "password": {password}, "scope": {"offline_access"}}
	res := a.do(t, "POST", "/token", formHeader, strings.NewReader(form.Encode()))
	var g tokenResponse
	decodeJSON(t, res.body, &g)
	if res.status != 200 || g.RefreshToken == "" {
		t.Fatalf("offline login %s: %d %s", email, res.status, res.body)
	}
	return g
}
