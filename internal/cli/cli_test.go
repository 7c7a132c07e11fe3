package cli

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestPlaceholders(t *testing.T) {
	tests := []struct {
		name     string
		template []string
		input    string
		seq      int
		want     []string
	}{
		{"the input replaces {}", []string{"gzip", "{}"}, "a/b.log", 1, []string{"gzip", "a/b.log"}},
		{"{.} drops the extension", []string{"echo", "{.}"}, "dir.x/file.tar.gz", 1, []string{"echo", "dir.x/file.tar"}},
		{"{.} leaves a name without extension alone", []string{"echo", "{.}"}, "dir.x/file", 1, []string{"echo", "dir.x/file"}},
		{"{.} leaves a hidden file alone", []string{"echo", "{.}"}, ".bashrc", 1, []string{"echo", ".bashrc"}},
		{"{/} is the base name", []string{"echo", "{/}"}, "/a/b/c.txt", 1, []string{"echo", "c.txt"}},
		{"{//} is the directory", []string{"echo", "{//}"}, "/a/b/c.txt", 1, []string{"echo", "/a/b"}},
		{"{//} of a bare name is .", []string{"echo", "{//}"}, "c.txt", 1, []string{"echo", "."}},
		{"{/.} is the base name without extension", []string{"echo", "{/.}"}, "/a/b/c.txt", 1, []string{"echo", "c"}},
		{"{#} is the sequence number", []string{"echo", "{#}"}, "x", 7, []string{"echo", "7"}},
		{"placeholders combine inside one argument", []string{"convert", "{}", "out/{/.}-{#}.jpg"}, "in/p.png", 2,
			[]string{"convert", "in/p.png", "out/p-2.jpg"}},
		{"without placeholders the input is appended", []string{"echo", "x"}, "y", 1, []string{"echo", "x", "y"}},
		{"other braces are left alone", []string{"sh", "-c", "echo ${HOME} {a,b} {} {print}"}, "z", 1,
			[]string{"sh", "-c", "echo ${HOME} {a,b} z {print}"}},
		{"an unclosed brace is left alone", []string{"echo", "{", "{}"}, "z", 1, []string{"echo", "{", "z"}},
		{"other braces alone do not count as placeholders", []string{"awk", "{print}"}, "f", 1, []string{"awk", "{print}", "f"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := newTemplate(tc.template).expand(tc.input, tc.seq); !slices.Equal(got, tc.want) {
				t.Fatalf("expand(%q, %q, %d) = %q, want %q", tc.template, tc.input, tc.seq, got, tc.want)
			}
		})
	}
}

func TestCommandOutputRoutesLines(t *testing.T) {
	tests := []struct {
		name      string
		keep      bool
		writes    []string
		out, errs string
	}{
		{"a command's lines lose their prefix", false, []string{"[task 0] a\n[task 0] b\n"}, "a\nb\n", ""},
		{"lines split across writes are joined", false, []string{"[task 0] he", "llo\n"}, "hello\n", ""},
		{"meadowrun's lines go to stderr", false, []string{"[meadowrun] note\n[worker w1] crash\n"}, "", "[meadowrun] note\n[worker w1] crash\n"},
		{"meadowrun's messages about the command go to stderr", false, []string{"[task 0] meadowrun: command not found: x\n"}, "",
			"meadowrun: command not found: x\n"},
		{"a map's lines keep their prefix", true, []string{"[task 3] x\n[meadowrun] y\n"}, "[task 3] x\n", "[meadowrun] y\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			c := &commandOutput{out: &out, errs: &errs, keep: tc.keep}
			for _, w := range tc.writes {
				c.Write([]byte(w))
			}
			if out.String() != tc.out || errs.String() != tc.errs {
				t.Fatalf("out %q errs %q, want %q %q", out.String(), errs.String(), tc.out, tc.errs)
			}
		})
	}
}

func TestSplitInputs(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		argv, in  []string
		found     bool
		errSubstr string
	}{
		{"inputs follow :::", []string{"echo", "{}", ":::", "a", "b"}, []string{"echo", "{}"}, []string{"a", "b"}, true, ""},
		{"no ::: means stdin", []string{"echo"}, []string{"echo"}, nil, false, ""},
		{"::: without inputs is refused", []string{"echo", ":::"}, nil, nil, false, "no inputs after :::"},
		{"::: without a command is refused", []string{":::", "a"}, nil, nil, false, "no command before :::"},
		{"two groups are refused", []string{"echo", ":::", "a", ":::", "b"}, nil, nil, false, "only one ::: group"},
		{":::: is refused", []string{"echo", "::::", "f"}, nil, nil, false, "not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			argv, in, found, err := splitInputs(newMapCmd(&streams{}), tc.args)
			if tc.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("err = %v, want %q", err, tc.errSubstr)
				}
				return
			}
			if err != nil || !slices.Equal(argv, tc.argv) || !slices.Equal(in, tc.in) || found != tc.found {
				t.Fatalf("= %q %q %v %v", argv, in, found, err)
			}
		})
	}
}

func TestSizesAreShownInTheFlagsUnit(t *testing.T) {
	tests := []struct {
		name string
		gb   float64
		want string
	}{
		{"a machine's memory keeps three digits", 23.456, "23.5GB"},
		{"a whole size has no decimals", 2, "2GB"},
		{"half a GB is not shown in MiB", 0.5, "0.5GB"},
		{"a huge size has no exponent", 100000, "100000GB"},
		{"a small size keeps its digits", 0.0123, "0.0123GB"},
		{"nothing is 0GB", 0, "0GB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := gb(tc.gb); got != tc.want {
				t.Fatalf("gb(%g) = %q, want %q", tc.gb, got, tc.want)
			}
		})
	}
}
