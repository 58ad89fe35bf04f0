package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"html"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The drift tests: the routes in openapi.json are the routes newHandler
// registers, every documented example is what the running service really
// answers, and the document is well formed.

// notDocumented are the routes newHandler registers that the document
// leaves out on purpose: like FastAPI's, it does not describe itself or
// its own rendering.
var notDocumented = []string{"GET /openapi.json", "GET /docs"}

func mustParseOpenAPI(t *testing.T) *openAPIDoc {
	t.Helper()
	doc, err := parseOpenAPI(openapiJSON)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestOpenAPIRoutesMatchServer(t *testing.T) {
	t.Parallel()
	documented := documentedRoutes(mustParseOpenAPI(t))
	served, problems := servedRoutes(registeredPatterns(t))
	for _, p := range problems {
		t.Error(p)
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("openapi.json documents %s, which newHandler does not register", r)
		}
	}
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("newHandler registers %s, which openapi.json does not document", r)
		}
	}

	// The real server routes each documented operation: none of them gets
	// the fallback's 404 or 405, or a redirect to another form of the path.
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	for _, r := range documented {
		method, path, _ := strings.Cut(r, " ")
		res := app.do(t, method, path, nil, nil)
		if res.status == 405 || res.status == 307 || res.body == `{"detail":"Not Found"}` {
			t.Errorf("%s is documented but not routed: %d %s", r, res.status, res.body)
		}
	}
}

// documentedRoutes lists the document's operations as "METHOD /path".
func documentedRoutes(doc *openAPIDoc) []string {
	var routes []string
	for path, item := range doc.Paths {
		for method := range item {
			routes = append(routes, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(routes)
	return routes
}

// registeredPatterns reads newHandler in server.go and returns the
// patterns it passes to mux.Handle or mux.HandleFunc. Reading the source
// sees every route, including one no request would think of trying.
func registeredPatterns(t *testing.T) []string {
	t.Helper()
	fset := gotoken.NewFileSet()
	f, err := parser.ParseFile(fset, "server.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, decl := range f.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "newHandler" || fn.Body == nil {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc" {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != gotoken.STRING {
				t.Errorf("%s: a route pattern that is not a string literal; the drift test cannot read it", fset.Position(call.Pos()))
				return true
			}
			p, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			patterns = append(patterns, p)
			return true
		})
	}
	if len(patterns) == 0 {
		t.Fatal("found no mux.Handle calls in newHandler in server.go")
	}
	return patterns
}

// servedRoutes turns ServeMux patterns into the document's terms:
// "/movies/{$}" (exactly /movies/) is the path "/movies/", a pattern
// beside its trailing-slash form ("GET /movies" beside "GET /movies/") is
// an alias of it, the method-less "/" is the JSON 404/405 fallback, and
// HEAD, which follows GET, is not listed. Wildcards such as {id} are
// written alike in both.
func servedRoutes(patterns []string) (routes, problems []string) {
	set := make(map[string]bool)
	for _, p := range patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			if p != "/" {
				problems = append(problems, fmt.Sprintf("pattern %q has no method", p))
			}
			continue
		}
		set[method+" "+strings.TrimSuffix(path, "{$}")] = true
	}
	for r := range set {
		if !strings.HasSuffix(r, "/") && set[r+"/"] {
			delete(set, r)
		}
	}
	for _, r := range notDocumented {
		if !set[r] {
			problems = append(problems, fmt.Sprintf("%s is no longer registered: update notDocumented", r))
		}
		delete(set, r)
	}
	for r := range set {
		routes = append(routes, r)
	}
	slices.Sort(routes)
	return routes, problems
}

func TestOpenAPIServedRoutesMapping(t *testing.T) {
	t.Parallel()
	got, problems := servedRoutes([]string{"GET /a", "GET /a/{$}", "POST /b", "GET /c/{id}", "/",
		"GET /openapi.json", "GET /docs", "/x/"})
	want := []string{"GET /a/", "GET /c/{id}", "POST /b"}
	if !slices.Equal(got, want) {
		t.Errorf("routes = %q, want %q", got, want)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], `"/x/"`) {
		t.Errorf("problems = %q, want one about /x/", problems)
	}
}

// documentedExample is one example of the document with where it sits.
type documentedExample struct {
	method, path, status, name string
	mediaType                  string
	response                   *apiResponse
	schema                     *apiSchema
	*apiExample
}

