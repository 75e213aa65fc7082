package policy

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"

	"github.com/vigo-enroll/vigo/schemas"
)

// Bounds of the durations in a policy.
const (
	// MinCertValidity is the shortest cert_validity.
	MinCertValidity = time.Hour
	// MaxCertValidity is the longest cert_validity (10 years).
	MaxCertValidity = 87600 * time.Hour
	// DefaultCertValidity applies when the policy has no cert_validity.
	DefaultCertValidity = 8760 * time.Hour
	// MaxTokenTTL bounds tokens.max_ttl: a token valid longer than a year is
	// a standing secret rather than a one-time enrollment credential.
	MaxTokenTTL = 8760 * time.Hour
)

const durationHint = `write a Go duration such as "720h" or "90m" (units ns, us, ms, s, m, h; no days or years)`

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// allowedImports are the CUE builtin packages a policy file may import. They
// are pure functions: none reads files, the environment or the network
// (the tool/... packages are left out on purpose). Anything else, in
// particular a module import that would need a registry, is refused.
var allowedImports = map[string]bool{
	"encoding/base64": true, "encoding/hex": true, "encoding/json": true, "encoding/yaml": true,
	"list": true, "math": true, "math/bits": true, "net": true, "path": true, "regexp": true,
	"strconv": true, "strings": true, "struct": true, "time": true, "uuid": true,
}

// File is one policy file: its name relative to the policy folder, with
// forward slashes, and its content.
type File struct {
	Name string
	Data []byte
}

// EvalOptions tune [Evaluate].
type EvalOptions struct {
	// Progress, when set, is called with the name of each file before it
	// is evaluated on its own, and with "" before all files are evaluated
	// together. Files that hold only literal data (lists and structs of
	// strings, numbers and booleans) cannot be expensive and are not
	// evaluated on their own; the others are, first, so that a process
	// that runs out of its budget can tell which file was being evaluated.
	Progress func(file string)
}

// Load evaluates files with [Evaluate] and compiles the result with
// [Spec.Compile]: the policy, labelled with revision, or [Errors]. Load runs
// CUE in the calling process with no bound on memory or time: policy
// content from a repository is evaluated by package policy/sandbox instead.
func Load(files []File, revision string) (*Policy, error) {
	s, err := Evaluate(files, EvalOptions{})
	if err != nil {
		return nil, err
	}
	return s.Compile(revision)
}

// Evaluate unifies the policy files with the #Policy schema and returns
// their values as a [Spec], or every problem found as [Errors], sorted by
// position.
//
// CUE checks the shape of the policy, the syntax of every value (globs'
// characters, CIDRs, UUIDs, hostnames, durations, addresses) and supplies the
// schema's defaults; Go then checks only what CUE cannot say (see
// [Spec.Compile]). A value CUE found wrong is not checked again by Go, so
// every problem is reported once.
//
// Every file must start with "package policy" and may import only CUE
// builtin packages such as "strings", "net" or "list", so that evaluation
// never reaches a module registry or the network; file attributes (@if,
// @extern) are refused. Which files of a folder are policy files is decided
// by the tree reader of package gitsync, not here: names must be top-level
// .cue files.
//
// Evaluate has no bound on memory or time: a few hundred bytes of CUE can
// ask for gigabytes. Run it on untrusted content only inside a process with
// hard limits (package policy/sandbox). It uses a new CUE context for every
// call and is safe for concurrent use.
func Evaluate(files []File, opts EvalOptions) (s *Spec, err error) {
	defer func() {
		// Why: the policy comes from a Git repository that many people can
		// push to; a bug in the CUE evaluator must reject that revision,
		// not crash the process.
		if r := recover(); r != nil {
			s, err = nil, Errors{{Msg: fmt.Sprintf("internal error while evaluating the policy: %v", r)}}
		}
	}()
	l := &loader{}
	var srcs []sourceFile
	for _, f := range files {
		if path.Dir(f.Name) != "." || !strings.HasSuffix(f.Name, ".cue") || strings.HasPrefix(f.Name, "_") || strings.HasPrefix(f.Name, ".") {
			l.add(f.Name, 0, 0, "", "not a policy file: policy files are .cue files at the top of the policy folder")
			continue
		}
		srcs = append(srcs, sourceFile{name: f.Name, src: f.Data})
	}
	if len(files) == 0 {
		return nil, Errors{{Msg: "no .cue files: a policy folder needs at least one file starting with \"package policy\""}}
	}
	s = l.evaluate(srcs, opts)
	if len(l.errs) > 0 {
		return nil, sortErrors(l.errs)
	}
	return s, nil
}

