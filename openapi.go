package main

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The OpenAPI document is written by hand. openapi_test.go replays each
// example's request (x-request) against the real server and compares the
// operations with the routes that routes (server.go) registers, so the
// document cannot drift from the code without a test failing.

//go:embed openapi.json
var openapiJSON []byte

//go:embed docs.html
var docsHTML string

// handleOpenAPI serves the OpenAPI document.
func handleOpenAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapiJSON)
	})
}

// handleDocs serves the document as an HTML page, rendered once: it never changes.
func handleDocs() http.Handler {
	page, csp, err := renderDocs(openapiJSON)
	if err != nil {
		// Both are compiled in and the tests render them: only a broken build gets here.
		panic("docs: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", csp)
		w.Write(page)
	})
}

// renderDocs renders the document as a page, and returns the
// Content-Security-Policy that allows nothing but the page's own inline
// style, by its hash: even if escaping failed, nothing could run or load.
func renderDocs(doc []byte) (page []byte, csp string, err error) {
	d, err := parseOpenAPI(doc)
	if err != nil {
		return nil, "", err
	}
	tmpl, err := template.New("docs").Funcs(template.FuncMap{
		"curl":       curlCommand,
		"exampleURL": exampleURL,
		"upper":      strings.ToUpper,
		"tagged":     func(op *apiOperation, tag string) bool { return len(op.Tags) > 0 && op.Tags[0] == tag },
		"has":        func(list []string, s string) bool { return slices.Contains(list, s) },
		"schema":     func(s *apiSchema) *apiSchema { return resolve(s, s.Ref, "schemas", d.Components.Schemas) },
		"compact":    compactJSON,
		"refName":    func(ref string) string { return ref[strings.LastIndexByte(ref, '/')+1:] },
		"statusText": func(code string) string { n, _ := strconv.Atoi(code); return http.StatusText(n) },
	}).Parse(docsHTML)
	if err != nil {
		return nil, "", err
	}
	var buf, style bytes.Buffer
	if err := errors.Join(tmpl.Execute(&buf, d), tmpl.ExecuteTemplate(&style, "style", nil)); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(style.Bytes())
	csp = "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return buf.Bytes(), csp, nil
}

// openAPIDoc is the part of an OpenAPI 3.1 document the page shows and the
// tests check. encoding/json ignores case: only $ref and x- members need tags.
type openAPIDoc struct {
	OpenAPI    string
	Info       struct{ Title, Version, Summary, Description string }
	Servers    []struct{ URL string }
	Tags       []struct{ Name, Description string }
	Paths      map[string]map[string]*apiOperation // path → method → operation
	Components struct {
		Schemas         map[string]*apiSchema
		Responses       map[string]*apiResponse
		SecuritySchemes map[string]json.RawMessage
	}
}

type apiOperation struct {
	Tags                              []string
	OperationID, Summary, Description string
	Security                          []map[string][]string // empty: no token needed
	Parameters                        []*apiParameter
	RequestBody                       *struct{ Content map[string]apiMediaType }
	Responses                         map[string]*apiResponse // by status code
}

// apiParameter is a Parameter Object, or a Header Object (the same without name and in).
type apiParameter struct {
	Name, In, Description string
	Required              bool
	Schema                *apiSchema
	Example               json.RawMessage
}

type apiResponse struct {
	Ref         string `json:"$ref"`
	Description string
	Headers     map[string]*apiParameter
	Content     map[string]apiMediaType // by media type
}

type apiMediaType struct {
	Schema   *apiSchema
	Examples map[string]*apiExample
}

// apiSchema is the subset of JSON Schema the document uses.
type apiSchema struct {
	Ref                                string `json:"$ref"`
	Type, Format, Description, Pattern string
	Properties                         map[string]*apiSchema
	Required                           []string
	AdditionalProperties               *bool
	Items                              *apiSchema
	Enum                               []any
}

// apiExample is a response the running service really gives.
type apiExample struct {
	Summary string
	Value   json.RawMessage
	Request *exampleRequest   `json:"x-request"`
	Headers map[string]string `json:"x-response-headers"` // exact values
	Varies  []string          `json:"x-varies"`           // members that differ on every request
}