func (e documentedExample) String() string {
	return fmt.Sprintf("%s %s %s %s", e.method, e.path, e.status, e.name)
}

// documentedExamples lists every response example, sorted by path,
// method, status, media type and name.
func documentedExamples(doc *openAPIDoc) []documentedExample {
	var all []documentedExample
	for _, path := range slices.Sorted(maps.Keys(doc.Paths)) {
		for _, method := range slices.Sorted(maps.Keys(doc.Paths[path])) {
			op := doc.Paths[path][method]
			for _, status := range slices.Sorted(maps.Keys(op.Responses)) {
				r := op.Responses[status]
				for _, mediaType := range slices.Sorted(maps.Keys(r.Content)) {
					c := r.Content[mediaType]
					for _, name := range slices.Sorted(maps.Keys(c.Examples)) {
						all = append(all, documentedExample{strings.ToUpper(method), path, status, name,
							mediaType, r, c.Schema, c.Examples[name]})
					}
				}
			}
		}
	}
	return all
}

func TestOpenAPIExamplesAreRealResponses(t *testing.T) {
	t.Parallel()
	doc := mustParseOpenAPI(t)
	dsn := newTestDatabase(t)
	seedMovies(t, openTestDB(t, dsn))
	env := testEnv(t, dsn)
	// The user the examples log in as.
	createUser(t, env, "Ada", "ada@example.com", "correct horse")
	app := startApp(t, env)
	now := time.Now()
	vars := strings.NewReplacer(
		"$TOKEN", app.token(t, "ada@example.com", "correct horse"),
		"$EXPIRED_TOKEN", signToken([]byte(testTokenKey), tokenClaims{Sub: "ada@example.com", Name: "Ada",
			IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}),
	)

	var whileDown []documentedExample
	n := 0
	for _, ex := range documentedExamples(doc) {
		if ex.Request == nil {
			t.Errorf("%s: no x-request to replay", ex)
			continue
		}
		n++
		if ex.Request.Database == "down" {
			whileDown = append(whileDown, ex)
			continue
		}
		replayExample(t, app, doc, vars, ex)
	}
	if len(whileDown) > 0 {
		takeDatabaseDown(t, dsn)
		for _, ex := range whileDown {
			replayExample(t, app, doc, vars, ex)
		}
	}
	if n == 0 {
		t.Error("replayed no example")
	}
}

// replayExample sends an example's request to the server and checks that
// the answer is the example: status, Content-Type, body and headers, and
// that the body and headers fit their schemas.
func replayExample(t *testing.T, app *testApp, doc *openAPIDoc, vars *strings.Replacer, ex documentedExample) {
	t.Helper()
	var res response
	for range max(1, ex.Request.Repeat) {
		target, header, body := exampleHTTPRequest(t, ex, vars)
		res = app.do(t, ex.method, target, header, body)
	}
	if strconv.Itoa(res.status) != ex.status {
		t.Errorf("%s: got %d %s", ex, res.status, res.body)
		return
	}
	if ct := res.header.Get("Content-Type"); ct != ex.mediaType {
		t.Errorf("%s: Content-Type %q, want %q", ex, ct, ex.mediaType)
	}
	if err := sameBody(res.body, ex.Value, ex.Varies); err != nil {
		t.Errorf("%s: %v", ex, err)
	}
	v, err := decodeNumbers(res.body)
	if err != nil {
		t.Errorf("%s: %v", ex, err)
	}
	for _, p := range checkSchema(doc, ex.schema, v, "body") {
		t.Errorf("%s: %s", ex, p)
	}
	for name, h := range ex.response.Headers {
		got := res.header.Get(name)
		if got == "" {
			if h.Required {
				t.Errorf("%s: no %s header", ex, name)
			}
			continue
		}
		for _, p := range checkHeaderValue(doc, h.Schema, got, name) {
			t.Errorf("%s: %s", ex, p)
		}
	}
	for name, want := range ex.Headers {
		if got := res.header.Get(name); got != want {
			t.Errorf("%s: %s = %q, want %q", ex, name, got, want)
		}
	}
}

