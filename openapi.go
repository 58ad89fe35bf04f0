package main

import "net/http"

// handleOpenAPI serves the OpenAPI document.
func handleOpenAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		errorResponse(w, http.StatusNotFound, "Not Found")
	})
}

// handleDocs serves the HTML rendering of the OpenAPI document.
func handleDocs() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		errorResponse(w, http.StatusNotFound, "Not Found")
	})
}