// exampleRequest is an example's x-request, the request that gets it: the
// page shows it as a curl command, the tests send it. It goes to the
// operation's path, each {param} replaced by that parameter's example, or
// by a value of its own for a 404 or a 422 ("path": {"director_id": "999"});
// its query is the query parameters' examples, unless "query" gives the raw
// query ("" for none). So an example of a response in components/responses
// replays for every operation that references it.
type exampleRequest struct {
	Path          map[string]string // path parameter → value, where the parameter's example will not do
	Query         *string           // the raw query; absent, the query parameters' examples
	Authorization string            // $TOKEN is a valid token, $EXPIRED_TOKEN an expired one
	Form          []string          // "name=value" fields, urlencoded; present but empty, an empty form
	ContentType   string            // replaces the form's
	PadBytes      int               // adds a field of that many bytes to the form
	Repeat        int               // sends it that many times; the example is the last answer
	Database      string            // "down": the answer while PostgreSQL is unavailable
}

// parseOpenAPI decodes the document and replaces each response's $ref with
// a copy of the response it names, which keeps the $ref: the tests say
// where a shared example sits.
func parseOpenAPI(b []byte) (*openAPIDoc, error) {
	var d openAPIDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("openapi.json: %w", err)
	}
	for _, item := range d.Paths {
		for _, op := range item {
			for code, r := range op.Responses {
				named := resolve(r, r.Ref, "responses", d.Components.Responses)
				if named == nil {
					return nil, fmt.Errorf("openapi.json: %s names no response", r.Ref)
				}
				shared := *named
				shared.Ref = r.Ref
				op.Responses[code] = &shared
			}
		}
	}
	return &d, nil
}

// resolve returns v, or the component that its $ref names (nil if none).
func resolve[T any](v *T, ref, kind string, components map[string]*T) *T {
	if ref == "" {
		return v
	}
	name, _ := strings.CutPrefix(ref, "#/components/"+kind+"/")
	return components[name]
}

// compactJSON writes an example's value as the service sends it: compact,
// with members and numbers exactly as written.
func compactJSON(v json.RawMessage) (string, error) {
	var b bytes.Buffer
	err := json.Compact(&b, v)
	return b.String(), err
}

// exampleURL is the path and query x goes to on the operation op at path
// (see exampleRequest). Values are escaped as a client would: the page's
// commands and the tests' requests are the same.
func exampleURL(path string, op *apiOperation, x *exampleRequest) string {
	if x == nil {
		x = &exampleRequest{}
	}
	var query []string
	for _, p := range op.Parameters {
		switch value := exampleText(p.Example); p.In {
		case "path":
			if own, ok := x.Path[p.Name]; ok {
				value = own
			}
			path = strings.ReplaceAll(path, "{"+p.Name+"}", url.PathEscape(value))
		case "query":
			if p.Example != nil {
				query = append(query, url.QueryEscape(p.Name)+"="+url.QueryEscape(value))
			}
		}
	}
	q := strings.Join(query, "&")
	if x.Query != nil {
		q = *x.Query
	}
	if q == "" {
		return path
	}
	return path + "?" + q
}

// exampleText is a parameter's example as it goes in a URL: a string
// without its quotes, a number as written.
func exampleText(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// curlCommand is the curl command, with its options opt, that sends x to
// target (see exampleURL). Form fields always go through --data-urlencode,
// which sends any value as written.
func curlCommand(opt, method, target string, x *exampleRequest) string {
	args := []string{"curl", opt}
	if x == nil {
		x = &exampleRequest{}
	}
	if method = strings.ToUpper(method); method != "GET" {
		args = append(args, "-X", method)
	}
	if x.Authorization != "" {
		args = append(args, "-H", shellQuote("Authorization: "+x.Authorization))
	}
	if x.ContentType != "" {
		args = append(args, "-H", shellQuote("Content-Type: "+x.ContentType))
	}
	args = append(args, shellQuote(target))
	for _, f := range x.Form {
		args = append(args, "--data-urlencode", shellQuote(f))
	}
	if x.PadBytes > 0 {
		args = append(args, "--data-urlencode", fmt.Sprintf(`"pad=$(head -c %d /dev/zero | tr '\0' x)"`, x.PadBytes))
	} else if x.Form != nil && len(x.Form) == 0 {
		args = append(args, "-d", "''")
	}
	return strings.Join(args, " ")
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_-]+$`)

// shellQuote quotes s for a POSIX shell: bare when that is safe, in double
// quotes when it names a variable ($TOKEN) for the shell to expand, in
// single quotes otherwise.
func shellQuote(s string) string {
	switch {
	case shellSafe.MatchString(s):
		return s
	case strings.Contains(s, "$"):
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`").Replace(s) + `"`
	default:
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
}
