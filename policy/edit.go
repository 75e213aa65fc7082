package policy

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
)

// This file is the edit API behind "vigocli approved add" and its siblings:
// small changes to a policy's files, made through CUE's parser and
// formatter. The edited entry is located in the syntax tree and only its
// bytes change: every other byte of every file, comments and formatting
// included, stays as it was. Editing is pure (files in, files out) and
// checks only what it must to find its way; whether the result is a valid
// policy is for the caller to check, as vet does, before writing anything.

// EditResult is the outcome of an edit.
type EditResult struct {
	// Files are all the policy files after the edit, sorted by name: the
	// given ones, the edited ones replaced, and any new one.
	Files []File
	// Changed names the files whose content changed, sorted; Created names
	// those among them that are new.
	Changed []string
	Created []string
	// Where says where the edit was made, for people: "the list approved
	// at approved.cue:4:11".
	Where string
	// Summary says what changed in a few words, fit for a commit subject:
	// "approve *.stage.example.com".
	Summary string
	// Details has one line per change, fit for a commit body.
	Details []string
}

// ErrNoChange is returned (wrapped) by an edit that would change nothing,
// such as adding a pattern that is already approved.
var ErrNoChange = errors.New("nothing to change")

// TrustedEdit is a trusted_enrollment entry to add with [AddTrusted].
type TrustedEdit struct {
	Name    string
	Pattern string
	CIDRs   []string
	// Replace is who may replace an active envoy of a matching hostname
	// ("any", "token" or "proof"); empty leaves it out (the default, "any").
	Replace string
}

// checkReplace checks a replace value given to an edit: empty (left out)
// or one of the values of #Replace.
func checkReplace(op, replace string) error {
	switch replace {
	case "", "any", "token", "proof":
		return nil
	}
	return fmt.Errorf("%s: replace %q: want any, token or proof", op, replace)
}

// approvedPattern returns the pattern of an entry of approved: a string, or
// the pattern field of a {pattern, replace} struct.
func approvedPattern(e ast.Expr) (string, bool) {
	if v, ok := stringLit(e); ok {
		return v, true
	}
	return structString(e, "pattern")
}

// Settings that [SetSetting] can change, by the names vigocli uses.
const (
	SettingCertValidity = "cert-validity"
	SettingTokenMaxTTL  = "token-max-ttl"
)

// AddApproved appends patterns to the list approved. Each pattern is
// checked and normalised (lower case, no trailing dot); one that is
// already approved is an error.
func AddApproved(files []File, replace string, patterns ...string) (*EditResult, error) {
	if len(patterns) == 0 {
		return nil, errors.New("approved add: no pattern given")
	}
	if err := checkReplace("approved add", replace); err != nil {
		return nil, err
	}
	var norm []string
	for _, p := range patterns {
		g, err := CompileGlob(p)
		if err != nil {
			return nil, fmt.Errorf("approved add: %w", err)
		}
		if slices.Contains(norm, g.String()) {
			return nil, fmt.Errorf("approved add: pattern %s is given twice", g)
		}
		norm = append(norm, g.String())
	}
	s, err := newEditSet(files)
	if err != nil {
		return nil, err
	}
	var where string
	for _, p := range norm {
		l, err := s.list("approved", "approved.cue")
		if err != nil {
			return nil, err
		}
		for i, el := range l.elems() {
			if v, ok := approvedPattern(el); ok {
				if g, err := CompileGlob(v); err == nil && g.String() == p {
					return nil, fmt.Errorf("approved add: pattern %s is already approved at %s (approved[%d]): %w", p, posText(el.Pos()), i, ErrNoChange)
				}
			}
		}
		where = l.where()
		entry := func(string) (string, error) { return cueString(p), nil }
		if replace != "" {
			fields := []kv{{"pattern", ast.NewString(p)}, {"replace", ast.NewString(replace)}}
			entry = func(indent string) (string, error) { return structText(fields, false, indent) }
		}
		if err := s.appendElem(l, entry); err != nil {
			return nil, err
		}
	}
	details := prefixed("approved: + ", norm)
	if replace != "" {
		for i := range details {
			details[i] += " (replace: " + replace + ")"
		}
	}
	return s.result(where, "approve "+strings.Join(norm, ", "), details)
}

