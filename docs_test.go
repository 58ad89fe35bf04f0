package main

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The /docs page renders every operation of openapi.json with a curl command
// per example, escapes what the document says, and can run or load nothing.

var htmlTag = regexp.MustCompile(`<[^>]*>`)

// visibleText is the page as a reader sees it: no tags, entities decoded, spaces collapsed.
func visibleText(page string) string {
	return strings.Join(strings.Fields(html.UnescapeString(htmlTag.ReplaceAllString(page, " "))), " ")
}

func TestDocsPage(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	doc := app.do(t, "GET", "/openapi.json", nil, nil)
	if doc.expect(t, 200, string(openAPIDocument())); doc.header.Get("Content-Type") != "application/json" {
		t.Errorf("/openapi.json: Content-Type %q", doc.header.Get("Content-Type"))
	}
	res := app.do(t, "GET", "/docs", nil, nil)
	if res.status != 200 || res.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /docs = %d %s %.200s", res.status, res.header.Get("Content-Type"), res.body)
	}
	page, lower := res.body, strings.ToLower(res.body)
	if bad := regexp.MustCompile(`<script|javascript:| src=|href="http|<link|<iframe|@import|url\(|<[^>]*\son[a-z]+=`).FindString(lower); bad != "" {
		t.Errorf("the page contains %q: it must run nothing and load nothing", bad)
	}
	// The policy allows exactly the page's one style element, by its hash.
	styles := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindAllStringSubmatch(page, -1)
	if len(styles) != 1 || strings.Count(lower, "<style") != 1 {
		t.Fatalf("the page has %d style elements, want 1", strings.Count(lower, "<style"))
	}
	sum := sha256.Sum256([]byte(styles[0][1]))
	hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	csp := res.header.Get("Content-Security-Policy")
	if !strings.HasPrefix(csp, "default-src 'none';") || !strings.Contains(csp, "style-src "+hash+";") || strings.Contains(csp, "unsafe") {
		t.Errorf("Content-Security-Policy %q, want default-src 'none' and style-src %s", csp, hash)
	}
	checkSections(t, page)
}

// checkSections checks that each operation's section shows its method, path,
// summary, description, whether it needs a token, its parameters, form fields
// and responses, and each example (its own or shared) as a curl command.
func checkSections(t *testing.T, page string) {
	t.Helper()
	sections := make(map[string]string)
	for _, m := range regexp.MustCompile(`(?s)<section id="([^"]*)">(.*?)</section>`).FindAllStringSubmatch(page, -1) {
		sections[m[1]] = visibleText(m[2])
	}
	doc, want := mustParseOpenAPI(t), make(map[string][]string)
	yes := map[bool]string{true: "yes", false: "no"}
	for _, op := range operations(doc) {
		needs := map[bool]string{true: "A bearer token: Authorization: Bearer $TOKEN", false: "No token."}[len(op.Security) > 0]
		w := []string{strings.ToLower(op.method) + " " + op.path + " " + op.Summary, op.Description, needs}
		for _, p := range op.Parameters {
			w = append(w, p.Name+" "+p.In+" "+p.Schema.Type+" "+yes[p.Required])
		}
		for _, c := range op.RequestBody.Content { // the page shows the first; all are alike
			form := doc.Components.Schemas[strings.TrimPrefix(c.Schema.Ref, "#/components/schemas/")]
			for name, p := range form.Properties {
				w = append(w, name+" "+p.Type+" "+yes[slices.Contains(form.Required, name)])
			}
		}
		for status, r := range op.Responses {
			w = append(w, fmt.Sprintf("%d %s %s", status, http.StatusText(status), r.Description))
		}
		want[op.OperationID] = w
	}
	for _, ex := range documentedExamples(doc) {
		target := "http://127.0.0.1:8000" + exampleURL(ex.op.path, ex.op.apiOperation, ex.Request)
		body, _ := compactJSON(ex.Value)
		want[ex.op.OperationID] = append(want[ex.op.OperationID], "$ "+curlCommand("-si", ex.op.method, target, ex.Request),
			fmt.Sprintf("HTTP/1.1 %d %s Content-Type: %s", ex.status, http.StatusText(ex.status), ex.mediaType), body)
		if slices.Contains(ex.Varies, "access_token") {
			want[ex.op.OperationID] = append(want[ex.op.OperationID], "TOKEN=$("+curlCommand("-s", ex.op.method, target, ex.Request)+" | sed ")
		}
	}
	want["getMovie"] = append(want["getMovie"], // the shared 401, built from this operation's path and parameters
		"$ curl -si -X GET -H 'Authorization: Bearer not.a.token' 'http://127.0.0.1:8000/movies/?movie_id=1'")
	for id, lines := range want {
		text, ok := sections[id]
		if !ok {
			t.Errorf("docs.html: the page has no section %q: an operation shows under its first tag, which must be in openapi.json's tags", id)
			continue
		}
		for _, w := range lines {
			if !strings.Contains(text, strings.Join(strings.Fields(w), " ")) {
				t.Errorf("docs.html: section %s does not show %q", id, w)
			}
		}
	}
}

