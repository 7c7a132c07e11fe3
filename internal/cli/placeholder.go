package cli

import (
	"path"
	"strconv"
	"strings"
)

// A command template holds GNU parallel's placeholders, replaced for each
// input:
//
//	{}    the input
//	{.}   the input without its extension
//	{/}   its base name
//	{//}  its directory
//	{/.}  its base name without extension
//	{#}   the task's sequence number, from 1
//
// Other braces ({a,b}, ${HOME}, awk's {print}) are left alone. A template
// without any placeholder gets the input appended as a last argument.

// placeholders maps each placeholder's inside to its expansion.
var placeholders = map[string]func(input string, seq int) string{
	"":   func(in string, _ int) string { return in },
	".":  func(in string, _ int) string { return trimExt(in) },
	"/":  func(in string, _ int) string { return path.Base(in) },
	"//": func(in string, _ int) string { return path.Dir(in) },
	"/.": func(in string, _ int) string { return trimExt(path.Base(in)) },
	"#":  func(_ string, seq int) string { return strconv.Itoa(seq) },
}

// trimExt removes the extension of the last path element.
func trimExt(s string) string {
	base := path.Base(s)
	if i := strings.LastIndexByte(base, '.'); i > 0 {
		return s[:len(s)-len(base)+i]
	}
	return s
}

// hasPlaceholder reports whether s holds a placeholder.
func hasPlaceholder(s string) bool {
	_, found := expandArg(s, "", 0)
	return found
}

// expandArg replaces the placeholders of one argument.
func expandArg(s, input string, seq int) (string, bool) {
	if !strings.Contains(s, "{") {
		return s, false
	}
	var b strings.Builder
	found := false
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			break
		}
		f, ok := placeholders[s[i+1:i+j]]
		if !ok {
			b.WriteString(s[:i+1])
			s = s[i+1:]
			continue
		}
		found = true
		b.WriteString(s[:i])
		b.WriteString(f(input, seq))
		s = s[i+j+1:]
	}
	b.WriteString(s)
	return b.String(), found
}

// template is a command with placeholders.
type template struct {
	args   []string
	append bool // no placeholder: the input is appended
}

func newTemplate(args []string) template {
	t := template{args: args, append: true}
	for _, a := range args {
		if hasPlaceholder(a) {
			t.append = false
		}
	}
	return t
}

// expand returns the command for input, the seq-th (from 1).
func (t template) expand(input string, seq int) []string {
	out := make([]string, 0, len(t.args)+1)
	for _, a := range t.args {
		e, _ := expandArg(a, input, seq)
		out = append(out, e)
	}
	if t.append {
		out = append(out, input)
	}
	return out
}
