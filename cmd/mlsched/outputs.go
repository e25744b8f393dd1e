package main

import (
	"os"
	"path/filepath"

	"github.com/mlsched/mlsched/features/outfile"
	"golang.org/x/sys/unix"
)

// output is a file a command will write, named by the flag that gave it.
type output struct {
	flag, path string
}

// checkOutputsDistinct refuses, before any work, outputs that would destroy data: an output
// that is one of the inputs (the trace being trained on, the model being evaluated), or two
// outputs that name the same file (the second would replace the first). "-" (stdout), empty
// paths and targets that are not regular files (/dev/null, a FIFO) are written in place and
// are never in the way.
func checkOutputsDistinct(outs []output, inputs []string) error {
	var seen []output
	for _, o := range outs {
		if o.path == "" || outfile.InPlace(o.path) {
			continue // stdout, a descriptor, a device or FIFO: written in place
		}
		if li, err := os.Lstat(o.path); err == nil { // an output that exists may be an input
			for _, in := range inputs {
				if si, err := os.Stat(in); err == nil && os.SameFile(li, si) {
					return errorf(exitUsage, "%s %s is also an input (%s): writing it would destroy that input; name another file", o.flag, o.path, in)
				}
			}
		}
		for _, p := range seen {
			if samePath(p.path, o.path) {
				return errorf(exitUsage, "%s and %s both name %s: the second would replace the first; name two files", p.flag, o.flag, o.path)
			}
		}
		seen = append(seen, o)
	}
	return nil
}

// samePath: a and b name the same file, existing or not (the same directory entry: the same
// file in the same directory).
func samePath(a, b string) bool {
	da, db := filepath.Dir(a), filepath.Dir(b)
	if filepath.Base(a) != filepath.Base(b) {
		return false
	}
	sa, ea := os.Stat(da)
	sb, eb := os.Stat(db)
	if ea == nil && eb == nil {
		return os.SameFile(sa, sb)
	}
	aa, _ := filepath.Abs(a)
	ab, _ := filepath.Abs(b)
	return aa == ab
}

// stdoutIsTerminal reports whether standard output is a terminal (a variable for tests).
var stdoutIsTerminal = func() bool {
	_, err := unix.IoctlGetTermios(int(os.Stdout.Fd()), unix.TCGETS)
	return err == nil
}

// checkNotTerminal refuses a binary output (a trace, a model) to standard output when that is
// a terminal: the bytes would garble it and be lost.
func checkNotTerminal(flag, path string) error {
	if outfile.IsStdout(path) && stdoutIsTerminal() {
		return errorf(exitUsage, "%s %s: this is a binary file and standard output is a terminal; redirect it (> FILE, | ...) or name a file", flag, path)
	}
	return nil
}
