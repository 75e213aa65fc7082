package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// Error is one problem found in a policy folder, located by file, line and
// column (1-based) and by the CUE path of the offending value.
type Error struct {
	// File is the path of the file, relative to the policy folder, with
	// forward slashes. Empty when the problem concerns the whole folder.
	File string
	// Line and Col locate the problem in File; 0 when unknown.
	Line, Col int
	// Path is the CUE path of the value, such as "trusted_enrollment[0].cidrs[1]".
	// Empty when the problem is not about one value (a syntax error).
	Path string
	// Msg says what is wrong, in lower case.
	Msg string
}

// Error formats e as "file:line:col: path: message", leaving out the parts
// that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Wire returns e as the API carries it (policy status, vet -o json).
func (e *Error) Wire() apiv1.PolicyError {
	return apiv1.PolicyError{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Message: e.Msg}
}

// ErrorFromWire is the inverse of [Error.Wire], to print a problem received
// from the API as [Error.Error] does.
func ErrorFromWire(w apiv1.PolicyError) *Error {
	return &Error{File: w.File, Line: w.Line, Col: w.Col, Path: w.Path, Msg: w.Message}
}

// Errors is the list of every problem found by [Load], sorted by position.
// Use errors.As to get it from the error that Load returns.
type Errors []*Error

// Error prints one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sortErrors orders errors by file, line, column, path and message, and drops
// exact duplicates.
func sortErrors(es Errors) Errors {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Col, b.Col),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Msg, b.Msg),
		)
	})
	return slices.CompactFunc(es, func(a, b *Error) bool { return *a == *b })
}
