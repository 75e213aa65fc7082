// Package schemas holds the contracts shared between the parts of Vigo Enroll:
// the CUE schema of policy repositories (embedded here) and the wire types
// in its subpackages.
package schemas

import _ "embed"

// PolicyCUE is the CUE source of the policy schema. It defines #Policy, the
// closed struct that every policy repository must satisfy, and documents each
// field for operators.
//
//go:embed policy.cue
var PolicyCUE []byte

// PolicyFilename is the name under which PolicyCUE is compiled, so that errors
// located in the schema point to it.
const PolicyFilename = "schemas/policy.cue"