// RemoveApproved removes patterns from the list approved. A pattern is
// found however it is written (case, trailing dot); one that is not in the
// list is an error.
func RemoveApproved(files []File, patterns ...string) (*EditResult, error) {
	if len(patterns) == 0 {
		return nil, errors.New("approved remove: no pattern given")
	}
	s, err := newEditSet(files)
	if err != nil {
		return nil, err
	}
	var where string
	var norm []string
	for _, p := range patterns {
		g, err := CompileGlob(p)
		if err != nil {
			return nil, fmt.Errorf("approved remove: %w", err)
		}
		l, err := s.list("approved", "")
		if err != nil {
			return nil, err
		}
		idx := -1
		for i, el := range l.elems() {
			if v, ok := approvedPattern(el); ok {
				if h, err := CompileGlob(v); err == nil && h.String() == g.String() {
					idx = i
					break
				}
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("approved remove: pattern %s is not in %s%s: %w", g, l.where(), l.opaqueNote(), ErrNoChange)
		}
		where = l.where()
		if err := s.removeElem(l, idx); err != nil {
			return nil, err
		}
		norm = append(norm, g.String())
	}
	return s.result(where, "stop approving "+strings.Join(norm, ", "), prefixed("approved: - ", norm))
}

// AddTrusted appends an entry to trusted_enrollment. The name must be new,
// the pattern a valid glob, and each CIDR a network written with its
// network address.
func AddTrusted(files []File, e TrustedEdit) (*EditResult, error) {
	if e.Name == "" {
		return nil, errors.New("trusted add: a name is required: it names the rule in decisions and audit logs, and in trusted remove")
	}
	g, err := CompileGlob(e.Pattern)
	if err != nil {
		return nil, fmt.Errorf("trusted add: %w", err)
	}
	if len(e.CIDRs) == 0 {
		return nil, errors.New("trusted add: at least one CIDR is required")
	}
	if err := checkReplace("trusted add", e.Replace); err != nil {
		return nil, err
	}
	var cidrs []string
	for _, c := range e.CIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		switch {
		case err != nil:
			return nil, fmt.Errorf("trusted add: %q is not a network in CIDR notation, such as 10.0.0.0/8", c)
		case p != p.Masked():
			return nil, fmt.Errorf("trusted add: CIDR %s has host bits set: write %s", c, p.Masked())
		}
		cidrs = append(cidrs, p.String())
	}
	s, err := newEditSet(files)
	if err != nil {
		return nil, err
	}
	l, err := s.list("trusted_enrollment", "trusted.cue")
	if err != nil {
		return nil, err
	}
	for i, el := range l.elems() {
		if n, ok := structString(el, "name"); ok && n == e.Name {
			return nil, fmt.Errorf("trusted add: an entry named %q is already at %s (trusted_enrollment[%d]): %w", e.Name, posText(el.Pos()), i, ErrNoChange)
		}
	}
	fields := []kv{{"name", ast.NewString(e.Name)}, {"pattern", ast.NewString(g.String())}, {"cidrs", strList(cidrs)}}
	if e.Replace != "" {
		fields = append(fields, kv{"replace", ast.NewString(e.Replace)})
	}
	if err := s.appendElem(l, func(indent string) (string, error) { return structText(fields, l.multiline(), indent) }); err != nil {
		return nil, err
	}
	detail := fmt.Sprintf("trusted_enrollment: + %q pattern %s, cidrs %s", e.Name, g, strings.Join(cidrs, " "))
	if e.Replace != "" {
		detail += ", replace: " + e.Replace
	}
	return s.result(l.where(), fmt.Sprintf("trust %s from %s (%s)", g, strings.Join(cidrs, ", "), e.Name), []string{detail})
}

