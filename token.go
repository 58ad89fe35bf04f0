package main

import (
	"errors"
	"time"
)

type tokenClaims struct {
	Sub       string
	Name      string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

var (
	errTokenExpired = errors.New("token expired")
	errTokenInvalid = errors.New("invalid token")
)

func signToken(key []byte, c tokenClaims) string { return "" }
func verifyToken(token string, keys [][]byte, now time.Time) (tokenClaims, error) {
	return tokenClaims{}, errTokenInvalid
}