type loader struct {
	errs Errors
}

type sourceFile struct {
	name string
	src  []byte
}

func (l *loader) add(file string, line, col int, path, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: file, Line: line, Col: col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// parse parses the files and checks their package clause, attributes and
// imports.
func (l *loader) parse(files []sourceFile) []*ast.File {
	var out []*ast.File
	for _, sf := range files {
		f, err := parser.ParseFile(sf.name, sf.src)
		if err != nil {
			l.addCUEErrors(err, cue.Value{})
			continue
		}
		ok := true
		for _, d := range f.Preamble() {
			if a, isAttr := d.(*ast.Attribute); isAttr {
				key, _ := a.Split()
				switch key {
				case "if":
					l.addAt(a.Pos(), "", "file attribute @if is not supported in a policy: every file is always part of it")
					ok = false
				case "extern":
					l.addAt(a.Pos(), "", "file attribute @extern is not supported in a policy: a policy cannot read other files")
					ok = false
				}
			}
		}
		switch pkg := f.PackageName(); pkg {
		case "policy":
		case "":
			l.add(sf.name, 1, 1, "", "missing \"package policy\" clause: CUE would leave this file out of the policy")
			ok = false
		default:
			var pos token.Pos
			for _, d := range f.Decls {
				if pc, isPkg := d.(*ast.Package); isPkg {
					pos = pc.Name.Pos()
				}
			}
			l.addAt(pos, "", "package is %q: every policy file must start with \"package policy\"", pkg)
			ok = false
		}
		for spec := range f.ImportSpecs() {
			imp, err := strconv.Unquote(spec.Path.Value)
			if err != nil || !allowedImports[imp] {
				l.addAt(spec.Path.Pos(), "", "import %s is not allowed: a policy may import only CUE builtin packages such as \"strings\", \"list\" or \"net\"", spec.Path.Value)
				ok = false
			}
		}
		if ok {
			out = append(out, f)
		}
	}
	return out
}

func (l *loader) addAt(pos token.Pos, path, format string, args ...any) {
	p := pos.Position()
	l.add(p.Filename, p.Line, p.Column, path, format, args...)
}

// evaluate builds the CUE value, validates it against #Policy and extracts
// the spec. Problems go to l.errs.
func (l *loader) evaluate(files []sourceFile, opts EvalOptions) *Spec {
	asts := l.parse(files)
	if len(l.errs) > 0 {
		return nil
	}
	if opts.Progress != nil {
		for _, f := range asts {
			if !plainData(f) {
				opts.Progress(f.Filename)
				evaluateAlone(f)
			}
		}
		opts.Progress("")
	}
	// A fresh context per load: a cue.Context keeps everything it ever
	// evaluated, so a long-lived one would grow with every revision.
	ctx := cuecontext.New()
	schema := ctx.CompileBytes(schemas.PolicyCUE, cue.Filename(schemas.PolicyFilename))
	if err := schema.Err(); err != nil {
		l.add(schemas.PolicyFilename, 0, 0, "", "schema does not compile: %v", err)
		return nil
	}
	def := schema.LookupPath(cue.ParsePath("#Policy"))
	inst := build.NewContext().NewInstance("", nil)
	for _, f := range asts {
		if err := inst.AddSyntax(f); err != nil {
			l.addCUEErrors(err, cue.Value{})
		}
	}
	if len(l.errs) > 0 {
		return nil
	}
	data := ctx.BuildInstance(inst)
	if err := data.Err(); err != nil {
		l.addCUEErrors(err, data)
		return nil
	}
	v := def.Unify(data)
	if err := v.Validate(cue.Concrete(true)); err != nil {
		l.addCUEErrors(err, data)
	}
	// CUE may report "field not allowed" only once every other error is
	// fixed, so closedness is checked here as well; what CUE says at or
	// inside a field that is not allowed is then noise.
	closed := l.checkClosed(data, def, "", nil)
	if len(closed) > 0 {
		var notAllowed []string
		for _, e := range closed {
			notAllowed = append(notAllowed, e.Path)
		}
		kept := l.errs[:0]
		for _, e := range l.errs {
			if !slices.Contains(notAllowed, e.Path) && !under(e.Path, notAllowed) {
				kept = append(kept, e)
			}
		}
		l.errs = append(kept, closed...)
	}
	// The spec is read from the data, not from the unified value: a list
	// with one wrong element would not be iterable in the unified value, and
	// the positions of the data are the operator's. Defaults come from the
	// unified value: the schema's defaults are the defaults.
	spec := extract(data, v)
	// Go checks only what CUE cannot say; a value CUE found wrong is not
	// checked again, so that every problem has one message.
	cuePaths := make([]string, 0, len(l.errs))
	for _, e := range l.errs {
		cuePaths = append(cuePaths, e.Path)
	}
	_, goErrs := spec.compile("")
	for _, e := range goErrs {
		if !slices.Contains(cuePaths, e.Path) && !under(e.Path, cuePaths) {
			l.errs = append(l.errs, e)
		}
	}
	if len(l.errs) > 0 {
		return nil
	}
	return spec
}

// plainData reports whether f holds only literal data: fields whose values
// are structs, lists and basic literals. Evaluating such a file costs time
// and memory in proportion to its size.
func plainData(f *ast.File) bool {
	for _, d := range f.Decls {
		switch x := d.(type) {
		case *ast.Package, *ast.CommentGroup, *ast.Attribute:
		case *ast.Field:
			if !plainValue(x.Value) {
				return false
			}
		default: // imports, let clauses, embeddings, comprehensions
			return false
		}
	}
	return true
}

func plainValue(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.BasicLit:
		return true
	case *ast.ListLit:
		for _, el := range x.Elts {
			if !plainValue(el) {
				return false
			}
		}
		return true
	case *ast.StructLit:
		for _, d := range x.Elts {
			f, ok := d.(*ast.Field)
			if !ok || !plainValue(f.Value) {
				return false
			}
		}
		return true
	}
	return false
}

