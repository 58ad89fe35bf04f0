package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
)

// openapiFiles are the OpenAPI document in parts, written by hand: shared.json
// and a file per resource. openapi_test.go replays every example.
//
//go:embed openapi/*.json
var openapiFiles embed.FS

//go:embed docs.html
var docsHTML string

// handleOpenAPI serves the OpenAPI document, merged once: it never changes.
func handleOpenAPI() http.Handler {
	doc := openAPIDocument()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})
}

// handleDocs serves the document as an HTML page, rendered once.
func handleDocs() http.Handler {
	page, csp := renderDocs(openAPIDocument())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", csp)
		w.Write(page)
	})
}

// renderDocs renders the page, and a Content-Security-Policy that allows its
// inline style alone, by hash. Like template.Must, it panics on an error.
func renderDocs(doc []byte) (page []byte, csp string) {
	d, err := parseOpenAPI(doc)
	tmpl := template.Must(template.New("docs").Funcs(template.FuncMap{
		"curl":       curlCommand,
		"exampleURL": exampleURL,
		"compact":    compactJSON,
		"statusText": http.StatusText,
		"trimPrefix": strings.TrimPrefix,
	}).Parse(docsHTML))
	var buf, style bytes.Buffer
	if err := errors.Join(err, tmpl.Execute(&buf, d), tmpl.ExecuteTemplate(&style, "style", nil)); err != nil {
		panic("docs: " + err.Error())
	}
	sum := sha256.Sum256(style.Bytes())
	csp = "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return buf.Bytes(), csp
}

// openAPIDocument merges openapiFiles, in name order, into one document;
// like template.Must, it panics on an error (the tests merge them first).
func openAPIDocument() []byte {
	names, _ := fs.Glob(openapiFiles, "openapi/*.json")
	doc := make(map[string]json.RawMessage)
	for _, name := range names {
		b, err := openapiFiles.ReadFile(name)
		if err == nil {
			err = mergeJSON(doc, b, "")
		}
		if err != nil {
			panic(name + ": " + err.Error())
		}
	}
	b, _ := marshalJSON(doc) // RawMessages from Unmarshal: valid JSON
	return b
}

// mergeJSON merges the JSON object src into dst: arrays join, objects merge,
// anything else in both conflicts. The rest is kept as written, order and all.
func mergeJSON(dst map[string]json.RawMessage, src []byte, at string) error {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(src, &members); err != nil {
		return err
	}
	for k, v := range members {
		old, ok := dst[k]
		switch {
		case !ok:
			dst[k] = v
		case old[0] == '[' && v[0] == '[':
			var a, b []json.RawMessage
			json.Unmarshal(old, &a)
			json.Unmarshal(v, &b)
			dst[k], _ = marshalJSON(append(a, b...))
		case old[0] == '{' && v[0] == '{':
			merged := make(map[string]json.RawMessage)
			json.Unmarshal(old, &merged)
			if err := mergeJSON(merged, v, fmt.Sprintf("%s[%q]", at, k)); err != nil {
				return err
			}
			dst[k], _ = marshalJSON(merged)
		default:
			return fmt.Errorf("%s[%q] is also in another file of openapi/: keep one", at, k)
		}
	}
	return nil
}

// openAPIDoc is the part of an OpenAPI 3.1 document the page shows and the
// tests check. encoding/json ignores case: only $ref and x- members need tags.
type openAPIDoc struct {
	Info       struct{ Title, Version, Summary, Description string }
	Servers    []struct{ URL string }
	Tags       []struct{ Name, Description string }
	Paths      map[string]map[string]*apiOperation // path → method → operation
	Components struct {
		Schemas   map[string]*apiSchema
		Responses map[string]*apiResponse
	}
}

type apiOperation struct {
	Tags                              []string
	OperationID, Summary, Description string
	Security                          []map[string][]string // empty: no token needed
	Parameters                        []*apiParameter
	RequestBody                       struct{ Content map[string]apiMediaType }
	Responses                         map[int]*apiResponse // by status code
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

// apiSchema is what the page shows of a JSON Schema: a type, a form's fields.
type apiSchema struct {
	Ref               string `json:"$ref"`
	Type, Description string
	Properties        map[string]*apiSchema
	Required          []string
}

// apiExample is a response the running service really gives.
type apiExample struct {
	Summary string
	Value   json.RawMessage
	Request *exampleRequest   `json:"x-request"`
	Headers map[string]string `json:"x-response-headers"` // exact values
	Varies  []string          `json:"x-varies"`           // members that differ on every request
}

// exampleRequest is an example's x-request: the page shows it as a curl
// command, the tests send it, to the URL that exampleURL builds.
type exampleRequest struct {
	Path          map[string]string // path parameter → value, where its example will not do
	Query         *string           // the raw query ("" for none); absent, the parameters' examples
	Authorization string            // $TOKEN is a valid token, $EXPIRED_TOKEN an expired one
	Form          []string          // "name=value" fields, urlencoded; present but empty, an empty form
	ContentType   string            // replaces the form's
	PadBytes      int               // adds a field of that many bytes to the form
	Repeat        int               // sends it that many times; the example is the last answer
	Database      string            // "down": the answer while PostgreSQL is unavailable
}

// parseOpenAPI decodes the document and replaces each response's $ref with
// a copy of what it names, which keeps the $ref (the tests report a bad one).
func parseOpenAPI(b []byte) (*openAPIDoc, error) {
	var d openAPIDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	shared := d.Components.Responses
	for _, item := range d.Paths {
		for _, op := range item {
			for code, r := range op.Responses {
				if named := shared[strings.TrimPrefix(r.Ref, "#/components/responses/")]; named != nil {
					copied := *named
					copied.Ref = r.Ref
					op.Responses[code] = &copied
				}
			}
		}
	}
	return &d, nil
}

// compactJSON is an example's value as the service sends it: compact, as written.
func compactJSON(v json.RawMessage) (string, error) {
	var b bytes.Buffer
	err := json.Compact(&b, v)
	return b.String(), err
}

// exampleURL is where x goes on the operation op at path: the parameters'
// examples, unless x gives its own, so a shared example fits every operation.
func exampleURL(path string, op *apiOperation, x *exampleRequest) string {
	var query []string
	for _, p := range op.Parameters {
		value := string(p.Example)
		json.Unmarshal(p.Example, &value) // a string loses its quotes; a number stays as written
		switch p.In {
		case "path":
			if own, ok := x.Path[p.Name]; ok {
				value = own
			}
			path = strings.ReplaceAll(path, "{"+p.Name+"}", url.PathEscape(value))
		case "query":
			query = append(query, url.QueryEscape(p.Name)+"="+url.QueryEscape(value))
		}
	}
	q := strings.Join(query, "&")
	if x.Query != nil {
		q = *x.Query
	}
	return strings.TrimSuffix(path+"?"+q, "?") // no query, no "?"
}

// curlCommand is the curl command, with its options opt, that sends x to
// target. --data-urlencode sends any form value as written.
func curlCommand(opt, method, target string, x *exampleRequest) string {
	args := []string{"curl", opt, "-X", strings.ToUpper(method)}
	for _, h := range []string{"Authorization: " + x.Authorization, "Content-Type: " + x.ContentType} {
		if !strings.HasSuffix(h, ": ") {
			args = append(args, "-H", shellQuote(h))
		}
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

// shellQuote quotes s for a POSIX shell: in double quotes when it names a
// variable ($TOKEN) for the shell to expand, in single quotes otherwise.
func shellQuote(s string) string {
	if strings.Contains(s, "$") {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`").Replace(s) + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
