// Package policy loads and validates Vigo Enroll enrollment policies written
// in CUE, and decides whether a host may enroll.
//
// The package is pure: files in, a policy or positioned errors out. It
// makes no network calls, reads no files, opens no database and does not
// log. Which files of a folder are policy files is decided by the tree
// reader of package gitsync.
//
// # Policy folder
//
// A policy is a set of .cue files, each starting with "package policy",
// unified into one value that must satisfy the closed #Policy schema of
// package schemas (schemas/policy.cue documents every field). [Evaluate]
// runs CUE and returns the values as a [Spec] — the compiled form, which a
// server stores — or reports every problem at once as [Errors]
// (file:line:col: path: message); [Spec.Compile] does the checks CUE
// cannot do and returns the [Policy]; [Load] does both. CUE owns the shape,
// the syntax of values and the defaults; Go only what CUE cannot say (host
// bits of CIDRs, glob structure, duration bounds, duplicates across
// entries), and never reports again what CUE reported. Only CUE builtin
// packages may be imported, so a policy can never make evaluation reach a
// module registry.
//
// Evaluating CUE has no bound on memory or time: untrusted policy content
// is evaluated by package policy/sandbox, in a child process with hard
// limits.
//
// # Hostnames
//
// Hostnames are compared lower-case and without one trailing dot:
// "Web1.Example.COM." is "web1.example.com". A valid hostname is at most 253
// characters of dot-separated labels; each label has 1 to 63 letters, digits
// or hyphens and neither starts nor ends with a hyphen (RFC 1123). See
// [NormalizeHostname].
//
// # Globs
//
// Patterns in trusted_enrollment, approved and tokens are globs that must
// match the whole hostname, compared the same way (lower-case, no trailing
// dot):
//
//   - "*" matches any run of characters, including none and including dots;
//   - "?" matches exactly one character (never more, never none);
//   - letters, digits, "-" and "." match themselves;
//   - nothing else is allowed: "[", "]", "\" and other characters are rejected,
//     and so are empty labels ("a..b", ".a").
//
// A pattern without wildcards must itself be a valid hostname. Examples:
//
//	pattern               matches                            does not match
//	web1.example.com      web1.example.com, WEB1.example.com. web10.example.com
//	*.web.example.com     a.web.example.com, a.b.web.example.com  web.example.com
//	*.dev.*               x.dev.example.com, a.b.dev.c.d       dev.example.com
//	web*                  web, web1, web1.example.com          aweb1
//	web-*.dc1.example.com web-7.dc1.example.com                web.dc1.example.com
//	db?.example.com       db1.example.com, dbx.example.com     db.example.com, db10.example.com
//	*                     every hostname
//
// Patterns are compiled once by Load: names without wildcards go into a map,
// "*.suffix" patterns into a map keyed by suffix, patterns ending in a literal
// ".domain" into buckets keyed by that domain; only the remaining ones are
// tried one by one. Deciding therefore stays fast with tens of thousands of
// patterns.
//
// # Decision order
//
// [Policy.Decide] decides a registration (hostname, source address, optional
// token) in this order; the first step that applies decides:
//
//  1. the hostname is listed in revocations: deny;
//  2. a trusted_enrollment entry's pattern matches the hostname and one of its
//     CIDRs contains the source address: allow, method "trusted" (the first
//     such entry in file order is the rule);
//  3. an approved pattern matches the hostname: allow, method "approved";
//  4. a token is given and its pattern matches the hostname: allow, method
//     "token" (the store checks that the token is unused, unexpired and not
//     revoked, and consumes it);
//  5. otherwise deny, with a reason that says what did not match.
//
// Every [Decision] carries the rule that decided and the policy revision. A nil
// *Policy (no valid policy loaded yet) allows tokens only.
package policy