func TestDocsEscapesTheDocument(t *testing.T) {
	t.Parallel()
	const evil = `<script>alert(1)</script>`
	doc := fmt.Sprintf(`{"info": {"title": %[1]q, "version": %[1]q, "summary": %[1]q, "description": %[1]q},
	  "servers": [{"url": %[1]q}], "tags": [{"name": %[1]q, "description": %[1]q}],
	  "paths": {"/x<script>/{p}": {"get": {"operationId": "x\"><script>", "tags": [%[1]q], "summary": %[1]q, "description": %[1]q,
	    "parameters": [{"name": %[1]q, "in": "query", "description": %[1]q, "schema": {"type": %[1]q}, "example": %[1]q},
	      {"name": "p", "in": "path", "schema": {"type": "string"}, "example": %[1]q}],
	    "requestBody": {"content": {%[1]q: {"schema": {"$ref": "#/components/schemas/E"}}}},
	    "responses": {"200": {"$ref": "#/components/responses/R"}}}}},
	  "components": {"schemas": {"E": {"properties": {%[1]q: {"type": %[1]q, "description": %[1]q}}, "required": [%[1]q]}},
	  "responses": {"R": {"description": %[1]q, "headers": {%[1]q: {"description": %[1]q}},
	    "content": {%[1]q: {"examples": {"e": {"summary": %[1]q, "value": {"e": %[1]q}, "x-varies": ["access_token"],
	      "x-request": {"query": "q=</pre><script>", "authorization": "Bearer $TOKEN\"<script>", "form": [%[1]q],
	        "path": {"p": %[1]q}}, "x-response-headers": {"X-Evil": %[1]q}}}}}}}}}`, evil)
	page, _ := renderDocs([]byte(doc))
	if n := strings.Count(string(page), "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 33 || strings.Contains(strings.ToLower(string(page)), "<script") {
		t.Errorf("the page shows the text escaped %d times, want 33 (every place it appears), and no script tag:\n%s", n, page)
	}
}

func TestDocsCurlCommands(t *testing.T) {
	t.Parallel()
	op := &apiOperation{Parameters: []*apiParameter{{Name: "id", In: "path", Example: []byte(`"a b"`)},
		{Name: "q", In: "query", Example: []byte(`"x&y"`)}, {Name: "n", In: "query", Example: []byte(`9.0`)}}}
	none := ""
	for _, c := range []struct {
		x    *exampleRequest
		want string
	}{
		{&exampleRequest{Path: map[string]string{"id": "999"}, Authorization: "Bearer $TOKEN\"`\\"},
			"curl -s -X GET -H \"Authorization: Bearer $TOKEN\\\"\\`\\\\\" '/d/999?q=x%26y&n=9.0'"},
		{&exampleRequest{Query: &none, Form: []string{"username=ada@example.com", "password=it's a&b"}},
			`curl -s -X POST '/d/a%20b' --data-urlencode 'username=ada@example.com' --data-urlencode 'password=it'\''s a&b'`},
		{&exampleRequest{Query: &none, Form: []string{}}, `curl -s -X POST '/d/a%20b' -d ''`},
		{&exampleRequest{Query: &none, ContentType: "multipart/form-data", Form: []string{"username=a"}, PadBytes: 10},
			`curl -s -X POST -H 'Content-Type: multipart/form-data' '/d/a%20b' --data-urlencode 'username=a' --data-urlencode "pad=$(head -c 10 /dev/zero | tr '\0' x)"`},
	} {
		method := map[bool]string{true: "post", false: "get"}[c.x.Form != nil] // a form goes by POST
		if got := curlCommand("-s", method, exampleURL("/d/{id}", op, c.x), c.x); got != c.want {
			t.Errorf("curlCommand(%s %+v)\n got %s\nwant %s", method, c.x, got, c.want)
		}
	}
}