// exampleHTTPRequest builds what x-request describes.
func exampleHTTPRequest(t *testing.T, ex documentedExample, vars *strings.Replacer) (target string, header http.Header, body io.Reader) {
	t.Helper()
	x := ex.Request
	target = ex.path
	if x.Query != "" {
		target += "?" + x.Query
	}
	header = http.Header{}
	if x.Authorization != "" {
		auth := vars.Replace(x.Authorization)
		if strings.Contains(auth, "$") {
			t.Fatalf("%s: unknown variable in %q", ex, x.Authorization)
		}
		header.Set("Authorization", auth)
	}
	if x.Form == nil && x.PadBytes == 0 {
		return target, header, nil
	}
	var fields []string
	for _, f := range x.Form {
		name, value, _ := strings.Cut(f, "=")
		fields = append(fields, url.QueryEscape(name)+"="+url.QueryEscape(value))
	}
	if x.PadBytes > 0 {
		fields = append(fields, "pad="+strings.Repeat("x", x.PadBytes))
	}
	contentType := "application/x-www-form-urlencoded"
	if x.ContentType != "" {
		contentType = x.ContentType
	}
	header.Set("Content-Type", contentType)
	return target, header, strings.NewReader(strings.Join(fields, "&"))
}

// sameBody reports whether body is the example's value, byte for byte as
// the service writes it (compact, members in order, 9.0 not 9), except
// for the members that vary, which need only be there.
func sameBody(body string, value json.RawMessage, varies []string) error {
	want, err := compactJSON(value)
	if err != nil {
		return err
	}
	if len(varies) == 0 {
		if body != want {
			return fmt.Errorf("body\n  %s\nwant\n  %s", body, want)
		}
		return nil
	}
	var got, exp map[string]any
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		return fmt.Errorf("body %s: %v", body, err)
	}
	if err := json.Unmarshal(value, &exp); err != nil {
		return err
	}
	for _, name := range varies {
		if _, ok := got[name]; !ok {
			return fmt.Errorf("body %s has no %q", body, name)
		}
		delete(got, name)
		delete(exp, name)
	}
	if !reflect.DeepEqual(got, exp) {
		return fmt.Errorf("body\n  %s\nwant, apart from %q,\n  %s", body, varies, want)
	}
	return nil
}

// decodeNumbers decodes one JSON value, keeping numbers as written.
func decodeNumbers(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %q: %v", s, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value: %q", s)
	}
	return v, nil
}