// RemoveTrusted removes the trusted_enrollment entry named name.
func RemoveTrusted(files []File, name string) (*EditResult, error) {
	if name == "" {
		return nil, errors.New("trusted remove: a name is required")
	}
	s, err := newEditSet(files)
	if err != nil {
		return nil, err
	}
	l, err := s.list("trusted_enrollment", "")
	if err != nil {
		return nil, err
	}
	idx := -1
	var names []string
	for i, el := range l.elems() {
		if n, ok := structString(el, "name"); ok {
			if n == name {
				idx = i
				break
			}
			names = append(names, strconv.Quote(n))
		}
	}
	if idx < 0 {
		known := ""
		if len(names) > 0 {
			known = " (named entries: " + strings.Join(names, ", ") + ")"
		}
		return nil, fmt.Errorf("trusted remove: no entry named %q in %s%s%s: %w", name, l.where(), known, l.opaqueNote(), ErrNoChange)
	}
	pattern, _ := structString(l.elems()[idx], "pattern")
	if err := s.removeElem(l, idx); err != nil {
		return nil, err
	}
	return s.result(l.where(), fmt.Sprintf("stop trusting %s (%s)", pattern, name),
		[]string{fmt.Sprintf("trusted_enrollment: - %q pattern %s", name, pattern)})
}

// AddRevocation appends an entry to revocations: a uuid, a hostname or
// both, and a reason. A uuid or hostname that is already revoked is an
// error.
func AddRevocation(files []File, r Revocation) (*EditResult, error) {
	if r.UUID == "" && r.Hostname == "" {
		return nil, errors.New("revoke: a hostname or a uuid is required")
	}
	if strings.TrimSpace(r.Reason) == "" {
		return nil, errors.New("revoke: a reason is required: it is shown in audit logs and to operators")
	}
	if r.UUID != "" && !uuidRE.MatchString(r.UUID) {
		return nil, fmt.Errorf("revoke: %q is not a UUID in canonical lower-case form (0b5b6a4e-6a51-4c35-9d1e-3f0f3c1e7a11)", r.UUID)
	}
	if r.Hostname != "" {
		if strings.ContainsAny(r.Hostname, "*?") {
			return nil, fmt.Errorf("revoke: %q is a pattern: a revocation names one exact hostname", r.Hostname)
		}
		h, err := NormalizeHostname(r.Hostname)
		if err != nil {
			return nil, fmt.Errorf("revoke: %w", err)
		}
		r.Hostname = h
	}
	s, err := newEditSet(files)
	if err != nil {
		return nil, err
	}
	l, err := s.list("revocations", "revocations.cue")
	if err != nil {
		return nil, err
	}
	if i, el := findRevocation(l, r.UUID, r.Hostname); el != nil {
		return nil, fmt.Errorf("revoke: %s is already revoked at %s (revocations[%d]): %w", r.Label(), posText(el.Pos()), i, ErrNoChange)
	}
	var fields []kv
	if r.UUID != "" {
		fields = append(fields, kv{"uuid", ast.NewString(r.UUID)})
	}
	if r.Hostname != "" {
		fields = append(fields, kv{"hostname", ast.NewString(r.Hostname)})
	}
	fields = append(fields, kv{"reason", ast.NewString(r.Reason)})
	if err := s.appendElem(l, func(indent string) (string, error) { return structText(fields, l.multiline(), indent) }); err != nil {
		return nil, err
	}
	return s.result(l.where(), "revoke "+r.Label(), []string{fmt.Sprintf("revocations: + %s: %s", r.Label(), r.Reason)})
}

// RemoveRevocation removes the revocation of uuid or hostname (one of them
// is given). An entry that names both is removed whole, and the result
// says so.
func RemoveRevocation(files []File, uuid, hostname string) (*EditResult, error) {
	if (uuid == "") == (hostname == "") {
		return nil, errors.New("unrevoke: give a hostname or a uuid (one of them)")
	}
	if hostname != "" {
		h, err := NormalizeHostname(hostname)
		if err != nil {
			return nil, fmt.Errorf("unrevoke: %w", err)
		}
		hostname = h
	}
	s, err := newEditSet(files)
	if err != nil {
		return nil, err
	}
	l, err := s.list("revocations", "")
	if err != nil {
		return nil, err
	}
	want := Revocation{UUID: uuid, Hostname: hostname}
	idx, el := findRevocation(l, uuid, hostname)
	if el == nil {
		return nil, fmt.Errorf("unrevoke: %s is not revoked in %s%s: %w", want.Label(), l.where(), l.opaqueNote(), ErrNoChange)
	}
	old := Revocation{}
	old.UUID, _ = structString(el, "uuid")
	old.Hostname, _ = structString(el, "hostname")
	old.Reason, _ = structString(el, "reason")
	if err := s.removeElem(l, idx); err != nil {
		return nil, err
	}
	details := []string{fmt.Sprintf("revocations: - %s: %s", old.Label(), old.Reason)}
	if (old.UUID != "") && (old.Hostname != "") {
		details = append(details, fmt.Sprintf("the entry named both uuid %s and hostname %s: both are no longer revoked by policy", old.UUID, old.Hostname))
	}
	return s.result(l.where(), "unrevoke "+want.Label(), details)
}

