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
	"strconv"
	"strings"
)

// The OpenAPI document is written by hand and served as it is. Its
// examples carry the request that gets them (the x-request extension), so
// that openapi_test.go can replay each one against the real server, and
// compare the document's routes with newHandler's: the document cannot
// drift from the code without a test failing.

//go:embed openapi.json
var openapiJSON []byte

//go:embed docs.html
var docsHTML string

// docsBaseURL is the server the page's curl commands talk to: the default
// MYAPI_ADDR.
const docsBaseURL = "http://127.0.0.1:8000"

// handleOpenAPI serves the OpenAPI document.
func handleOpenAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapiJSON)
	})
}

// handleDocs serves the HTML rendering of the OpenAPI document. The page
// never changes while the program runs, so it is rendered once, here.
func handleDocs() http.Handler {
	page, csp, err := renderDocs(openapiJSON)
	if err != nil {
		// Both the document and the template are compiled in, and the
		// tests render them: only a broken build gets here.
		panic("docs: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", csp)
		w.Write(page)
	})
}

// renderDocs renders the document as an HTML page and returns it with the
// Content-Security-Policy it needs: nothing but its own inline style,
// allowed by hash, so that nothing else can run or load even if the
// escaping failed.
func renderDocs(doc []byte) (page []byte, csp string, err error) {
	d, err := parseOpenAPI(doc)
	if err != nil {
		return nil, "", err
	}
	tmpl, err := template.New("docs").Funcs(template.FuncMap{
		"paragraphs": paragraphs,
		"refName":    refName,
		"statusText": func(code string) string { n, _ := strconv.Atoi(code); return http.StatusText(n) },
		"compact":    compactJSON,
	}).Parse(docsHTML)
	if err != nil {
		return nil, "", err
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, newDocsPage(d)); err != nil {
		return nil, "", err
	}
	style, err := inlineStyle(buf.Bytes())
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(style)
	csp = "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return buf.Bytes(), csp, nil
}

// inlineStyle returns the content of the page's one style element.
func inlineStyle(page []byte) ([]byte, error) {
	_, rest, ok := bytes.Cut(page, []byte("<style>"))
	style, _, ok2 := bytes.Cut(rest, []byte("</style>"))
	if !ok || !ok2 || bytes.Contains(rest, []byte("<style")) {
		return nil, errors.New("the page must have exactly one <style> element")
	}
	return style, nil
}

// ordered is a JSON object kept in document order, which a map would
// lose: the page lists paths, fields and examples as the document does.
type ordered[T any] []member[T]

// member is one name and value of an ordered object.
type member[T any] struct {
	Name  string
	Value T
}

func (o *ordered[T]) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("want an object, got %.20s", b)
	}
	*o = nil
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name := tok.(string) // inside an object, a name comes first
		if _, dup := o.get(name); dup {
			return fmt.Errorf("%q appears twice", name)
		}
		var v T
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		*o = append(*o, member[T]{name, v})
	}
	return nil
}

// get returns the value named name.
func (o ordered[T]) get(name string) (T, bool) {
	for _, m := range o {
		if m.Name == name {
			return m.Value, true
		}
	}
	var zero T
	return zero, false
}

// openAPIDoc is the part of an OpenAPI 3.1 document that the page shows.
type openAPIDoc struct {
	OpenAPI string `json:"openapi"`
	Info    struct {
		Title       string `json:"title"`
		Version     string `json:"version"`
		Summary     string `json:"summary"`
		Description string `json:"description"`
	} `json:"info"`
	Paths      ordered[ordered[*apiOperation]] `json:"paths"` // path → method → operation
	Components struct {
		Schemas         ordered[*apiSchema]         `json:"schemas"`
		Responses       ordered[*apiResponse]       `json:"responses"`
		Headers         ordered[*apiHeader]         `json:"headers"`
		SecuritySchemes ordered[*apiSecurityScheme] `json:"securitySchemes"`
	} `json:"components"`
}

// apiOperation is an Operation Object.
type apiOperation struct {
	OperationID string                `json:"operationId"`
	Summary     string                `json:"summary"`
	Description string                `json:"description"`
	Security    []map[string][]string `json:"security"`
	Parameters  []*apiParameter       `json:"parameters"`
	RequestBody *apiRequestBody       `json:"requestBody"`
	Responses   ordered[*apiResponse] `json:"responses"` // by status code
}

// apiParameter is a Parameter Object.
type apiParameter struct {
	Name        string          `json:"name"`
	In          string          `json:"in"`
	Description string          `json:"description"`
	Required    bool            `json:"required"`
	Schema      *apiSchema      `json:"schema"`
	Example     json.RawMessage `json:"example"`
}

// apiRequestBody is a Request Body Object.
type apiRequestBody struct {
	Required bool                   `json:"required"`
	Content  ordered[*apiMediaType] `json:"content"` // by media type
}