// evaluateAlone evaluates one file on its own, every field included, and
// throws the result away: see EvalOptions.Progress. References to other
// files fail here; they are evaluated with all files together.
func evaluateAlone(f *ast.File) {
	ctx := cuecontext.New()
	inst := build.NewContext().NewInstance("", nil)
	if err := inst.AddSyntax(f); err != nil {
		return
	}
	v := ctx.BuildInstance(inst)
	_ = v.Validate(cue.All(), cue.Hidden(true), cue.Definitions(true))
}

// addCUEErrors converts CUE errors to Errors. data, when it exists, locates
// errors whose positions are all in the schema.
func (l *loader) addCUEErrors(err error, data cue.Value) {
	type item struct {
		path   []string
		msg    string
		pos    token.Pos
		header bool     // "N errors in empty disjunction:"
		where  []string // the data positions in other files, file:line:col
	}
	var items []item
	for _, e := range cueerrors.Errors(err) {
		format, args := e.Msg()
		it := item{path: e.Path(), msg: fmt.Sprintf(format, args...)}
		if len(it.path) > 0 && it.path[0] == "#Policy" {
			it.path = it.path[1:]
		}
		it.header = strings.HasSuffix(it.msg, "errors in empty disjunction:")
		it.pos = dataPos(e)
		if it.pos.IsValid() {
			for _, p := range cueerrors.Positions(e) {
				if fn := p.Filename(); fn != "" && fn != schemas.PolicyFilename && fn != it.pos.Filename() {
					it.where = append(it.where, p.Position().String())
				}
			}
		}
		if it.pos == token.NoPos && data.Exists() {
			// Locate the error at the closest value that exists in the data.
			for n := len(it.path); n >= 0 && it.pos == token.NoPos; n-- {
				if w := data.LookupPath(cue.ParsePath(cuePathString(it.path[:n]))); w.Exists() {
					it.pos = w.Pos()
				}
			}
		}
		items = append(items, it)
	}
	// Simplify disjunctions: "cert_validity: 2 errors in empty disjunction"
	// followed by one conflict per alternative becomes one message.
	byPath := map[string][]int{}
	for i, it := range items {
		k := strings.Join(it.path, "\x00")
		byPath[k] = append(byPath[k], i)
	}
	drop := map[int]bool{}
	for _, idx := range byPath {
		hasHeader := false
		for _, i := range idx {
			hasHeader = hasHeader || items[i].header
		}
		if !hasHeader {
			continue
		}
		var conflicts, others []int
		for _, i := range idx {
			switch {
			case items[i].header:
				drop[i] = true
			case strings.HasPrefix(items[i].msg, "conflicting values "):
				conflicts = append(conflicts, i)
			default:
				others = append(others, i)
			}
		}
		if len(others) > 0 {
			// A conflict with a default or an enumerated value is noise
			// beside the real constraint that failed.
			for _, i := range conflicts {
				drop[i] = true
			}
			continue
		}
		if len(conflicts) > 1 {
			var alts []string
			var got string
			for _, i := range conflicts {
				a, b, ok := splitConflict(items[i].msg)
				if !ok {
					alts = nil
					break
				}
				alts = append(alts, a)
				got = b
				drop[i] = true
			}
			if alts == nil {
				for _, i := range conflicts {
					delete(drop, i)
				}
				continue
			}
			first := conflicts[0]
			items = append(items, item{path: items[first].path, pos: items[first].pos,
				msg: fmt.Sprintf("invalid value %s: must be one of %s", got, strings.Join(alts, ", "))})
		}
	}
	// A value that matches no alternative of a disjunction (such as an
	// approved entry, a glob or a struct) conflicts with each of them: one
	// message per value is enough.
	conflictAt := map[string]bool{}
	for i, it := range items {
		if drop[i] || !strings.HasPrefix(it.msg, "conflicting values ") {
			continue
		}
		k := strings.Join(it.path, "\x00") + "\x00" + it.pos.String()
		if conflictAt[k] {
			drop[i] = true
		}
		conflictAt[k] = true
	}
	for i, it := range items {
		if drop[i] {
			continue
		}
		if len(it.where) > 0 && (strings.HasPrefix(it.msg, "conflicting values") || strings.HasPrefix(it.msg, "incompatible list lengths")) {
			// A value set in two files: say where, and what to do.
			it.msg += fmt.Sprintf(" (also set in %s)", strings.Join(slices.Compact(it.where), ", "))
			if len(it.path) > 0 && listFields[it.path[0]] != "" {
				it.msg += fmt.Sprintf(": lists do not merge across files; keep %s in one file, or give each file its own entries in %s", it.path[0], listFields[it.path[0]])
			} else {
				it.msg += ": a field may be set in several files only to the same value; give each file's entries their own keys"
			}
		}
		if msg, ok := reword(it.msg); ok {
			// A constraint of the schema: say what it means, name the
			// value and point at it.
			it.msg = "the value " + msg
			if w := data.LookupPath(cue.ParsePath(cuePathString(it.path))); data.Exists() && w.Exists() {
				it.msg = valueText(w) + " " + msg
				if it.pos == token.NoPos {
					it.pos = w.Pos()
				}
			}
		}
		l.addAt(it.pos, cuePathString(it.path), "%s", it.msg)
	}
}