// SetSetting sets a setting of the policy: SettingCertValidity
// (cert_validity) or SettingTokenMaxTTL (tokens.max_ttl), to a Go
// duration.
func SetSetting(files []File, name, value string) (*EditResult, error) {
	d, err := time.ParseDuration(value)
	if err != nil {
		return nil, fmt.Errorf("set %s: invalid duration %q: %s", name, value, durationHint)
	}
	s, err := newEditSet(files)
	if err != nil {
		return nil, err
	}
	var path []string
	switch name {
	case SettingCertValidity:
		if d < MinCertValidity || d > MaxCertValidity {
			return nil, fmt.Errorf("set %s: %s is out of bounds: cert_validity must be between 1h and 87600h", name, value)
		}
		path = []string{"cert_validity"}
	case SettingTokenMaxTTL:
		if d <= 0 || d > MaxTokenTTL {
			return nil, fmt.Errorf("set %s: %s is out of bounds: tokens.max_ttl must be more than 0s and at most 8760h", name, value)
		}
		path = []string{"tokens", "max_ttl"}
	default:
		return nil, fmt.Errorf("set: unknown setting %q: the settings are %s and %s", name, SettingCertValidity, SettingTokenMaxTTL)
	}
	where, old, err := s.setString(path, value, "settings.cue")
	if err != nil {
		return nil, err
	}
	key := strings.Join(path, ".")
	detail := fmt.Sprintf("%s: %s -> %s", key, old, value)
	if old == "" {
		detail = fmt.Sprintf("%s: set to %s", key, value)
	}
	return s.result(where, fmt.Sprintf("set %s to %s", key, value), []string{detail})
}

// ---- the machinery ----

// editSet is the policy files being edited. Every change re-parses the
// file it changed, so that the next change sees the new positions.
type editSet struct {
	files   []*editFile
	changed map[string]bool
	created map[string]bool
}

type editFile struct {
	name string
	src  []byte
	ast  *ast.File
}

func newEditSet(files []File) (*editSet, error) {
	s := &editSet{changed: map[string]bool{}, created: map[string]bool{}}
	for _, f := range files {
		ef := &editFile{name: f.Name, src: f.Data}
		if err := ef.parse(); err != nil {
			return nil, err
		}
		s.files = append(s.files, ef)
	}
	slices.SortFunc(s.files, func(a, b *editFile) int { return strings.Compare(a.name, b.name) })
	return s, nil
}

func (f *editFile) parse() error {
	a, err := parser.ParseFile(f.name, f.src, parser.ParseComments)
	if err != nil {
		return fmt.Errorf("%s does not parse, so it cannot be edited (vigocli policy vet shows why): %w", f.name, err)
	}
	f.ast = a
	return nil
}

// replace sets the new content of f and parses it again.
func (s *editSet) replace(f *editFile, src []byte) error {
	f.src = src
	s.changed[f.name] = true
	if err := f.parse(); err != nil {
		return fmt.Errorf("internal error: the edit made %s unparsable: %w", f.name, err)
	}
	return nil
}

func (s *editSet) file(name string) *editFile {
	for _, f := range s.files {
		if f.name == name {
			return f
		}
	}
	return nil
}

func (s *editSet) result(where, summary string, details []string) (*EditResult, error) {
	r := &EditResult{Where: where, Summary: summary, Details: details}
	for _, f := range s.files {
		r.Files = append(r.Files, File{Name: f.name, Data: f.src})
		if s.changed[f.name] {
			r.Changed = append(r.Changed, f.name)
		}
		if s.created[f.name] {
			r.Created = append(r.Created, f.name)
		}
	}
	return r, nil
}