// apiResponse is a Response Object, or a $ref to one until parseOpenAPI
// resolves it.
type apiResponse struct {
	Ref         string                 `json:"$ref"`
	Description string                 `json:"description"`
	Headers     ordered[*apiHeader]    `json:"headers"`
	Content     ordered[*apiMediaType] `json:"content"`
}

// apiHeader is a Header Object, or a $ref to one until parseOpenAPI
// resolves it.
type apiHeader struct {
	Ref         string     `json:"$ref"`
	Description string     `json:"description"`
	Required    bool       `json:"required"`
	Schema      *apiSchema `json:"schema"`
}

// apiMediaType is a Media Type Object: a body's schema and examples.
type apiMediaType struct {
	Schema   *apiSchema           `json:"schema"`
	Examples ordered[*apiExample] `json:"examples"`
}

// apiExample is a response the running service really gives, with the
// request that gets it.
type apiExample struct {
	Summary string          `json:"summary"`
	Value   json.RawMessage `json:"value"`
	Request *exampleRequest `json:"x-request"`
	// Headers are response headers with the exact value the request gets.
	Headers ordered[string] `json:"x-response-headers"`
	// Varies names the body's members that differ on every request (the
	// token); the rest of the body is exactly Value.
	Varies []string `json:"x-varies"`
}

// exampleRequest is the x-request extension: the request that gets an
// example's response. The page shows it as a curl command; the tests send
// it to the real server.
type exampleRequest struct {
	Query string `json:"query"`
	// Authorization is the header's value, if any, where $TOKEN stands for
	// a valid token and $EXPIRED_TOKEN for an expired one.
	Authorization string `json:"authorization"`
	// Form holds "name=value" fields, sent urlencoded. Present but empty,
	// it is an empty form.
	Form []string `json:"form"`
	// ContentType replaces the form's Content-Type.
	ContentType string `json:"contentType"`
	// PadBytes adds a field of that many bytes to the form.
	PadBytes int `json:"padBytes"`
	// Repeat is how many times the request is sent: the example is the
	// last answer.
	Repeat int `json:"repeat"`
	// Database is "down" for the answer while PostgreSQL is unavailable.
	Database string `json:"database"`
}

// apiSchema is the subset of JSON Schema the document uses.
type apiSchema struct {
	Ref                  string              `json:"$ref"`
	Type                 string              `json:"type"`
	Format               string              `json:"format"`
	Description          string              `json:"description"`
	Properties           ordered[*apiSchema] `json:"properties"`
	Required             []string            `json:"required"`
	AdditionalProperties *bool               `json:"additionalProperties"`
	Items                *apiSchema          `json:"items"`
	Enum                 []any               `json:"enum"`
	Pattern              string              `json:"pattern"`
}

// apiSecurityScheme is a Security Scheme Object; myapi has one, OAuth2's
// password flow.
type apiSecurityScheme struct {
	Type        string `json:"type"`
	Description string `json:"description"`
	Flows       struct {
		Password *struct {
			TokenURL string `json:"tokenUrl"`
		} `json:"password"`
	} `json:"flows"`
}

// parseOpenAPI decodes an OpenAPI document and replaces each response's
// and header's $ref with what it names.
func parseOpenAPI(b []byte) (*openAPIDoc, error) {
	var d openAPIDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("openapi.json: %w", err)
	}
	for _, p := range d.Paths {
		for _, op := range p.Value {
			if err := d.resolveResponses(op.Value.Responses); err != nil {
				return nil, fmt.Errorf("openapi.json: %s %s: %w", op.Name, p.Name, err)
			}
		}
	}
	return &d, nil
}

func (d *openAPIDoc) resolveResponses(responses ordered[*apiResponse]) error {
	for i, r := range responses {
		if r.Value.Ref != "" {
			res, ok := d.Components.Responses.get(refName(r.Value.Ref))
			if !ok || !strings.HasPrefix(r.Value.Ref, "#/components/responses/") {
				return fmt.Errorf("no response %s", r.Value.Ref)
			}
			responses[i].Value = res
		}
		for j, h := range responses[i].Value.Headers {
			if h.Value.Ref == "" {
				continue
			}
			hdr, ok := d.Components.Headers.get(refName(h.Value.Ref))
			if !ok || !strings.HasPrefix(h.Value.Ref, "#/components/headers/") {
				return fmt.Errorf("no header %s", h.Value.Ref)
			}
			responses[i].Value.Headers[j].Value = hdr
		}
	}
	return nil
}

// paragraphs splits a description at its blank lines.
func paragraphs(s string) []string {
	if s = strings.TrimSpace(s); s == "" {
		return nil
	}
	return strings.Split(s, "\n\n")
}

// refName is the last element of a $ref: the name of what it points to.
func refName(ref string) string {
	return ref[strings.LastIndexByte(ref, '/')+1:]
}

// compactJSON writes an example's value as the service sends it: compact,
// with members and numbers exactly as written.
func compactJSON(raw json.RawMessage) (string, error) {
	var buf bytes.Buffer
	err := json.Compact(&buf, raw)
	return buf.String(), err
}

