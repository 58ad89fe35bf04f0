package main

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The /docs page: it renders every operation of openapi.json with a curl
// command per example, escapes what the document says, and can run or
// load nothing.

var (
	htmlTag      = regexp.MustCompile(`<[^>]*>`)
	styleElement = regexp.MustCompile(`(?s)<style>(.*?)</style>`)
	pageSection  = regexp.MustCompile(`(?s)<section id="([^"]*)">(.*?)</section>`)
)

// visibleText is the page as a reader sees it: no tags, entities decoded,
// white space collapsed.
func visibleText(page string) string {
	return strings.Join(strings.Fields(html.UnescapeString(htmlTag.ReplaceAllString(page, " "))), " ")
}

func TestDocsPage(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	doc := app.do(t, "GET", "/openapi.json", nil, nil)
	if doc.expect(t, 200, string(openapiJSON)); doc.header.Get("Content-Type") != "application/json" {
		t.Errorf("/openapi.json: Content-Type %q", doc.header.Get("Content-Type"))
	}
	res := app.do(t, "GET", "/docs", nil, nil)
	if res.status != 200 || res.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /docs = %d %s %.200s", res.status, res.header.Get("Content-Type"), res.body)
	}
	page, lower := res.body, strings.ToLower(res.body)
	for _, bad := range []string{"<script", "javascript:", " src=", `href="http`, "<link", "<iframe", "@import", "url("} {
		if strings.Contains(lower, bad) {
			t.Errorf("the page contains %q: it must run nothing and load nothing", bad)
		}
	}
	if regexp.MustCompile(`<[^>]*\son[a-z]+=`).MatchString(lower) {
		t.Error("the page has an event handler attribute")
	}
	// The policy allows exactly the page's one style element, by its hash.
	styles := styleElement.FindAllStringSubmatch(page, -1)
	if len(styles) != 1 || strings.Count(lower, "<style") != 1 {
		t.Fatalf("the page has %d style elements, want 1", strings.Count(lower, "<style"))
	}
	sum := sha256.Sum256([]byte(styles[0][1]))
	hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	csp := res.header.Get("Content-Security-Policy")
	if !strings.HasPrefix(csp, "default-src 'none';") || !strings.Contains(csp, "style-src "+hash+";") || strings.Contains(csp, "unsafe") {
		t.Errorf("Content-Security-Policy %q, want default-src 'none' and style-src %s", csp, hash)
	}
	// The document's "Bearer <token>" is text, escaped, not a tag.
	if !strings.Contains(page, "Bearer &lt;token&gt;") || strings.Contains(page, "Bearer <token>") {
		t.Error(`"Bearer <token>" from the document is not escaped`)
	}
	checkSections(t, page)
}

// checkSections checks that each operation's section shows its method,
// path and summary, whether it needs a token, its parameters, and each
// example, its own or shared, as a curl command with what it prints.
func checkSections(t *testing.T, page string) {
	t.Helper()
	sections := make(map[string]string)
	for _, m := range pageSection.FindAllStringSubmatch(page, -1) {
		sections[m[1]] = visibleText(m[2])
	}
	doc := mustParseOpenAPI(t)
	const base = "http://127.0.0.1:8000"
	want := make(map[string][]string)
	for _, op := range operations(doc) {
		needs := map[bool]string{true: "A bearer token: Authorization: Bearer $TOKEN", false: "No token."}[len(op.Security) > 0]
		want[op.OperationID] = append(want[op.OperationID], op.method+" "+op.path+" "+op.Summary, op.Description, needs)
		for _, p := range op.Parameters {
			want[op.OperationID] = append(want[op.OperationID], p.Name+" "+p.In)
		}
		if op.RequestBody == nil {
			continue
		}
		for _, c := range op.RequestBody.Content { // the page shows the first; all are alike
			form := resolve(c.Schema, c.Schema.Ref, "schemas", doc.Components.Schemas)
			for name, p := range form.Properties {
				required := map[bool]string{true: "yes", false: "no"}[slices.Contains(form.Required, name)]
				want[op.OperationID] = append(want[op.OperationID], name+" "+p.Type+" "+required)
			}
		}
	}
	for _, ex := range documentedExamples(doc) {
		status, _ := strconv.Atoi(ex.status)
		body, _ := compactJSON(ex.Value)
		target := base + exampleURL(ex.op.path, ex.op.apiOperation, ex.Request)
		want[ex.op.OperationID] = append(want[ex.op.OperationID], "$ "+curlCommand("-si", ex.op.method, target, ex.Request),
			fmt.Sprintf("HTTP/1.1 %d %s Content-Type: %s", status, http.StatusText(status), ex.mediaType), body)
		if slices.Contains(ex.Varies, "access_token") {
			want[ex.op.OperationID] = append(want[ex.op.OperationID], "TOKEN=$("+curlCommand("-s", ex.op.method, target, ex.Request)+" | sed ")
		}
	}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		text, ok := sections[id]
		if !ok {
			t.Errorf("docs.html: the page has no section %q: an operation shows under its first tag, which must be in openapi.json's tags", id)
			continue
		}
		for _, w := range want[id] {
			if !strings.Contains(text, strings.Join(strings.Fields(w), " ")) {
				t.Errorf("docs.html: section %s does not show %q", id, w)
			}
		}
	}
	if !strings.Contains(sections["getMovie"], "$ curl -si -H 'Authorization: Bearer not.a.token' 'http://127.0.0.1:8000/movies/?movie_id=1'") {
		t.Error("the shared 401 example's command is not built from the operation's path and parameters")
	}
}

