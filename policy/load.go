package policy

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"regexp"
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

// Limits on what Load reads, so that a policy repository cannot exhaust the
// server's memory.
const (
	// MaxFiles is the largest number of .cue files in a policy folder.
	MaxFiles = 1000
	// MaxTotalSize is the largest total size of the .cue files of a policy folder.
	MaxTotalSize = 8 << 20
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

// LoadDir loads the policy in the folder dir; see [Load]. Symbolic links
// cannot lead out of dir.
func LoadDir(dir, revision string) (*Policy, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	defer root.Close()
	return Load(root.FS(), revision)
}

// Load reads every .cue file at the top of fsys, unifies them with the
// #Policy schema, checks what CUE cannot check (host bits in CIDRs, glob and
// hostname syntax, duration bounds, duplicates) and returns the compiled
// policy, labelled with revision (a commit id, or any text naming the
// version).
//
// Every file must start with "package policy". A .cue file that CUE would
// leave out (no package clause, another package, a name starting with "_"
// or ".", a file in a subfolder, a build attribute) is an error, so that what
// operators write is what the server applies. A cue.mod/ folder is allowed and
// not read: a policy may import only CUE builtin packages such as "strings",
// "net" or "list", so loading never reaches a module registry or the network.
// Symbolic links and folders named .git are skipped or refused; at most
// [MaxFiles] files and [MaxTotalSize] bytes are read.
//
// Problems in the policy are returned together as [Errors], sorted by
// position, with file names relative to fsys. Any other error (reading fsys)
// is returned as is. Load uses a new CUE context for every call and is safe
// for concurrent use.
func Load(fsys fs.FS, revision string) (p *Policy, err error) {
	defer func() {
		// Why: the policy comes from a Git repository that many people can
		// push to; a bug in the CUE evaluator must reject that revision,
		// not crash the server.
		if r := recover(); r != nil {
			p, err = nil, Errors{{Msg: fmt.Sprintf("internal error while evaluating the policy: %v", r)}}
		}
	}()
	l := &loader{}
	files, err := l.readFiles(fsys)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 && len(l.errs) == 0 {
		return nil, Errors{{Msg: "no .cue files: a policy folder needs at least one file starting with \"package policy\""}}
	}
	p = l.evaluate(files, revision)
	if len(l.errs) > 0 {
		return nil, sortErrors(l.errs)
	}
	return p, nil
}

type loader struct {
	errs Errors
	// replaceErrs are the problems found by the Go checks. Each replaces
	// what CUE said at the same path, if anything: the Go message is the
	// more specific one ("has host bits set: write 10.0.0.0/8").
	replaceErrs Errors
}

type sourceFile struct {
	name string
	src  []byte
}

func (l *loader) add(file string, line, col int, path, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: file, Line: line, Col: col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// readFiles walks fsys and returns the policy files, in name order. Problems
// with the policy go to l.errs; the returned error is an I/O error.
func (l *loader) readFiles(fsys fs.FS) ([]sourceFile, error) {
	var files []sourceFile
	total := 0
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name == "cue.mod" || d.Name() == ".git" {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(d.Name(), ".cue") {
			return nil
		}
		switch base := d.Name(); {
		case d.Type()&fs.ModeSymlink != 0:
			// Why: a link could make the policy read files outside the
			// repository, and Git trees and checkouts would disagree.
			l.add(name, 0, 0, "", "symbolic links are not allowed in a policy folder")
			return nil
		case d.Type()&fs.ModeType != 0:
			l.add(name, 0, 0, "", "not a regular file")
			return nil
		case path.Dir(name) != ".":
			l.add(name, 0, 0, "", "a .cue file in a subfolder is not part of the policy: move it to the top of the policy folder")
			return nil
		case strings.HasPrefix(base, "_") || strings.HasPrefix(base, "."):
			l.add(name, 0, 0, "", "CUE ignores files whose name starts with %q: rename it", base[:1])
			return nil
		}
		if len(files) >= MaxFiles {
			l.add(name, 0, 0, "", "too many .cue files: a policy folder may hold at most %d", MaxFiles)
			return fs.SkipAll
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if total+int(info.Size()) > MaxTotalSize {
			l.add(name, 0, 0, "", "policy too large: the .cue files may hold at most %d bytes in all", MaxTotalSize)
			return fs.SkipAll
		}
		src, err := readLimited(fsys, name, MaxTotalSize-total)
		if err != nil {
			return err
		}
		if src == nil {
			l.add(name, 0, 0, "", "policy too large: the .cue files may hold at most %d bytes in all", MaxTotalSize)
			return fs.SkipAll
		}
		total += len(src)
		files = append(files, sourceFile{name: name, src: src})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	return files, nil
}

// readLimited reads the file name, or returns nil when it is longer than
// limit bytes (the file may have grown since it was listed).
func readLimited(fsys fs.FS, name string, limit int) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return nil, nil
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
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

// evaluate builds the CUE value, validates it against #Policy and compiles
// the policy. Problems go to l.errs.
func (l *loader) evaluate(files []sourceFile, revision string) *Policy {
	asts := l.parse(files)
	if len(l.errs) > 0 {
		return nil
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
	// fixed, so closedness is checked here as well.
	l.checkClosed(data, def, "")
	// The Go checks read the data, not the unified value: a list with one
	// wrong element would not be iterable in the unified value, and the
	// positions of the data are the operator's.
	p := l.compile(data, revision)
	replaced := map[string]bool{}
	var notAllowed []string
	for _, e := range l.replaceErrs {
		replaced[e.Path] = true
		if strings.HasPrefix(e.Msg, "field not allowed") {
			notAllowed = append(notAllowed, e.Path)
		}
	}
	kept := l.errs[:0]
	for _, e := range l.errs {
		if !replaced[e.Path] && !under(e.Path, notAllowed) {
			kept = append(kept, e)
		}
	}
	l.errs = append(kept, l.replaceErrs...)
	if len(l.errs) > 0 {
		return nil
	}
	return p
}

// addCUEErrors converts CUE errors to Errors. data, when it exists, locates
// errors whose positions are all in the schema.
func (l *loader) addCUEErrors(err error, data cue.Value) {
	type item struct {
		path   []string
		msg    string
		pos    token.Pos
		header bool // "N errors in empty disjunction:"
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
	for i, it := range items {
		if drop[i] {
			continue
		}
		l.addAt(it.pos, cuePathString(it.path), "%s", it.msg)
	}
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

// checkClosed reports every regular field of data that schema does not
// allow, recursing into structs and lists of structs.
func (l *loader) checkClosed(data, schema cue.Value, path string) {
	switch data.IncompleteKind() {
	case cue.StructKind:
		it, err := data.Fields()
		if err != nil {
			return
		}
		for it.Next() {
			sel := it.Selector()
			if !sel.IsString() {
				continue
			}
			p := joinPath(path, sel.Unquoted())
			if !schema.Allows(sel) {
				l.replaceErrs = append(l.replaceErrs, l.errorAt(it.Value().Pos(), p, "field not allowed%s", suggest(sel.Unquoted(), schema)))
				continue
			}
			sub := lookupField(schema, sel.Unquoted())
			if sub.Exists() {
				l.checkClosed(it.Value(), sub, p)
			}
		}
	case cue.ListKind:
		elem := schema.LookupPath(cue.MakePath(cue.AnyIndex))
		if !elem.Exists() || elem.IncompleteKind()&cue.StructKind == 0 {
			return
		}
		it, err := data.List()
		if err != nil {
			return
		}
		for i := 0; it.Next(); i++ {
			l.checkClosed(it.Value(), elem, fmt.Sprintf("%s[%d]", path, i))
		}
	}
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

func (l *loader) errorAt(pos token.Pos, path, format string, args ...any) *Error {
	p := pos.Position()
	return &Error{File: p.Filename, Line: p.Line, Col: p.Column, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// goErr records a problem found by a Go check.
func (l *loader) goErr(v cue.Value, path, format string, args ...any) {
	l.replaceErrs = append(l.replaceErrs, l.errorAt(v.Pos(), path, format, args...))
}

// str returns v as a string when it is a concrete string.
func str(v cue.Value) (string, bool) {
	s, err := v.String()
	return s, err == nil
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

// compile runs the checks CUE cannot do and builds the Policy from the
// data value v (the policy files before unification with the schema). It records problems in l.replaceErrs and is tolerant of
// values that CUE already reported as wrong.
func (l *loader) compile(v cue.Value, revision string) *Policy {
	p := &Policy{revision: revision, certValidity: DefaultCertValidity}

	names := map[string]int{}
	pairs := map[string]int{}
	for i, e := range elems(field(v, "trusted_enrollment")) {
		base := fmt.Sprintf("trusted_enrollment[%d]", i)
		t := trustedRule{rule: base}
		if nv := field(e, "name"); nv.Exists() {
			if name, ok := str(nv); ok {
				if j, dup := names[name]; dup {
					l.goErr(nv, base+".name", "name %q is already used by trusted_enrollment[%d]", name, j)
				}
				names[name] = i
				t.name = name
				t.rule = fmt.Sprintf("trusted_enrollment %q", name)
			}
		}
		pv := field(e, "pattern")
		if s, ok := str(pv); ok {
			g, err := CompileGlob(s)
			if err != nil {
				l.goErr(pv, base+".pattern", "%v", err)
			}
			t.glob = g
		}
		seen := map[netip.Prefix]bool{}
		cidrs := field(e, "cidrs")
		if cidrs.Exists() && cidrs.IncompleteKind() == cue.ListKind && len(elems(cidrs)) == 0 {
			l.replaceErrs = append(l.replaceErrs, l.errorAt(cidrs.Pos(), base+".cidrs", "cidrs is empty: list at least one source network"))
		}
		for j, cv := range elems(cidrs) {
			cpath := fmt.Sprintf("%s.cidrs[%d]", base, j)
			s, ok := str(cv)
			if !ok {
				continue
			}
			pfx, err := netip.ParsePrefix(s)
			switch {
			case err != nil:
				msg := err.Error()
				if _, after, ok := strings.Cut(msg, "): "); ok {
					msg = after // drop netip.ParsePrefix("…"), which repeats the value
				}
				l.goErr(cv, cpath, "invalid CIDR %q: %s", s, msg)
				continue
			case pfx.Addr().Zone() != "":
				l.goErr(cv, cpath, "CIDR %q has a zone", s)
				continue
			case pfx.Addr().Is4In6():
				l.goErr(cv, cpath, "CIDR %q is an IPv4-mapped IPv6 network: write %s", s, netip.PrefixFrom(pfx.Addr().Unmap(), max(pfx.Bits()-96, 0)).Masked())
				continue
			case pfx != pfx.Masked():
				l.goErr(cv, cpath, "CIDR %s has host bits set: write %s", s, pfx.Masked())
				continue
			case seen[pfx]:
				l.goErr(cv, cpath, "CIDR %s is listed twice", s)
				continue
			}
			seen[pfx] = true
			key := t.glob.String() + " " + pfx.String()
			if k, dup := pairs[key]; dup && k != i {
				l.goErr(cv, cpath, "pattern %q with CIDR %s is already in trusted_enrollment[%d]", t.glob.String(), pfx, k)
			}
			pairs[key] = i
			t.prefixes = append(t.prefixes, pfx)
		}
		p.trusted = append(p.trusted, t)
	}

	approved := map[string]int{}
	for i, av := range elems(field(v, "approved")) {
		s, ok := str(av)
		if !ok {
			continue
		}
		apath := fmt.Sprintf("approved[%d]", i)
		g, err := CompileGlob(s)
		if err != nil {
			l.goErr(av, apath, "%v", err)
			continue
		}
		if j, dup := approved[g.String()]; dup {
			l.goErr(av, apath, "pattern %q is already at approved[%d]", g.String(), j)
			continue
		}
		approved[g.String()] = i
		p.approved = append(p.approved, approvedRule{glob: g, rule: fmt.Sprintf("approved %q", g.String())})
	}

	if cv := field(v, "cert_validity"); cv.Exists() {
		if s, ok := str(cv); ok {
			d, err := time.ParseDuration(s)
			switch {
			case err != nil:
				l.goErr(cv, "cert_validity", "invalid duration %q: %s", s, durationHint)
			case d < MinCertValidity || d > MaxCertValidity:
				l.goErr(cv, "cert_validity", "%s is out of bounds: cert_validity must be between 1h and 87600h", s)
			default:
				p.certValidity = d
			}
		}
	}
	if tv := v.LookupPath(cue.ParsePath("tokens.max_ttl")); tv.Exists() {
		if s, ok := str(tv); ok {
			d, err := time.ParseDuration(s)
			switch {
			case err != nil:
				l.goErr(tv, "tokens.max_ttl", "invalid duration %q: %s", s, durationHint)
			case d <= 0 || d > MaxTokenTTL:
				l.goErr(tv, "tokens.max_ttl", "%s is out of bounds: tokens.max_ttl must be more than 0s and at most 8760h", s)
			default:
				p.tokenMaxTTL = d
			}
		}
	}

	p.revokedHosts = map[string]int{}
	uuids := map[string]int{}
	for i, rv := range elems(field(v, "revocations")) {
		base := fmt.Sprintf("revocations[%d]", i)
		var r Revocation
		uv, hv := field(rv, "uuid"), field(rv, "hostname")
		if !uv.Exists() && !hv.Exists() {
			l.goErr(rv, base, "a revocation needs a uuid or a hostname")
		}
		if s, ok := str(uv); ok {
			if !uuidRE.MatchString(s) {
				l.goErr(uv, base+".uuid", "%q is not a UUID in canonical lower-case form (0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11)", s)
			}
			if j, dup := uuids[s]; dup {
				l.goErr(uv, base+".uuid", "uuid %s is already revoked by revocations[%d]", s, j)
			}
			uuids[s] = i
			r.UUID = s
		}
		if s, ok := str(hv); ok {
			h, err := NormalizeHostname(s)
			if err != nil {
				l.goErr(hv, base+".hostname", "%v", err)
			} else {
				if j, dup := p.revokedHosts[h]; dup {
					l.goErr(hv, base+".hostname", "hostname %s is already revoked by revocations[%d]", h, j)
				} else {
					p.revokedHosts[h] = i
				}
				r.Hostname = h
			}
		}
		r.Reason, _ = str(field(rv, "reason"))
		p.revocations = append(p.revocations, r)
	}

	for i, tv := range elems(field(v, "tests")) {
		base := fmt.Sprintf("tests[%d]", i)
		tc := testCase{index: i}
		tc.pos = tv.Pos().Position()
		tc.hostname, _ = str(field(tv, "hostname"))
		tc.expect, _ = str(field(tv, "expect"))
		tc.token, _ = field(tv, "token").Bool()
		iv := field(tv, "ip")
		if s, ok := str(iv); ok {
			tc.ipText = s
			a, err := netip.ParseAddr(s)
			if err != nil {
				l.goErr(iv, base+".ip", "%q is not an IP address", s)
			}
			tc.ip = a
		}
		p.tests = append(p.tests, tc)
	}
	p.buildIndexes()
	return p
}