// listFields maps each list of the policy to its keyed form, which files
// can add to independently.
var listFields = map[string]string{
	"trusted_enrollment": "trusted_enrollment_by_name",
	"approved":           "approved_by_owner",
	"revocations":        "revocations_by_key",
	"tests":              "tests_by_name",
}

// schemaWords says what the value constraints of schemas/policy.cue mean,
// keyed by the constraint as CUE names it when a value breaks it ("invalid
// value "x" (out of bound =~"…")" or "(does not satisfy time.Duration)").
// CUE checks; these words only replace its report, so that an operator reads
// what to write instead of a regular expression. TestSchemaWords checks that
// every key is still in the schema.
var schemaWords = []struct{ constraint, words string }{
	{`=~"^[A-Za-z0-9.*?-]+$"`, `is not a hostname pattern: only letters, digits, '-', '.' and the wildcards '*' and '?' are allowed ('[', ']' and '\' are not special)`},
	{`=~"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"`, `is not a UUID in canonical lower-case form, such as "0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11"`},
	{`=~"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\\.?$"`, `is not a hostname: dot-separated labels of letters, digits and '-' (not first or last), each at most 63 characters`},
	{`strings.MaxRunes(254)`, `is not a hostname: longer than 253 characters`},
	{`net.IPCIDR`, `is not a network in CIDR notation, such as "10.0.0.0/8" or "2001:db8::/32"`},
	{`net.IP`, `is not an IP address`},
	{`time.Duration`, `is not a Go duration: write one such as "720h" or "90m" (units ns, us, ms, s, m, h; no days or years)`},
}