// decl is a top-level declaration of a field.
type decl struct {
	file  *editFile
	field *ast.Field
}

// decls returns the top-level declarations of the field label, in file
// name order.
func (s *editSet) decls(label string) []decl {
	var out []decl
	for _, f := range s.files {
		for _, d := range f.ast.Decls {
			if fd, ok := d.(*ast.Field); ok && labelName(fd.Label) == label {
				out = append(out, decl{f, fd})
			}
		}
	}
	return out
}

func labelName(l ast.Label) string {
	switch x := l.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.BasicLit:
		if x.Kind == token.STRING {
			if s, err := strconv.Unquote(x.Value); err == nil {
				return s
			}
		}
	}
	return ""
}

// listRef is the one list literal that holds a top-level list field, or,
// when no file declares the field, the file where a new declaration goes.
type listRef struct {
	label  string
	file   *editFile
	lit    *ast.ListLit // nil when the field is not declared
	opaque int          // elements that are not literals (references, calls)
}

// list finds the declaration of the list field label that an edit can
// change: exactly one top-level declaration, written as a list literal
// without comprehensions. With no declaration, newFile ("" to refuse)
// names the file where one is created: an existing file of that name gets
// the field at its end, else the file is created.
func (s *editSet) list(label, newFile string) (*listRef, error) {
	ds := s.decls(label)
	switch {
	case len(ds) == 0 && newFile == "":
		return nil, fmt.Errorf("no policy file declares %s: %w", label, ErrNoChange)
	case len(ds) == 0:
		f := s.file(newFile)
		if f == nil {
			f = &editFile{name: newFile, src: []byte("package policy\n")}
			if err := f.parse(); err != nil {
				return nil, err
			}
			s.files = append(s.files, f)
			slices.SortFunc(s.files, func(a, b *editFile) int { return strings.Compare(a.name, b.name) })
			s.created[newFile] = true
		}
		src := append(bytes.TrimRight(slices.Clone(f.src), "\n"), "\n\n"+label+": []\n"...)
		if err := s.replace(f, src); err != nil {
			return nil, err
		}
		return s.list(label, "")
	case len(ds) > 1:
		var at []string
		for _, d := range ds {
			at = append(at, posText(d.field.Pos()))
		}
		return nil, fmt.Errorf("%s is declared %d times (%s): vigocli edits a list written out in one place; keep one declaration, or edit the lists by hand",
			label, len(ds), strings.Join(at, ", "))
	}
	d := ds[0]
	at := posText(d.field.Value.Pos())
	lit, ok := d.field.Value.(*ast.ListLit)
	if !ok || d.field.Constraint != token.ILLEGAL {
		return nil, fmt.Errorf("%s at %s is not a list written out as [...] but an expression that builds it: vigocli edits only a plain list; edit the lists it is built from by hand (vigocli policy vet checks the result)",
			label, at)
	}
	l := &listRef{label: label, file: d.file, lit: lit}
	for _, el := range lit.Elts {
		switch el.(type) {
		case *ast.Comprehension:
			return nil, fmt.Errorf("%s at %s is built by a comprehension (for ... in ...): vigocli edits only a plain list; edit the values the comprehension reads by hand (vigocli policy vet checks the result)",
				label, at)
		case *ast.Ellipsis:
			return nil, fmt.Errorf("%s at %s is an open list ([..., ...]): vigocli edits only a plain list; edit it by hand", label, at)
		case *ast.BasicLit, *ast.StructLit:
		default:
			l.opaque++
		}
	}
	return l, nil
}

func (l *listRef) elems() []ast.Expr { return l.lit.Elts }

// where names the list for people: "the list approved at approved.cue:4:11".
func (l *listRef) where() string {
	return fmt.Sprintf("the list %s at %s", l.label, posText(l.lit.Pos()))
}

// opaqueNote says that some elements could not be read, when so.
func (l *listRef) opaqueNote() string {
	if l.opaque == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d of its entries are expressions that vigocli cannot read; edit those by hand)", l.opaque)
}