// docsPage is what the template renders.
type docsPage struct {
	*openAPIDoc
	BaseURL    string
	Operations []docsOperation
}

// docsOperation is one operation with its method and path.
type docsOperation struct {
	*apiOperation
	Method, Path string
}

func newDocsPage(d *openAPIDoc) docsPage {
	page := docsPage{openAPIDoc: d, BaseURL: docsBaseURL}
	for _, p := range d.Paths {
		for _, op := range p.Value {
			page.Operations = append(page.Operations, docsOperation{op.Value, strings.ToUpper(op.Name), p.Name})
		}
	}
	return page
}

// TokenCommand is the shell command that logs in and keeps the token in
// $TOKEN, for the other curl commands to use.
func (p docsPage) TokenCommand() string {
	for _, s := range p.Components.SecuritySchemes {
		if s.Value.Flows.Password == nil {
			continue
		}
		for _, op := range p.Operations {
			if op.Method == "POST" && op.Path == s.Value.Flows.Password.TokenURL {
				return `TOKEN=$(` + op.Curl() + ` | sed 's/.*"access_token":"\([^"]*\)".*/\1/')`
			}
		}
	}
	return ""
}

// Fields lists the properties of s, or of the schema s refers to.
func (p docsPage) Fields(s *apiSchema) []docsField {
	if s != nil && s.Ref != "" {
		s, _ = p.Components.Schemas.get(refName(s.Ref))
	}
	if s == nil {
		return nil
	}
	var fields []docsField
	for _, prop := range s.Properties {
		f := docsField{Name: prop.Name, Schema: prop.Value}
		for _, r := range s.Required {
			f.Required = f.Required || r == prop.Name
		}
		fields = append(fields, f)
	}
	return fields
}

// docsField is a property of an object schema.
type docsField struct {
	Name     string
	Required bool
	Schema   *apiSchema
}

// NeedsToken reports whether the operation needs a bearer token.
func (op docsOperation) NeedsToken() bool { return len(op.Security) > 0 }

// Curl is the operation's curl command: the request of its first
// successful example, or of its first example when none succeeds.
func (op docsOperation) Curl() string {
	var first *exampleRequest
	for _, r := range op.Responses {
		for _, c := range r.Value.Content {
			for _, ex := range c.Value.Examples {
				if ex.Value.Request == nil {
					continue
				}
				if strings.HasPrefix(r.Name, "2") {
					return op.CurlFor(ex.Value.Request)
				}
				if first == nil {
					first = ex.Value.Request
				}
			}
		}
	}
	if first == nil {
		first = &exampleRequest{}
	}
	return op.CurlFor(first)
}

// CurlFor is the curl command that sends x to the operation.
func (op docsOperation) CurlFor(x *exampleRequest) string {
	args := []string{"curl -s"}
	if op.Method != "GET" {
		args = append(args, "-X "+op.Method)
	}
	if x.Authorization != "" {
		args = append(args, "-H "+shellQuote("Authorization: "+x.Authorization))
	}
	if x.ContentType != "" {
		args = append(args, "-H "+shellQuote("Content-Type: "+x.ContentType))
	}
	target := docsBaseURL + op.Path
	if x.Query != "" {
		target += "?" + x.Query
	}
	args = append(args, shellQuote(target))
	if x.Form != nil && len(x.Form) == 0 && x.PadBytes == 0 {
		args = append(args, "-d ''")
	}
	for _, field := range x.Form {
		args = append(args, formArg(field))
	}
	if x.PadBytes > 0 {
		args = append(args, fmt.Sprintf(`-d "pad=$(head -c %d /dev/zero | tr '\0' x)"`, x.PadBytes))
	}
	return strings.Join(args, " ")
}

// CurlShowingHeadersFor is CurlFor with -i, for the example transcripts,
// which show the status line and headers the command prints.
func (op docsOperation) CurlShowingHeadersFor(x *exampleRequest) string {
	return "curl -si" + strings.TrimPrefix(op.CurlFor(x), "curl -s")
}

// formArg is the curl argument that sends one name=value field: -d when
// the field reads back as written, --data-urlencode when it has
// characters that urlencoding gives a meaning (&, +, %).
func formArg(field string) string {
	name, value, _ := strings.Cut(field, "=")
	if q, err := url.ParseQuery(field); err == nil && len(q) == 1 && len(q[name]) == 1 && q[name][0] == value {
		return "-d " + shellQuote(field)
	}
	return "--data-urlencode " + shellQuote(field)
}

// shellQuote quotes s for a POSIX shell: bare when that is safe, in double
// quotes when it names a variable ($TOKEN) for the shell to expand, in
// single quotes otherwise.
func shellQuote(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("@%+=:,./_-", c)) {
			safe = false
			break
		}
	}
	switch {
	case safe:
		return s
	case strings.Contains(s, "$"):
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`").Replace(s) + `"`
	default:
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
}