// reword returns the meaning of the schema constraint a CUE message says a
// value broke, if it is one of schemaWords.
func reword(msg string) (string, bool) {
	if !strings.HasPrefix(msg, "invalid value ") {
		return "", false
	}
	for _, w := range schemaWords {
		if strings.Contains(msg, "(out of bound "+w.constraint+")") || strings.Contains(msg, "(does not satisfy "+w.constraint+")") {
			return w.words, true
		}
	}
	return "", false
}

// valueText formats a value for a message: a string quoted, anything else
// in CUE syntax, cut short when long.
func valueText(v cue.Value) string {
	var t string
	if s, err := v.String(); err == nil {
		t = strconv.Quote(s)
	} else {
		t = fmt.Sprint(v)
	}
	if len(t) > 80 {
		t = t[:77] + "..."
	}
	return t
}

// splitConflict splits `conflicting values "a" and "b"` into its two values.
func splitConflict(msg string) (a, b string, ok bool) {
	rest, ok := strings.CutPrefix(msg, "conflicting values ")
	if !ok {
		return "", "", false
	}
	a, b, ok = strings.Cut(rest, " and ")
	return a, b, ok && !strings.Contains(b, " ")
}

// dataPos returns the first position of e that is not in the schema.
func dataPos(e cueerrors.Error) token.Pos {
	for _, p := range cueerrors.Positions(e) {
		if fn := p.Filename(); fn != "" && fn != schemas.PolicyFilename {
			return p
		}
	}
	if p := e.Position(); p.Filename() != schemas.PolicyFilename {
		return p
	}
	return token.NoPos
}

