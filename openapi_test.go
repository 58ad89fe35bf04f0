package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The drift tests: the document merged from openapi/ documents the routes
// that routes (server.go) registers, each example is what the real server
// answers, byte for byte, each operation's security is what the server asks
// for, and the document is OpenAPI 3.1. Each failure says which file to
// change and how.

// notDocumented are the routes the document leaves out on purpose: like
// FastAPI's, it does not describe itself or its own rendering.
var notDocumented = []string{"GET /openapi.json", "GET /docs"}

func mustParseOpenAPI(t *testing.T) *openAPIDoc {
	t.Helper()
	doc, err := parseOpenAPI(openAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// operation is one operation of the document.
type operation struct {
	method, path string // "GET", "/movies/"
	*apiOperation
}

// String is the operation as routes names it; at, where it is written.
func (o operation) String() string { return o.method + " " + o.path }
func (o operation) at() string {
	return fmt.Sprintf("%s: paths[%q].%s", pathFile(o.path), o.path, strings.ToLower(o.method))
}

// fileOf names the file of openapi/ whose part of the document has what
// it looks for, or "openapi/*.json" when none has.
func fileOf(has func(part *openAPIDoc) bool) string {
	names, _ := fs.Glob(openapiFiles, "openapi/*.json")
	for _, name := range names {
		b, _ := openapiFiles.ReadFile(name)
		if part, err := parseOpenAPI(b); err == nil && has(part) {
			return name
		}
	}
	return "openapi/*.json"
}

// pathFile names the file that documents path: the one that has it, else the
// one its resource's operations belong in, named for its first segment.
func pathFile(path string) string {
	if f := fileOf(func(d *openAPIDoc) bool { return d.Paths[path] != nil }); f != "openapi/*.json" {
		return f
	}
	resource, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return "openapi/" + resource + ".json"
}

// operations lists the document's operations by path and method.
func operations(doc *openAPIDoc) []operation {
	var ops []operation
	for _, path := range slices.Sorted(maps.Keys(doc.Paths)) {
		for _, method := range slices.Sorted(maps.Keys(doc.Paths[path])) {
			ops = append(ops, operation{strings.ToUpper(method), path, doc.Paths[path][method]})
		}
	}
	return ops
}

// servedRoutes lists what routes (server.go) registers, in the document's
// terms: "/movies/{$}" is "/movies/", a pattern beside its trailing-slash
// form ("GET /movies" beside "GET /movies/{$}") is one operation, HEAD
// follows GET, and wildcards ({id}) are written alike.
func servedRoutes(t *testing.T) []string {
	t.Helper()
	set := make(map[string]bool)
	d := testDeps(slog.New(slog.DiscardHandler), openTestDB(t, newTestDatabase(t)))
	routes(d, func(pattern string, _ http.Handler) {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok || !strings.HasPrefix(path, "/") {
			t.Errorf(`server.go: route %q needs a method and no host, as in "GET /directors/{$}", for openapi/ to document it`, pattern)
			return
		}
		if strings.HasSuffix(path, "/") {
			t.Errorf(`server.go: route %q ends in "/", which ServeMux matches for every path under it: write %q to route the list alone`, pattern, pattern+"{$}")
		}
		set[method+" "+strings.TrimSuffix(path, "{$}")] = true
	})
	for r := range set {
		method, path, _ := strings.Cut(r, " ")
		if set[r+"/"] || method == "HEAD" && set["GET "+path] {
			delete(set, r)
		}
	}
	for _, r := range notDocumented {
		if !set[r] {
			t.Errorf("openapi_test.go: notDocumented lists %s, which server.go no longer routes: remove it", r)
		}
		delete(set, r)
	}
	return slices.Sorted(maps.Keys(set))
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	served := servedRoutes(t)
	var documented []string
	for _, op := range operations(mustParseOpenAPI(t)) {
		documented = append(documented, op.String())
		if !slices.Contains(served, op.String()) {
			t.Errorf(`%s is documented but server.go does not route it: remove it, or add its route to routes in server.go (ServeMux's "/x/{$}" is the document's "/x/")`, op.at())
		}
	}
	for _, r := range served {
		if !slices.Contains(documented, r) {
			method, path, _ := strings.Cut(r, " ")
			t.Errorf(`%s: %s is routed in server.go but not documented: add %q under paths[%q] with its responses and an example for each (README: Adding a new service)`,
				pathFile(path), r, strings.ToLower(method), path)
		}
	}
}

func TestOpenAPISecurityIsWhatTheServerAsks(t *testing.T) {
	t.Parallel()
	app := startApp(t, testEnv(t, newTestDatabase(t)))
	for _, op := range operations(mustParseOpenAPI(t)) {
		// No Authorization, no body; the parameters' examples.
		res := app.do(t, op.method, exampleURL(op.path, op.apiOperation, &exampleRequest{}), nil, nil)
		challenge := res.header.Get("WWW-Authenticate")
		switch needs := len(op.Security) > 0; {
		case needs && (res.status != 401 || res.body != `{"detail":"Invalid token"}` || challenge != "Bearer"):
			t.Errorf(`%s states a security requirement, but without a token it answered %d %s (WWW-Authenticate %q), not 401 {"detail":"Invalid token"} with "Bearer": make its "security" [] if it is public, or wrap its handler in authed in routes (server.go)`,
				op.at(), res.status, res.body, challenge)
		case !needs && res.status == 401:
			t.Errorf(`%s answers 401 without a token, but its "security" is []: give it [{"OAuth2PasswordBearer": []}] and "401": {"$ref": "#/components/responses/Unauthorized"}`, op.at())
		}
	}
}

// documentedExample is one response example with where it sits. One shared
// through components/responses is replayed for each operation naming it.
type documentedExample struct {
	op              operation
	status          int
	mediaType, name string
	response        *apiResponse
	*apiExample
}

// String says where in openapi/ the example is.
func (e documentedExample) String() string {
	if name, ok := strings.CutPrefix(e.response.Ref, "#/components/responses/"); ok {
		return fmt.Sprintf("%s: components.responses[%q] example %q, replayed for %s", responseFile(name), name, e.name, e.op)
	}
	return fmt.Sprintf(`%s.responses["%d"] example %q`, e.op.at(), e.status, e.name)
}

// responseFile names the file of components.responses[name].
func responseFile(name string) string {
	return fileOf(func(d *openAPIDoc) bool { return d.Components.Responses[name] != nil })
}

// documentedExamples lists every example of every operation in order.
func documentedExamples(doc *openAPIDoc) []documentedExample {
	var all []documentedExample
	for _, op := range operations(doc) {
		for _, status := range slices.Sorted(maps.Keys(op.Responses)) {
			r := op.Responses[status]
			for _, mediaType := range slices.Sorted(maps.Keys(r.Content)) {
				examples := r.Content[mediaType].Examples
				for _, name := range slices.Sorted(maps.Keys(examples)) {
					all = append(all, documentedExample{op, status, mediaType, name, r, examples[name]})
				}
			}
		}
	}
	return all
}

func TestOpenAPIExamplesAreRealResponses(t *testing.T) {
	t.Parallel()
	// TestOpenAPIDocumentIsValid reports an example without an x-request.
	examples := slices.DeleteFunc(documentedExamples(mustParseOpenAPI(t)),
		func(ex documentedExample) bool { return ex.Request == nil })
	// The replay sees what dev sees: the rows of samples.sql, loaded as
	// migrate loads them for dev, and the user the examples log in as.
	dsn, env := databaseWithAda(t)
	if err := migrate(context.Background(), openTestDB(t, dsn), true); err != nil {
		t.Fatal(err)
	}
	app := startApp(t, env)
	now := time.Now()
	token := app.token(t, "ada@example.com", "correct horse")
	vars := strings.NewReplacer(
		"$TOKEN", token,
		"$REFRESH_TOKEN", offlineLogin(t, app, "ada@example.com", "correct horse").RefreshToken,
		"$EXPIRED_TOKEN", signToken([]byte(testTokenKey), tokenClaims{Sub: "ada@example.com", Name: "Ada",
			IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}),
	)
	for _, state := range []string{"", "down"} { // down last: it stays down
		if state == "down" {
			takeDatabaseDown(t, dsn)
			time.Sleep(cacheTTL) // until the server's cached accounts no longer count
		}
		for _, ex := range examples {
			if ex.Request.Database == state {
				replayExample(t, app, vars, ex)
			}
		}
	}
	if len(examples) == 0 {
		t.Error("openapi/ has no example to replay")
	}
}

// replayExample sends an example's request and checks that the answer is
// the example: status, Content-Type, body and headers.
func replayExample(t *testing.T, app *testApp, vars *strings.Replacer, ex documentedExample) {
	t.Helper()
	target := exampleURL(ex.op.path, ex.op.apiOperation, ex.Request)
	var res response
	for range max(1, ex.Request.Repeat) {
		header, body := exampleHeaderAndBody(t, ex, vars)
		res = app.do(t, ex.op.method, target, header, body)
	}
	fix := "fix the example's value or x-request, or add the rows it needs to samples.sql"
	if ex.response.Ref != "" {
		fix = "if the other operations that $ref it pass, fix this one's route or handler, or give it a response of its own instead of the $ref"
	}
	if problem := answerProblem(res, ex); problem != "" {
		t.Errorf("%s: %s %s: %s: %s", ex, ex.op.method, target, problem, fix)
	}
}

// answerProblem says how res differs from the example, or is "".
func answerProblem(res response, ex documentedExample) string {
	if want := expectedBody(ex.Value, ex.Varies, res.body); res.status != ex.status || res.body != want {
		return fmt.Sprintf("got %d %s, want %d %s", res.status, res.body, ex.status, want)
	}
	headers := map[string]string{"Content-Type": ex.mediaType}
	maps.Copy(headers, ex.Headers) // x-response-headers
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		if got := res.header.Get(name); got != headers[name] {
			return fmt.Sprintf("%s: %q, want %q", name, got, headers[name])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(ex.response.Headers)) {
		if ex.response.Headers[name].Required && res.header.Get(name) == "" {
			return fmt.Sprintf("no %s header, which the response's headers say is required", name)
		}
	}
	return ""
}

// exampleHeaderAndBody builds the Authorization and the form x-request
// describes.
func exampleHeaderAndBody(t *testing.T, ex documentedExample, vars *strings.Replacer) (http.Header, io.Reader) {
	t.Helper()
	x, header := ex.Request, http.Header{}
	if x.Authorization != "" {
		header.Set("Authorization", vars.Replace(x.Authorization))
	}
	if s := fmt.Sprint(header, x.Form); strings.Contains(vars.Replace(s), "$") {
		t.Errorf("%s: x-request %s: the only variables are $TOKEN, $EXPIRED_TOKEN and $REFRESH_TOKEN", ex, s)
	}
	if x.Form == nil && x.PadBytes == 0 {
		return header, nil
	}
	var fields []string
	for _, f := range x.Form {
		name, value, _ := strings.Cut(f, "=")
		fields = append(fields, url.QueryEscape(name)+"="+url.QueryEscape(vars.Replace(value)))
	}
	if x.PadBytes > 0 {
		fields = append(fields, "pad="+strings.Repeat("x", x.PadBytes))
	}
	header.Set("Content-Type", cmp.Or(x.ContentType, "application/x-www-form-urlencoded"))
	return header, strings.NewReader(strings.Join(fields, "&"))
}

// expectedBody is the example's value as the service writes it (compact,
// members in order, numbers as written: 9.0, not 9), each member that
// varies (x-varies) taken from the body the service sent; in an array, of
// each element.
func expectedBody(value json.RawMessage, varies []string, got string) string {
	want, _ := compactJSON(value) // the document parsed: it is JSON
	var exps, sents []json.RawMessage
	if json.Unmarshal([]byte(want), &exps) == nil && json.Unmarshal([]byte(got), &sents) == nil && len(exps) == len(sents) {
		elems := make([]string, len(exps))
		for i := range exps {
			elems[i] = expectedBody(exps[i], varies, string(sents[i]))
		}
		return "[" + strings.Join(elems, ",") + "]"
	}
	var exp, sent map[string]json.RawMessage
	json.Unmarshal([]byte(want), &exp)
	json.Unmarshal([]byte(got), &sent)
	for _, name := range varies {
		if v, ok := sent[name]; ok && exp[name] != nil {
			key, _ := json.Marshal(name)
			want = strings.Replace(want, string(key)+":"+string(exp[name]), string(key)+":"+string(v), 1)
		}
	}
	return want
}

// takeDatabaseDown makes the database at dsn refuse connections and ends
// those open, as when PostgreSQL goes away under the server.
func takeDatabaseDown(t *testing.T, dsn string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name, admin := cfg.Database, testServer.admin
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
		err := admin.QueryRow("SELECT count(*) "+backends, name).Scan(&n)
		if err != nil || n > 0 && time.Now().After(deadline) {
			t.Fatalf("%d connections to %s outlived pg_terminate_backend (%v)", n, name, err)
		}
		if n == 0 {
			return
		}
	}
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	t.Parallel()
	doc := mustParseOpenAPI(t)
	var raw map[string]any
	json.Unmarshal(openAPIDocument(), &raw) // parseOpenAPI succeeded: it is JSON
	if version, _ := raw["openapi"].(string); !strings.HasPrefix(version, "3.1.") || doc.Info.Title == "" || doc.Info.Version == "" {
		t.Errorf(`openapi/shared.json: needs "openapi": "3.1.0" and an info with a title and a version`)
	}
	components, _ := raw["components"].(map[string]any)
	walkJSON(raw, "#", func(at, key string, v any) {
		switch key {
		case "$ref": // the document's $refs all name components
			ref, _ := v.(string)
			kind, name, _ := strings.Cut(strings.TrimPrefix(ref, "#/components/"), "/")
			if m, _ := components[kind].(map[string]any); m[name] == nil {
				t.Errorf("openapi/*.json: %s: $ref %q names nothing in the document: add what it names, or fix the $ref", at, ref)
			}
		case "x-request":
			checkExampleRequest(t, at, v)
		}
	})
	checkOperations(t, doc, components)
}

// checkExampleRequest decodes an x-request strictly: a misspelt member
// would otherwise be ignored, and the example replayed without it.
func checkExampleRequest(t *testing.T, at string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var x exampleRequest
	if err := dec.Decode(&x); err != nil {
		t.Errorf("openapi/*.json: %s: x-request: %v (openapi.go's exampleRequest lists what it may hold)", at, err)
	} else if x.Database != "" && x.Database != "down" {
		t.Errorf(`openapi/*.json: %s: x-request database %q: the only state is "down"`, at, x.Database)
	}
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// checkOperations checks what the page, the replay and the linters rely
// on. Each operation states its security (linters want it stated; []
// is public) and documents the 401 of a token it needs.
func checkOperations(t *testing.T, doc *openAPIDoc, components map[string]any) {
	t.Helper()
	tags := make(map[string]bool)
	for _, tag := range doc.Tags {
		tags[tag.Name] = true
	}
	ids, shared := make(map[string]bool), make(map[string]bool)
	for _, op := range operations(doc) {
		if op.OperationID == "" || ids[op.OperationID] || op.Summary == "" {
			t.Errorf("%s needs a summary and an operationId no other operation has", op.at())
		}
		ids[op.OperationID] = true
		if first := append(op.Tags, "")[0]; !tags[first] {
			t.Errorf("%s: its first tag %q (the page lists it there) is not declared: add it to the file's tags, with a description", op.at(), first)
		}
		if op.Security == nil {
			t.Errorf(`%s states no security: add "security": [{"OAuth2PasswordBearer": []}] if it needs a token, or [] if it is public`, op.at())
		}
		for _, req := range op.Security {
			for name := range req {
				if schemes, _ := components["securitySchemes"].(map[string]any); schemes[name] == nil {
					t.Errorf("%s: security scheme %q is not in components.securitySchemes", op.at(), name)
				}
			}
		}
		if len(op.Security) > 0 && op.Responses[401] == nil {
			t.Errorf(`%s needs a token: add "401": {"$ref": "#/components/responses/Unauthorized"} to its responses`, op.at())
		}
		checkParameters(t, op)
		if len(op.Responses) == 0 {
			t.Errorf("%s has no responses: add one for each status it answers, with an example (README: Adding a new service)", op.at())
		}
		for _, status := range slices.Sorted(maps.Keys(op.Responses)) {
			if r := op.Responses[status]; !shared[r.Ref] {
				checkResponse(t, fmt.Sprintf(`%s.responses["%d"]`, op.at(), status), r, status)
				shared[r.Ref] = r.Ref != ""
			}
		}
	}
}

// checkParameters checks that each {param} of the path is a parameter and
// that each parameter has the example its requests are built from.
func checkParameters(t *testing.T, op operation) {
	t.Helper()
	for _, m := range pathParam.FindAllStringSubmatch(op.path, -1) {
		if !slices.ContainsFunc(op.Parameters, func(p *apiParameter) bool { return p.In == "path" && p.Name == m[1] }) {
			t.Errorf(`%s: {%s} is not a parameter: add {"name": %q, "in": "path", "required": true, "schema": ..., "example": ...}`, op.at(), m[1], m[1])
		}
	}
	for _, p := range op.Parameters {
		if p.Name == "" || p.Schema == nil || p.Example == nil || !slices.Contains([]string{"path", "query", "header", "cookie"}, p.In) {
			t.Errorf(`%s: parameter %q needs a name, an "in", a schema and an example (the replay and the page's commands use it)`, op.at(), p.Name)
		}
	}
}

// checkResponse checks that a response is described and has an example,
// with the request that gets it, for each media type. Only a success may
// have no body.
func checkResponse(t *testing.T, at string, r *apiResponse, status int) {
	t.Helper()
	if r.Ref != "" {
		name := strings.TrimPrefix(r.Ref, "#/components/responses/")
		at = fmt.Sprintf("%s: components.responses[%q]", responseFile(name), name)
	}
	if r.Description == "" || len(r.Content) == 0 && status/100 != 2 {
		t.Errorf("%s needs a description and a content with an example", at)
	}
	for _, mediaType := range slices.Sorted(maps.Keys(r.Content)) {
		examples := r.Content[mediaType].Examples
		if len(examples) == 0 {
			t.Errorf(`%s: %s has no examples: add one with the "x-request" that gets it`, at, mediaType)
		}
		for _, name := range slices.Sorted(maps.Keys(examples)) {
			if examples[name].Request == nil {
				t.Errorf(`%s: example %q has no "x-request" to replay: add the request that gets it ({} for a plain GET)`, at, name)
			}
		}
	}
}

// walkJSON calls f for every member of every object under v, with where
// the object is as a JSON pointer.
func walkJSON(v any, at string, f func(at, key string, v any)) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			f(at, k, v[k])
			walkJSON(v[k], at+"/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(k), f)
		}
	case []any:
		for i, item := range v {
			walkJSON(item, at+"/"+strconv.Itoa(i), f)
		}
	}
}