// multiline reports whether the list is written over several lines.
func (l *listRef) multiline() bool {
	return l.lit.Lbrack.Line() != l.lit.Rbrack.Line()
}

// appendElem appends an element to l, in the list's layout: on a line of
// its own, indented like the last element, in a multi-line list; after a
// comma otherwise. text returns the element's text given the indentation
// of its first line (for the lines after it).
func (s *editSet) appendElem(l *listRef, text func(indent string) (string, error)) error {
	src := l.file.src
	lb, rb := l.lit.Lbrack.Offset(), l.lit.Rbrack.Offset()
	n := len(l.lit.Elts)
	indent := ""
	switch {
	case l.multiline() && n == 0:
		indent = indentAt(src, lb) + "\t"
	case l.multiline():
		indent = indentAt(src, l.lit.Elts[n-1].Pos().Offset())
	}
	elem, err := text(indent)
	if err != nil {
		return err
	}
	var out []byte
	switch {
	case !l.multiline() && n == 0:
		out = splice(src, rb, rb, elem)
	case !l.multiline():
		end := l.lit.Elts[n-1].End().Offset()
		out = splice(src, end, end, ", "+elem)
	case n == 0:
		at := lineStart(src, rb)
		out = splice(src, at, at, indent+elem+",\n")
	default:
		last := l.lit.Elts[n-1]
		end := last.End().Offset()
		comma := nextIsComma(src, end)
		if last.End().Line() == l.lit.Rbrack.Line() {
			// The closing bracket follows the last element on its line.
			ins := "\n" + indent + elem + ",\n" + indentAt(src, lb)
			if !comma {
				ins = "," + ins
			}
			out = splice(src, rb, rb, ins)
			break
		}
		at := lineEnd(src, end)
		ins := indent + elem + ",\n"
		if at == len(src) || src[at-1] != '\n' {
			ins = "\n" + ins
		}
		out = splice(src, at, at, ins)
		if !comma {
			out = splice(out, end, end, ",")
		}
	}
	return s.replace(l.file, out)
}

// removeElem removes element i of l: its whole lines when it has lines of
// its own, else the element and its separating comma. A comment directly
// above the element goes with it when the element is the last of the
// group the comment heads (the line after it is blank, a comment or the
// closing bracket).
func (s *editSet) removeElem(l *listRef, i int) error {
	src := l.file.src
	els := l.lit.Elts
	el := els[i]
	start, end := el.Pos().Offset(), el.End().Offset()
	if l.multiline() && ownsLines(src, start, end, l.lit.Rbrack.Offset()) {
		from, to := lineStart(src, start), lineEnd(src, end)
		if c := commentAbove(src, from); c < from && nextLineIsBreak(src, to, l.lit.Rbrack.Offset()) {
			// The comment heads a group of one: this element.
			from = c
		}
		return s.replace(l.file, splice(src, from, to, ""))
	}
	switch {
	case len(els) == 1:
		return s.replace(l.file, splice(src, l.lit.Lbrack.Offset()+1, l.lit.Rbrack.Offset(), ""))
	case i < len(els)-1:
		return s.replace(l.file, splice(src, start, els[i+1].Pos().Offset(), ""))
	default:
		return s.replace(l.file, splice(src, els[i-1].End().Offset(), end, ""))
	}
}