// cuePathString formats path elements as trusted_enrollment[0].cidrs[1].
func cuePathString(elems []string) string {
	var b strings.Builder
	for _, e := range elems {
		if _, err := strconv.Atoi(e); err == nil {
			b.WriteString("[" + e + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(e)
	}
	return b.String()
}

// checkClosed returns out with every regular field of data that schema does
// not allow, recursing into structs and lists of structs.
func (l *loader) checkClosed(data, schema cue.Value, path string, out Errors) Errors {
	switch data.IncompleteKind() {
	case cue.StructKind:
		it, err := data.Fields()
		if err != nil {
			return out
		}
		for it.Next() {
			sel := it.Selector()
			if !sel.IsString() {
				continue
			}
			p := joinPath(path, sel.Unquoted())
			if !schema.Allows(sel) {
				out = append(out, errorAt(it.Value().Pos(), p, "field not allowed%s", suggest(sel.Unquoted(), schema)))
				continue
			}
			sub := lookupField(schema, sel.Unquoted())
			if sub.Exists() {
				out = l.checkClosed(it.Value(), sub, p, out)
			}
		}
	case cue.ListKind:
		elem := schema.LookupPath(cue.MakePath(cue.AnyIndex))
		if !elem.Exists() || elem.IncompleteKind()&cue.StructKind == 0 {
			return out
		}
		it, err := data.List()
		if err != nil {
			return out
		}
		for i := 0; it.Next(); i++ {
			out = l.checkClosed(it.Value(), elem, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
	return out
}

// lookupField finds a regular, optional or required field of a schema struct.
func lookupField(schema cue.Value, name string) cue.Value {
	for _, sel := range []cue.Selector{cue.Str(name), cue.Str(name).Optional(), cue.Str(name).Required()} {
		if v := schema.LookupPath(cue.MakePath(sel)); v.Exists() {
			return v
		}
	}
	return cue.Value{}
}

// suggest returns a hint naming the allowed fields of schema.
func suggest(name string, schema cue.Value) string {
	it, err := schema.Fields(cue.Optional(true))
	if err != nil {
		return ""
	}
	var names []string
	for it.Next() {
		n := it.Selector().Unquoted()
		if closeName(name, n) {
			return fmt.Sprintf(" (did you mean %s?)", n)
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		return ""
	}
	return " (allowed: " + strings.Join(names, ", ") + ")"
}

// closeName reports whether a and b differ by at most two edits.
func closeName(a, b string) bool {
	if a == b {
		return false
	}
	// Levenshtein distance with two rows.
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)] <= 2
}

// under reports whether path is inside one of the values at roots: what CUE
// says inside a field that is not allowed is noise.
func under(path string, roots []string) bool {
	for _, r := range roots {
		if rest, ok := strings.CutPrefix(path, r); ok && rest != "" && (rest[0] == '.' || rest[0] == '[') {
			return true
		}
	}
	return false
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func errorAt(pos token.Pos, path, format string, args ...any) *Error {
	p := pos.Position()
	return &Error{File: p.Filename, Line: p.Line, Col: p.Column, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// str returns v as a string when it is a concrete string.
func str(v cue.Value) (string, bool) {
	s, err := v.String()
	return s, err == nil
}

// strAt returns v as a string with its position when it is a concrete
// string, and the zero Str (with the position) otherwise.
func strAt(v cue.Value) Str {
	s, _ := str(v)
	return Str{Value: s, Pos: posOf(v)}
}

func posOf(v cue.Value) Pos {
	p := v.Pos().Position()
	return Pos{File: p.Filename, Line: p.Line, Col: p.Column}
}

// elems returns the elements of a list value, or nil.
func elems(v cue.Value) []cue.Value {
	it, err := v.List()
	if err != nil {
		return nil
	}
	var out []cue.Value
	for it.Next() {
		out = append(out, it.Value())
	}
	return out
}

func field(v cue.Value, name string) cue.Value {
	return v.LookupPath(cue.MakePath(cue.Str(name)))
}

// extract reads the spec from data (the policy files before unification
// with the schema), tolerating values that CUE reports as wrong. unified
// (data unified with #Policy) supplies the schema's defaults.
func extract(data, unified cue.Value) *Spec {
	s := &Spec{Version: SpecVersion}
	for _, e := range elems(field(data, "trusted_enrollment")) {
		s.Trusted = append(s.Trusted, trustedSpec(e))
	}
	for _, av := range elems(field(data, "approved")) {
		s.Approved = append(s.Approved, approvedSpec(av))
	}
	s.CertValidity = strAt(field(data, "cert_validity"))
	if s.CertValidity.Value == "" {
		if d, ok := str(field(unified, "cert_validity")); ok {
			s.CertValidity.Value = d
		}
	}
	if tv := data.LookupPath(cue.ParsePath("tokens.max_ttl")); tv.Exists() {
		t := strAt(tv)
		s.TokenMaxTTL = &t
	}
	for _, rv := range elems(field(data, "revocations")) {
		s.Revocations = append(s.Revocations, revocationSpec(rv))
	}
	for _, tv := range elems(field(data, "tests")) {
		s.Tests = append(s.Tests, testSpec(tv, ""))
	}

	// The keyed forms, after the lists, sorted by key.
	for _, kv := range keyed(data, "trusted_enrollment_by_name") {
		t := trustedSpec(kv.v)
		t.Path = kv.path
		name := Str{Value: kv.key, Pos: posOf(kv.v)}
		t.Name = &name
		s.Trusted = append(s.Trusted, t)
	}
	for _, kv := range keyed(data, "approved_by_owner") {
		for i, av := range elems(kv.v) {
			a := approvedSpec(av)
			a.Path = fmt.Sprintf("%s[%d]", kv.path, i)
			s.Approved = append(s.Approved, a)
		}
	}
	for _, kv := range keyed(data, "revocations_by_key") {
		r := revocationSpec(kv.v)
		r.Path = kv.path
		s.Revocations = append(s.Revocations, r)
	}
	for _, kv := range keyed(data, "tests_by_name") {
		s.Tests = append(s.Tests, testSpec(kv.v, kv.path))
	}
	return s
}

// approvedSpec reads an approved entry: a glob, or {pattern, replace}.
func approvedSpec(av cue.Value) ApprovedSpec {
	if av.IncompleteKind() == cue.StructKind {
		a := ApprovedSpec{Str: strAt(field(av, "pattern"))}
		a.Replace, _ = str(field(av, "replace"))
		return a
	}
	return ApprovedSpec{Str: strAt(av)}
}

func trustedSpec(e cue.Value) TrustedSpec {
	t := TrustedSpec{Pos: posOf(e), Pattern: strAt(field(e, "pattern"))}
	t.Replace, _ = str(field(e, "replace"))
	if nv := field(e, "name"); nv.Exists() {
		n := strAt(nv)
		t.Name = &n
	}
	t.CIDRs = []Str{}
	cidrs := field(e, "cidrs")
	if cidrs.Exists() {
		t.CIDRsPos = posOf(cidrs)
	}
	for _, cv := range elems(cidrs) {
		t.CIDRs = append(t.CIDRs, strAt(cv))
	}
	return t
}

func revocationSpec(rv cue.Value) RevocationSpec {
	r := RevocationSpec{Pos: posOf(rv)}
	if uv := field(rv, "uuid"); uv.Exists() {
		u := strAt(uv)
		r.UUID = &u
	}
	if hv := field(rv, "hostname"); hv.Exists() {
		h := strAt(hv)
		r.Hostname = &h
	}
	r.Reason, _ = str(field(rv, "reason"))
	return r
}

func testSpec(tv cue.Value, path string) TestSpec {
	ts := TestSpec{Path: path, Pos: posOf(tv), IP: strAt(field(tv, "ip"))}
	ts.Hostname, _ = str(field(tv, "hostname"))
	ts.Expect, _ = str(field(tv, "expect"))
	ts.Token, _ = field(tv, "token").Bool()
	return ts
}

type keyedValue struct {
	key, path string
	v         cue.Value
}

// keyed returns the fields of the struct data.name sorted by key, each
// with its CUE path as errors name it (name.key, the key quoted when it is
// not an identifier).
func keyed(data cue.Value, name string) []keyedValue {
	it, err := field(data, name).Fields()
	if err != nil {
		return nil
	}
	var out []keyedValue
	for it.Next() {
		sel := it.Selector()
		out = append(out, keyedValue{key: sel.Unquoted(), path: name + "." + sel.String(), v: it.Value()})
	}
	slices.SortFunc(out, func(a, b keyedValue) int { return strings.Compare(a.key, b.key) })
	return out
}