func TestDocsEscapesTheDocument(t *testing.T) {
	t.Parallel()
	const evil = `<script>alert(1)</script>`
	doc := fmt.Sprintf(`{"openapi": "3.1.0", "info": {"title": %[1]q, "version": %[1]q, "description": %[1]q},
	  "servers": [{"url": %[1]q}], "tags": [{"name": %[1]q, "description": %[1]q}],
	  "paths": {"/x<script>/{p}": {"get": {"operationId": "x\"><script>", "tags": [%[1]q], "summary": %[1]q, "description": %[1]q,
	    "parameters": [{"name": %[1]q, "in": "query", "description": %[1]q, "schema": {"type": "string"}, "example": %[1]q},
	      {"name": "p", "in": "path", "schema": {"type": "string"}, "example": %[1]q}],
	    "requestBody": {"content": {%[1]q: {"schema": {"$ref": "#/components/schemas/E"}}}},
	    "responses": {"200": {"$ref": "#/components/responses/R"}}}}},
	  "components": {"schemas": {"E": {"type": "object", "description": %[1]q,
	    "properties": {"e": {"type": "string", "description": %[1]q, "pattern": %[1]q}}}},
	  "responses": {"R": {"description": %[1]q,
	    "headers": {"X-Evil": {"description": %[1]q, "schema": {"type": "string", "enum": [%[1]q]}}},
	    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/E"},
	      "examples": {"e": {"summary": %[1]q, "value": {"e": %[1]q}, "x-varies": ["access_token"],
	        "x-request": {"query": "q=</pre><script>", "authorization": "Bearer $TOKEN\"<script>", "form": [%[1]q],
	          "path": {"p": %[1]q}},
	        "x-response-headers": {"X-Evil": %[1]q}}}}}}}}}`, evil)
	page, _, err := renderDocs([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(string(page)), "<script") {
		t.Errorf("the page has a script tag:\n%s", page)
	}
	if n := strings.Count(string(page), "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 20 {
		t.Errorf("the text shows escaped %d times, want every place it appears", n)
	}
}

func TestDocsCurlCommands(t *testing.T) {
	t.Parallel()
	const token = "http://127.0.0.1:8000/token"
	movies := &apiOperation{Parameters: []*apiParameter{{Name: "movie_id", In: "query", Example: []byte("1")}}}
	director := &apiOperation{Parameters: []*apiParameter{{Name: "id", In: "path", Example: []byte(`"a b"`)},
		{Name: "q", In: "query", Example: []byte(`"x&y"`)}}}
	empty := ""
	cases := []struct {
		method, target string
		x              *exampleRequest
		want           string
	}{
		{"POST", token, &exampleRequest{Form: []string{"username=ada@example.com", "password=correct horse"}},
			`curl -s -X POST http://127.0.0.1:8000/token --data-urlencode username=ada@example.com --data-urlencode 'password=correct horse'`},
		{"POST", token, &exampleRequest{Form: []string{"password=a&b+c%", "password=it's"}},
			`curl -s -X POST http://127.0.0.1:8000/token --data-urlencode 'password=a&b+c%' --data-urlencode 'password=it'\''s'`},
		{"POST", token, &exampleRequest{Form: []string{}}, `curl -s -X POST http://127.0.0.1:8000/token -d ''`},
		{"POST", token, &exampleRequest{Form: []string{"username=a"}, PadBytes: 10},
			`curl -s -X POST http://127.0.0.1:8000/token --data-urlencode username=a --data-urlencode "pad=$(head -c 10 /dev/zero | tr '\0' x)"`},
		{"POST", token, &exampleRequest{ContentType: "multipart/form-data", Form: []string{"username=a"}},
			`curl -s -X POST -H 'Content-Type: multipart/form-data' http://127.0.0.1:8000/token --data-urlencode username=a`},
		{"GET", exampleURL("/movies/", movies, &exampleRequest{Authorization: "Bearer $TOKEN"}), &exampleRequest{Authorization: "Bearer $TOKEN"},
			`curl -s -H "Authorization: Bearer $TOKEN" '/movies/?movie_id=1'`},
		{"GET", exampleURL("/movies/", movies, &exampleRequest{Query: &empty}), nil, `curl -s /movies/`},
		{"GET", exampleURL("/d/{id}", director, nil), nil, `curl -s '/d/a%20b?q=x%26y'`},
		{"GET", exampleURL("/d/{id}", director, &exampleRequest{Path: map[string]string{"id": "999"}}), nil, `curl -s '/d/999?q=x%26y'`},
		{"GET", "/m", &exampleRequest{Authorization: "Bearer $X\"`\\"}, "curl -s -H \"Authorization: Bearer $X\\\"\\`\\\\\" /m"},
	}
	for _, c := range cases {
		if got := curlCommand("-s", c.method, c.target, c.x); got != c.want {
			t.Errorf("curlCommand(%s %s %+v)\n got %s\nwant %s", c.method, c.target, c.x, got, c.want)
		}
	}
}
