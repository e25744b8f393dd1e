package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An output that is an input, or two outputs that name one file, are refused before any work
// (exit 2), and the input is left as it was.
func TestOutputsMustNotDestroyInputs(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "a.trace")
	m := filepath.Join(dir, "m.bin")
	for _, p := range []string{in, m} {
		if err := os.WriteFile(p, []byte("precious"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "out")
	viaDot := filepath.Join(dir, ".", "a.trace")
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"train", "-o", in, in}, "is also an input"},
		{[]string{"train", "-o", out, "--plot", viaDot, in}, "is also an input"},
		{[]string{"train", "-o", out, "--plot", out, in}, "both name"},
		{[]string{"eval", "--online", "--model", m, "--online-out", in, in}, "is also an input"},
		{[]string{"eval", "--online", "--model", m, "--online-out", m, in}, "is also an input"},
		{[]string{"ab", "--arm", "default", "--arm", "b=default", "--json", out, "--plot", out, "--", "true"}, "both name"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := run(c.args, &stdout, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, stderr.String(), exitUsage, c.msg)
		}
	}
	for _, p := range []string{in, m} {
		if b, err := os.ReadFile(p); err != nil || string(b) != "precious" {
			t.Errorf("%s now %q (%v)", p, b, err)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s was written", out)
	}
	// Outputs written in place are never in the way: two of them may be /dev/null.
	if err := checkOutputsDistinct([]output{{"--json", "/dev/null"}, {"--plot", "/dev/null"}, {"-o", "-"}, {"--json", "/dev/stdout"}, {"--plot", "/dev/stdout"}}, []string{in}); err != nil {
		t.Error(err)
	}
}

// eval's --online-* flags only mean something with --online: alone, they are refused rather
// than ignored.
func TestEvalOnlineFlagsNeedOnline(t *testing.T) {
	for _, f := range [][]string{{"--online-out", "x.bin"}, {"--online-lr", "0.01"}, {"--online-threshold", "keep"}} {
		args := append([]string{"eval", "--model", "m.bin"}, append(f, "t.trace")...)
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), f[0]) || !strings.Contains(stderr.String(), "only with --online") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d naming %s", args, code, stderr.String(), exitUsage, f[0])
		}
	}
}

// A binary output to a terminal is refused before any work; to a pipe or a file it is not.
func TestBinaryOutputToTerminal(t *testing.T) {
	defer func(f func() bool) { stdoutIsTerminal = f }(stdoutIsTerminal)
	stdoutIsTerminal = func() bool { return true }
	for _, args := range [][]string{
		{"train", "-o", "-", "t.trace"},
		{"train", "-o", "/dev/stdout", "t.trace"},
		{"capture", "-o", "-", "--duration", "1s"},
		{"eval", "--online", "--model", "m.bin", "--online-out", "-", "t.trace"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), "standard output is a terminal") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d refusing the terminal", args, code, stderr.String(), exitUsage)
		}
	}
	stdoutIsTerminal = func() bool { return false }
	if err := checkNotTerminal("-o", "-"); err != nil {
		t.Errorf("stdout not a terminal: %v", err)
	}
	stdoutIsTerminal = func() bool { return true }
	if err := checkNotTerminal("-o", filepath.Join(t.TempDir(), "m.bin")); err != nil {
		t.Errorf("a file, with a terminal on stdout: %v", err)
	}
}