// setString sets the string field at path (a top-level field, or a field
// of a top-level struct) to value. A missing field is added: to the struct
// that should hold it, or at the end of newFile. It returns where, and the
// old value ("" when there was none).
func (s *editSet) setString(path []string, value, newFile string) (where, old string, err error) {
	key := strings.Join(path, ".")
	ds := s.decls(path[0])
	if len(ds) > 1 {
		var at []string
		for _, d := range ds {
			at = append(at, posText(d.field.Pos()))
		}
		return "", "", fmt.Errorf("%s is declared %d times (%s): keep one declaration, or edit it by hand", path[0], len(ds), strings.Join(at, ", "))
	}
	quoted := cueString(value)
	if len(ds) == 0 {
		f := s.file(newFile)
		if f == nil {
			f = &editFile{name: newFile, src: []byte("package policy\n")}
			s.files = append(s.files, f)
			slices.SortFunc(s.files, func(a, b *editFile) int { return strings.Compare(a.name, b.name) })
			s.created[newFile] = true
		}
		text := path[0] + ": " + quoted
		if len(path) == 2 {
			text = path[0] + ": {\n\t" + path[1] + ": " + quoted + "\n}"
		}
		src := append(bytes.TrimRight(slices.Clone(f.src), "\n"), "\n\n"+text+"\n"...)
		if err := s.replace(f, src); err != nil {
			return "", "", err
		}
		return fmt.Sprintf("%s, added to %s", key, f.name), "", nil
	}
	d := ds[0]
	val := d.field.Value
	if len(path) == 2 {
		st, ok := val.(*ast.StructLit)
		if !ok {
			return "", "", fmt.Errorf("%s at %s is not a struct written out as {...}: edit %s by hand", path[0], posText(val.Pos()), key)
		}
		var inner *ast.Field
		for _, el := range st.Elts {
			if fd, ok := el.(*ast.Field); ok && labelName(fd.Label) == path[1] {
				if inner != nil {
					return "", "", fmt.Errorf("%s is declared twice in %s: edit it by hand", key, posText(st.Pos()))
				}
				inner = fd
			}
		}
		if inner == nil {
			src := d.file.src
			if st.Lbrace.Line() == st.Rbrace.Line() {
				at := st.Rbrace.Offset()
				sep := ", "
				if len(st.Elts) == 0 {
					sep = ""
				}
				return s.finishSet(d.file, splice(src, at, at, sep+path[1]+": "+quoted), key)
			}
			indent := indentAt(src, st.Lbrace.Offset()) + "\t"
			at := lineStart(src, st.Rbrace.Offset())
			return s.finishSet(d.file, splice(src, at, at, indent+path[1]+": "+quoted+"\n"), key)
		}
		val = inner.Value
	}
	lit, ok := val.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", "", fmt.Errorf("%s at %s is not a string written out (such as \"720h\") but an expression: edit it by hand", key, posText(val.Pos()))
	}
	old, err = strconv.Unquote(lit.Value)
	if err != nil {
		return "", "", fmt.Errorf("%s at %s is not a plain string: edit it by hand", key, posText(val.Pos()))
	}
	if old == value {
		return "", "", fmt.Errorf("%s is already %s at %s: %w", key, value, posText(val.Pos()), ErrNoChange)
	}
	at := posText(lit.Pos())
	if err := s.replace(d.file, splice(d.file.src, lit.Pos().Offset(), lit.End().Offset(), quoted)); err != nil {
		return "", "", err
	}
	return fmt.Sprintf("%s at %s", key, at), old, nil
}

func (s *editSet) finishSet(f *editFile, src []byte, key string) (string, string, error) {
	if err := s.replace(f, src); err != nil {
		return "", "", err
	}
	return fmt.Sprintf("%s, added in %s", key, f.name), "", nil
}

// findRevocation returns the first entry of l that names uuid or hostname
// (those given), and its index.
func findRevocation(l *listRef, uuid, hostname string) (int, ast.Expr) {
	for i, el := range l.elems() {
		if u, ok := structString(el, "uuid"); ok && uuid != "" && u == uuid {
			return i, el
		}
		if h, ok := structString(el, "hostname"); ok && hostname != "" {
			if n, err := NormalizeHostname(h); err == nil && n == hostname {
				return i, el
			}
		}
	}
	return -1, nil
}

// stringLit returns the value of a string literal.
func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// structString returns the string literal of the field name of a struct
// literal.
func structString(e ast.Expr, name string) (string, bool) {
	st, ok := e.(*ast.StructLit)
	if !ok {
		return "", false
	}
	for _, el := range st.Elts {
		if fd, ok := el.(*ast.Field); ok && labelName(fd.Label) == name {
			return stringLit(fd.Value)
		}
	}
	return "", false
}

type kv struct {
	key   string
	value ast.Expr
}