// takeDatabaseDown makes the database at dsn refuse connections and ends
// those open, as when PostgreSQL goes away under the server.
func takeDatabaseDown(t *testing.T, dsn string) {
	t.Helper()
	var name string
	db := openTestDB(t, dsn)
	if err := db.QueryRow("SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	db.Close()
	admin := testServer.admin
	if _, err := admin.Exec("ALTER DATABASE " + quoteIdent(name) + " WITH ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec("ALTER DATABASE " + quoteIdent(name) + " WITH ALLOW_CONNECTIONS true") })
	const backends = "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
	if _, err := admin.Exec("SELECT pg_terminate_backend(pid) "+backends, name); err != nil {
		t.Fatal(err)
	}
	// pg_terminate_backend only signals; wait until they are gone.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var n int
		if err := admin.QueryRow("SELECT count(*) "+backends, name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to %s outlived pg_terminate_backend", n, name)
		}
	}
}

// checkSchema validates v, decoded with numbers kept as json.Number,
// against s: the subset of JSON Schema the document uses ($ref, type,
// properties, required, additionalProperties: false, items, enum,
// pattern). TestOpenAPIDocumentIsValid refuses any other keyword, so that
// none is silently ignored here.
func checkSchema(doc *openAPIDoc, s *apiSchema, v any, at string) []string {
	if s == nil {
		return []string{at + ": no schema"}
	}
	if s.Ref != "" {
		name, ok := strings.CutPrefix(s.Ref, "#/components/schemas/")
		target := doc.Components.Schemas[name]
		if !ok || target == nil {
			return []string{fmt.Sprintf("%s: $ref %s names no schema", at, s.Ref)}
		}
		return checkSchema(doc, target, v, at)
	}
	if s.Type != "" && !hasType(v, s.Type) {
		return []string{fmt.Sprintf("%s: %s is not of type %s", at, jsonText(v), s.Type)}
	}
	var problems []string
	if s.Enum != nil && !slices.ContainsFunc(s.Enum, func(e any) bool { return jsonText(e) == jsonText(v) }) {
		problems = append(problems, fmt.Sprintf("%s: %s is not one of %s", at, jsonText(v), jsonText(s.Enum)))
	}
	if str, ok := v.(string); ok && s.Pattern != "" {
		if re, err := regexp.Compile(s.Pattern); err != nil || !re.MatchString(str) {
			problems = append(problems, fmt.Sprintf("%s: %q does not match %s", at, str, s.Pattern))
		}
	}
	switch v := v.(type) {
	case map[string]any:
		problems = append(problems, checkObject(doc, s, v, at)...)
	case []any:
		if s.Items != nil {
			for i, item := range v {
				problems = append(problems, checkSchema(doc, s.Items, item, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return problems
}

func checkObject(doc *openAPIDoc, s *apiSchema, v map[string]any, at string) []string {
	var problems []string
	for _, name := range s.Required {
		if _, ok := v[name]; !ok {
			problems = append(problems, fmt.Sprintf("%s: no %q", at, name))
		}
	}
	names := make([]string, 0, len(v))
	for name := range v {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		prop, ok := s.Properties[name]
		if !ok {
			if s.AdditionalProperties != nil && !*s.AdditionalProperties {
				problems = append(problems, fmt.Sprintf("%s: %q is not in the schema", at, name))
			}
			continue
		}
		problems = append(problems, checkSchema(doc, prop, v[name], at+"."+name)...)
	}
	return problems
}

// hasType reports whether v is of JSON Schema type typ. An integer must
// be written without a fraction: stricter than JSON Schema, which takes
// 1.0, but the service never writes one.
func hasType(v any, typ string) bool {
	switch typ {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	case "number":
		_, ok := v.(json.Number)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := strconv.ParseInt(n.String(), 10, 64)
		return err == nil
	}
	return false
}

// checkHeaderValue validates a header's value against its schema: an integer
// or number schema reads the value as a JSON number, any other as a
// string.
func checkHeaderValue(doc *openAPIDoc, s *apiSchema, value, name string) []string {
	var v any = value
	if s != nil && (s.Type == "integer" || s.Type == "number") {
		v = json.Number(value)
		if _, err := strconv.ParseFloat(value, 64); err != nil {
			return []string{fmt.Sprintf("header %s: %q is not a number", name, value)}
		}
	}
	return checkSchema(doc, s, v, "header "+name)
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestOpenAPISchemaChecker(t *testing.T) {
	t.Parallel()
	doc := mustParseOpenAPI(t)
	movie := &apiSchema{Ref: "#/components/schemas/Movie"}
	list := &apiSchema{Type: "array", Items: movie}
	token := &apiSchema{Ref: "#/components/schemas/Token"}
	cases := []struct {
		schema *apiSchema
		body   string
		fails  bool
	}{
		{movie, shawshank, false},
		{list, "[" + shawshank + "," + darkKnight + "]", false},
		{list, "[]", false},
		{movie, `{"movie_id":1,"title":"x","released":1994}`, true},                           // no rating
		{movie, `{"movie_id":"1","title":"x","released":1994,"rating":9.2}`, true},            // a string id
		{movie, `{"movie_id":1.5,"title":"x","released":1994,"rating":9.2}`, true},            // not an integer
		{movie, `{"movie_id":1,"title":"x","released":1994,"rating":9.2,"extra":true}`, true}, // not in the schema
		{list, shawshank, true},
		{list, `[{"movie_id":1}]`, true},
		{token, `{"access_token":"a.b.c","token_type":"bearer"}`, false},
		{token, `{"access_token":"a.b","token_type":"bearer"}`, true},
		{token, `{"access_token":"a.b.c","token_type":"mac"}`, true},
		{&apiSchema{Ref: "#/components/schemas/Nothing"}, `{}`, true},
		{&apiSchema{Ref: "#/components/responses/Movie"}, shawshank, true},
	}
	for _, c := range cases {
		v, err := decodeNumbers(c.body)
		if err != nil {
			t.Fatal(err)
		}
		if problems := checkSchema(doc, c.schema, v, "body"); (len(problems) > 0) != c.fails {
			t.Errorf("%s: problems %q, want failure %v", c.body, problems, c.fails)
		}
	}
}

func TestOpenAPIParseRefusesDanglingRefs(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		`{"paths": {"/x": {"get": {"responses": {"401": {"$ref": "#/components/responses/Nothing"}}}}}}`,
		`{"paths": {"/x": {"get": {"responses": {"401": {"$ref": "#/components/schemas/Unauthorized"}}}}},
		  "components": {"responses": {"Unauthorized": {"description": "x"}}}}`,
	} {
		if _, err := parseOpenAPI([]byte(doc)); err == nil {
			t.Errorf("parseOpenAPI accepted %s", doc)
		}
	}
}

// schemaKeywords are the keywords checkSchema checks, and annotations it
// may ignore.
var schemaKeywords = map[string]bool{
	"$ref": true, "type": true, "properties": true, "required": true, "additionalProperties": true,
	"items": true, "enum": true, "pattern": true,
	"description": true, "title": true, "format": true, "examples": true,
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	t.Parallel()
	var raw map[string]any
	if err := json.Unmarshal(openapiJSON, &raw); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if v, _ := raw["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("openapi = %q, want 3.1.x", v)
	}
	info, _ := raw["info"].(map[string]any)
	for _, field := range []string{"title", "version"} {
		if s, _ := info[field].(string); s == "" {
			t.Errorf("info.%s is missing", field)
		}
	}
	if paths, _ := raw["paths"].(map[string]any); len(paths) == 0 {
		t.Error("no paths")
	}
	refs := make(map[string]bool)
	walkJSON(raw, "#", func(at, key string, v any) {
		switch key {
		case "$ref":
			ref, _ := v.(string)
			refs[ref] = true
			if !strings.HasPrefix(ref, "#/") || jsonPointer(raw, ref) == nil {
				t.Errorf("%s: $ref %v resolves to nothing", at, v)
			}
		case "schema":
			checkKeywords(t, at, v)
		case "x-request":
			checkExampleRequest(t, at, v)
		}
	})
	components, _ := raw["components"].(map[string]any)
	schemas, _ := components["schemas"].(map[string]any)
	for name, s := range schemas {
		checkKeywords(t, "#/components/schemas/"+name, s)
	}
	// Linters want every component used (Spectral's oas3-unused-component,
	// Redocly's no-unused-components); security schemes are checked below.
	for _, kind := range []string{"schemas", "responses", "headers"} {
		m, _ := components[kind].(map[string]any)
		for name := range m {
			if ref := "#/components/" + kind + "/" + name; !refs[ref] {
				t.Errorf("%s is never used", ref)
			}
		}
	}

	doc := mustParseOpenAPI(t)
	checkInfo(t, doc, raw)
	checkOperations(t, doc)
	checkSecurity(t, doc)
	for _, ex := range documentedExamples(doc) {
		v, err := decodeNumbers(string(ex.Value))
		if err != nil {
			t.Errorf("%s: %v", ex, err)
			continue
		}
		for _, p := range checkSchema(doc, ex.schema, v, "example") {
			t.Errorf("%s: %s", ex, p)
		}
		for name := range ex.Headers {
			if _, ok := ex.response.Headers[name]; !ok {
				t.Errorf("%s: x-response-headers names %s, which the response does not document", ex, name)
			}
		}
	}
}

// checkInfo checks what linters want beside the operations: the server
// (the default MYAPI_ADDR, which the page's commands use) and a license
// (the repository's LICENSE).
func checkInfo(t *testing.T, doc *openAPIDoc, raw map[string]any) {
	t.Helper()
	cfg, err := loadConfig(mapEnv(map[string]string{"MYAPI_DOTENV": "testdata/no.env"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Servers) == 0 || doc.Servers[0].URL != "http://"+cfg.Addr {
		t.Errorf("servers = %+v, want first http://%s, the default address", doc.Servers, cfg.Addr)
	}
	id, _ := jsonPointer(raw, "#/info/license/identifier").(string)
	text, err := os.ReadFile("LICENSE")
	if err != nil || id == "" || !strings.HasPrefix(string(text), id+" License\n") {
		t.Errorf("info.license.identifier %q does not name the LICENSE file (%v)", id, err)
	}
}

// walkJSON calls f for every member of every object under v.
func walkJSON(v any, at string, f func(at, key string, v any)) {
	switch v := v.(type) {
	case map[string]any:
		for k, member := range v {
			f(at, k, member)
			walkJSON(member, at+"/"+k, f)
		}
	case []any:
		for i, item := range v {
			walkJSON(item, at+"/"+strconv.Itoa(i), f)
		}
	}
}

// jsonPointer resolves a "#/a/b" reference (RFC 6901) in doc, or is nil.
func jsonPointer(doc any, ref string) any {
	v := doc
	for _, tok := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")]
	}
	return v
}

// checkKeywords fails on a schema keyword checkSchema does not know.
func checkKeywords(t *testing.T, at string, schema any) {
	t.Helper()
	s, ok := schema.(map[string]any)
	if !ok {
		t.Errorf("%s: a schema that is not an object", at)
		return
	}
	for k, v := range s {
		switch {
		case !schemaKeywords[k]:
			t.Errorf("%s: schema keyword %q is not one the drift test checks", at, k)
		case k == "properties":
			props, _ := v.(map[string]any)
			for name, p := range props {
				checkKeywords(t, at+"/properties/"+name, p)
			}
		case k == "items":
			checkKeywords(t, at+"/items", v)
		case k == "additionalProperties":
			if _, ok := v.(bool); !ok {
				t.Errorf("%s: additionalProperties must be true or false", at)
			}
		}
	}
}

// exampleRequestFields are the members of x-request that the replay and
// the page understand: a misspelt one would otherwise be ignored.
var exampleRequestFields = map[string]bool{
	"query": true, "authorization": true, "form": true, "contentType": true, "padBytes": true, "repeat": true, "database": true,
}

func checkExampleRequest(t *testing.T, at string, v any) {
	t.Helper()
	x, ok := v.(map[string]any)
	if !ok {
		t.Errorf("%s: x-request is not an object", at)
		return
	}
	for k := range x {
		if !exampleRequestFields[k] {
			t.Errorf("%s: x-request has an unknown member %q", at, k)
		}
	}
	if db, ok := x["database"]; ok && db != "down" {
		t.Errorf(`%s: x-request database is %v; the only state is "down"`, at, db)
	}
}

// checkOperations checks what the page, the replay and the linters rely
// on: methods, unique ids, summaries, declared and described tags, and a
// described, replayable example for every response.
func checkOperations(t *testing.T, doc *openAPIDoc) {
	t.Helper()
	ids := make(map[string]bool)
	tags := make(map[string]bool)
	for _, tag := range doc.Tags {
		if tag.Name == "" || tag.Description == "" || tags[tag.Name] {
			t.Errorf("tag %q needs a unique name and a description", tag.Name)
		}
		tags[tag.Name] = false // not yet used
	}
	for path, item := range doc.Paths {
		if !strings.HasPrefix(path, "/") {
			t.Errorf("path %q does not start with /", path)
		}
		for method, op := range item {
			where := strings.ToUpper(method) + " " + path
			if !slices.Contains(httpMethods, method) {
				t.Errorf("%s: %q is not an HTTP method", where, method)
			}
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s: operationId %q is missing or not unique", where, op.OperationID)
			}
			ids[op.OperationID] = true
			if op.Summary == "" || len(op.Responses) == 0 {
				t.Errorf("%s: no summary or no responses", where)
			}
			// The page lists an operation under its first tag.
			tag := ""
			if len(op.Tags) > 0 {
				tag = op.Tags[0]
			}
			if _, ok := tags[tag]; !ok {
				t.Errorf("%s: first tag %q is not in the document's tags", where, tag)
			}
			tags[tag] = true
			for _, prm := range op.Parameters {
				if prm.Name == "" || prm.In != "query" && prm.In != "header" && prm.In != "path" && prm.In != "cookie" || prm.Schema == nil {
					t.Errorf("%s: parameter %q needs a name, a valid in and a schema", where, prm.Name)
				}
			}
			if rb := op.RequestBody; rb != nil && len(rb.Content) == 0 {
				t.Errorf("%s: a request body without content", where)
			}
			// Whatever takes input answers bad input with 422.
			if (len(op.Parameters) > 0 || op.RequestBody != nil) && op.Responses["422"] == nil {
				t.Errorf("%s: takes input but documents no 422", where)
			}
			checkResponses(t, where, op.Responses)
		}
	}
	for name, used := range tags {
		if !used {
			t.Errorf("tag %q names no operation", name)
		}
	}
}

func checkResponses(t *testing.T, where string, responses map[string]*apiResponse) {
	t.Helper()
	for status, r := range responses {
		if n, err := strconv.Atoi(status); err != nil || n < 100 || n > 599 {
			t.Errorf("%s: response %q is not a status code", where, status)
		}
		if r.Description == "" {
			t.Errorf("%s %s: no description", where, status)
		}
		if len(r.Content) == 0 {
			t.Errorf("%s %s: no content", where, status)
		}
		for mediaType, c := range r.Content {
			if c.Schema == nil || len(c.Examples) == 0 {
				t.Errorf("%s %s %s: needs a schema and an example", where, status, mediaType)
			}
		}
	}
}

// checkSecurity checks that every operation states its security (linters
// want it stated; [] is public), that only the movies routes need a
// token, that those document their 401, and that the schemes they name
// exist, with the password flow's tokenUrl a documented POST.
func checkSecurity(t *testing.T, doc *openAPIDoc) {
	t.Helper()
	var schemes struct {
		Components struct {
			SecuritySchemes map[string]struct {
				Flows struct{ Password *struct{ TokenURL string } }
			}
		}
	}
	if err := json.Unmarshal(openapiJSON, &schemes); err != nil {
		t.Fatal(err)
	}
	routes := documentedRoutes(doc)
	used := make(map[string]bool)
	for name, s := range schemes.Components.SecuritySchemes {
		used[name] = false
		if pw := s.Flows.Password; pw == nil || !slices.Contains(routes, "POST "+pw.TokenURL) {
			t.Errorf("security scheme %s: no password flow whose tokenUrl is a documented POST", name)
		}
	}
	for path, item := range doc.Paths {
		for method, op := range item {
			where := strings.ToUpper(method) + " " + path
			// Decoding keeps an absent member nil, and makes [] empty.
			if op.Security == nil {
				t.Errorf("%s: no security; a public operation says []", where)
			}
			for _, req := range op.Security {
				for name := range req {
					if _, ok := used[name]; !ok {
						t.Errorf("%s: security scheme %q is not defined", where, name)
					}
					used[name] = true
				}
			}
			if needs := len(op.Security) > 0; needs != strings.HasPrefix(path, "/movies") {
				t.Errorf("%s: needs a token: %v; only the movies routes do", where, needs)
			} else if needs && op.Responses["401"] == nil {
				t.Errorf("%s: needs a token but documents no 401", where)
			}
		}
	}
	for name, u := range used {
		if !u {
			t.Errorf("security scheme %s is never used", name)
		}
	}
	if len(used) == 0 {
		t.Error("no security scheme")
	}
}

func TestOpenAPIServedAsEmbedded(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	res := app.do(t, "GET", "/openapi.json", nil, nil)
	res.expect(t, 200, string(openapiJSON))
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if res := app.do(t, "HEAD", "/openapi.json", nil, nil); res.status != 200 || res.body != "" {
		t.Errorf("HEAD = %d %q", res.status, res.body)
	}
}

var htmlTag = regexp.MustCompile(`<[^>]*>`)

// visibleText is the page as a reader sees it: no tags, entities decoded,
// white space collapsed.
func visibleText(page string) string {
	return strings.Join(strings.Fields(html.UnescapeString(htmlTag.ReplaceAllString(page, " "))), " ")
}

var (
	styleElement = regexp.MustCompile(`(?s)<style>(.*?)</style>`)
	pageSection  = regexp.MustCompile(`(?s)<section id="([^"]*)">(.*?)</section>`)
)

func TestDocsPage(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	res := app.do(t, "GET", "/docs", nil, nil)
	if res.status != 200 {
		t.Fatalf("GET /docs = %d %s", res.status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	page := res.body
	lower := strings.ToLower(page)
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
	csp := res.header.Get("Content-Security-Policy")
	hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	if !strings.HasPrefix(csp, "default-src 'none';") || !strings.Contains(csp, "style-src "+hash) || strings.Contains(csp, "unsafe") {
		t.Errorf("Content-Security-Policy %q, want default-src 'none' and style-src %s", csp, hash)
	}

	// Each operation's section shows its method, path and summary, its
	// description, whether it needs a token, its parameters and form
	// fields, and each example as a curl command with what it prints.
	sections := make(map[string]string)
	for _, m := range pageSection.FindAllStringSubmatch(page, -1) {
		sections[m[1]] = visibleText(m[2])
	}
	doc := mustParseOpenAPI(t)
	const base = "http://127.0.0.1:8000"
	for path, item := range doc.Paths {
		for method, op := range item {
			text, ok := sections[op.OperationID]
			if !ok {
				t.Errorf("the page has no section %q for %s %s", op.OperationID, method, path)
				continue
			}
			want := []string{strings.ToUpper(method) + " " + path + " " + op.Summary, strings.Join(strings.Fields(op.Description), " ")}
			if len(op.Security) > 0 {
				want = append(want, "A bearer token: Authorization: Bearer $TOKEN")
			} else {
				want = append(want, "No token.")
			}
			for _, p := range op.Parameters {
				want = append(want, p.Name+" "+p.In)
			}
			if op.RequestBody != nil {
				for _, c := range op.RequestBody.Content {
					form := doc.Components.Schemas[strings.TrimPrefix(c.Schema.Ref, "#/components/schemas/")]
					for name, p := range form.Properties {
						required := map[bool]string{true: "yes", false: "no"}[slices.Contains(form.Required, name)]
						want = append(want, name+" "+p.Type+" "+required)
					}
				}
			}
			for _, ex := range documentedExamples(doc) {
				if ex.method == strings.ToUpper(method) && ex.path == path {
					status, _ := strconv.Atoi(ex.status)
					body, _ := compactJSON(ex.Value)
					want = append(want, "$ "+curlCommand("-si", ex.method, base+path, ex.Request),
						fmt.Sprintf("HTTP/1.1 %d %s Content-Type: %s", status, http.StatusText(status), ex.mediaType), body)
				}
			}
			for _, w := range want {
				if !strings.Contains(text, strings.Join(strings.Fields(w), " ")) {
					t.Errorf("section %s does not show %q", op.OperationID, w)
				}
			}
		}
	}
	// The login's section shows how to keep a token in $TOKEN.
	login := doc.Paths["/token"]["post"].Responses["200"].Content["application/json"].Examples["logged-in"]
	if want := "TOKEN=$(" + curlCommand("-s", "POST", base+"/token", login.Request) + " | sed "; !strings.Contains(sections["login"], want) {
		t.Errorf("the login section does not show %q", want)
	}
	// The document's "Bearer <token>" is text, escaped, not a tag.
	if !strings.Contains(page, "Bearer &lt;token&gt;") || strings.Contains(page, "Bearer <token>") {
		t.Error(`"Bearer <token>" from the document is not escaped`)
	}
}

func TestDocsEscapesTheDocument(t *testing.T) {
	t.Parallel()
	const evil = `<script>alert(1)</script>`
	doc := fmt.Sprintf(`{"openapi": "3.1.0", "info": {"title": %[1]q, "version": %[1]q, "description": %[1]q},
	  "servers": [{"url": %[1]q}], "tags": [{"name": %[1]q, "description": %[1]q}],
	  "paths": {"/x<script>": {"get": {"operationId": "x\"><script>", "tags": [%[1]q], "summary": %[1]q, "description": %[1]q,
	    "parameters": [{"name": %[1]q, "in": "query", "description": %[1]q, "schema": {"type": "string"}, "example": %[1]q}],
	    "requestBody": {"content": {%[1]q: {"schema": {"$ref": "#/components/schemas/E"}}}},
	    "responses": {"200": {"description": %[1]q,
	      "headers": {"X-Evil": {"description": %[1]q, "schema": {"type": "string", "enum": [%[1]q]}}},
	      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/E"},
	        "examples": {"e": {"summary": %[1]q, "value": {"e": %[1]q}, "x-varies": ["access_token"],
	          "x-request": {"query": "q=</pre><script>", "authorization": "Bearer $TOKEN\"<script>", "form": [%[1]q]},
	          "x-response-headers": {"X-Evil": %[1]q}}}}}}}}}},
	  "components": {"schemas": {"E": {"type": "object", "description": %[1]q,
	    "properties": {"e": {"type": "string", "description": %[1]q, "pattern": %[1]q}}}}}}`, evil)
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
	const token, movies = "http://127.0.0.1:8000/token", "http://127.0.0.1:8000/movies/"
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
		{"GET", movies, &exampleRequest{Query: "movie_id=1", Authorization: "Bearer $TOKEN"},
			`curl -s -H "Authorization: Bearer $TOKEN" 'http://127.0.0.1:8000/movies/?movie_id=1'`},
		{"GET", movies, &exampleRequest{Authorization: "Bearer not.a.token"},
			`curl -s -H 'Authorization: Bearer not.a.token' http://127.0.0.1:8000/movies/`},
		{"GET", movies, &exampleRequest{Authorization: "Bearer $X\"`\\"},
			"curl -s -H \"Authorization: Bearer $X\\\"\\`\\\\\" http://127.0.0.1:8000/movies/"},
		{"GET", movies, nil, `curl -s http://127.0.0.1:8000/movies/`},
	}
	for _, c := range cases {
		if got := curlCommand("-s", c.method, c.target, c.x); got != c.want {
			t.Errorf("curlCommand(%s %s %+v)\n got %s\nwant %s", c.method, c.target, c.x, got, c.want)
		}
	}
}