// structText writes a struct literal as cue fmt would: one field a line,
// values aligned, the lines after the first indented by indent; or on one
// line.
func structText(fields []kv, multiline bool, indent string) (string, error) {
	st := &ast.StructLit{}
	for _, f := range fields {
		fd := &ast.Field{Label: ast.NewIdent(f.key), Value: f.value}
		if multiline {
			ast.SetRelPos(fd, token.Newline)
		}
		st.Elts = append(st.Elts, fd)
	}
	if !multiline {
		parts := make([]string, len(fields))
		for i, f := range st.Elts {
			b, err := format.Node(f)
			if err != nil {
				return "", fmt.Errorf("format %s: %w", fields[i].key, err)
			}
			parts[i] = string(b)
		}
		return "{" + strings.Join(parts, ", ") + "}", nil
	}
	b, err := format.Node(st)
	if err != nil {
		return "", fmt.Errorf("format entry: %w", err)
	}
	return strings.ReplaceAll(string(b), "\n", "\n"+indent), nil
}

func strList(vs []string) *ast.ListLit {
	l := &ast.ListLit{}
	for _, v := range vs {
		l.Elts = append(l.Elts, ast.NewString(v))
	}
	return l
}

func prefixed(prefix string, vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = prefix + v
	}
	return out
}

// cueString writes s as a CUE string literal.
func cueString(s string) string {
	b, err := format.Node(ast.NewString(s))
	if err != nil {
		return strconv.Quote(s) // a basic literal always formats
	}
	return string(b)
}

// posText formats a position as file:line:col.
func posText(p token.Pos) string {
	return fmt.Sprintf("%s:%d:%d", p.Filename(), p.Line(), p.Column())
}

// ---- text helpers: byte offsets in a file ----

func splice(src []byte, from, to int, text string) []byte {
	out := make([]byte, 0, len(src)-(to-from)+len(text))
	out = append(out, src[:from]...)
	out = append(out, text...)
	return append(out, src[to:]...)
}

// lineStart returns the offset of the start of the line holding off.
func lineStart(src []byte, off int) int {
	return bytes.LastIndexByte(src[:off], '\n') + 1
}

// lineEnd returns the offset just after the end of the line holding off
// (after its newline).
func lineEnd(src []byte, off int) int {
	i := bytes.IndexByte(src[off:], '\n')
	if i < 0 {
		return len(src)
	}
	return off + i + 1
}

// indentAt returns the leading white space of the line holding off.
func indentAt(src []byte, off int) string {
	start := lineStart(src, off)
	i := start
	for i < len(src) && (src[i] == ' ' || src[i] == '\t') {
		i++
	}
	return string(src[start:i])
}

// nextIsComma reports whether the next non-blank character on the line
// after off is a comma.
func nextIsComma(src []byte, off int) bool {
	for i := off; i < len(src); i++ {
		switch src[i] {
		case ' ', '\t':
		case ',':
			return true
		default:
			return false
		}
	}
	return false
}

// ownsLines reports whether the text from start to end occupies whole
// lines: only blanks before it on its first line, and only blanks, a comma
// and a comment after it on its last line (not the closing bracket at rb).
func ownsLines(src []byte, start, end, rb int) bool {
	if strings.TrimSpace(string(src[lineStart(src, start):start])) != "" {
		return false
	}
	le := lineEnd(src, end)
	if rb >= end && rb < le {
		return false
	}
	rest := strings.TrimSpace(string(src[end:le]))
	rest = strings.TrimSpace(strings.TrimPrefix(rest, ","))
	return rest == "" || strings.HasPrefix(rest, "//")
}

// commentAbove returns the start of the block of comment lines directly
// above the line starting at from, or from when there is none.
func commentAbove(src []byte, from int) int {
	c := from
	for c > 0 {
		prev := lineStart(src, c-1)
		if !strings.HasPrefix(strings.TrimSpace(string(src[prev:c])), "//") {
			break
		}
		c = prev
	}
	return c
}

// nextLineIsBreak reports whether the line starting at off is blank, a
// comment, or holds the closing bracket at rb: the element before it ends
// a group.
func nextLineIsBreak(src []byte, off, rb int) bool {
	if off >= len(src) || rb < lineEnd(src, off) {
		return true
	}
	line := strings.TrimSpace(string(src[off:lineEnd(src, off)]))
	return line == "" || strings.HasPrefix(line, "//")
}
