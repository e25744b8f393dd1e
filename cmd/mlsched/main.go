// Command mlsched is an ML-assisted CPU scheduler for Linux on sched_ext: it captures
// syscall-decay features of running tasks, trains a tiny net offline, and uses it to decide
// whether a waking task stays on its previous CPU or migrates to an idle one.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/mlsched/mlsched/features/outfile"
)

// Exit codes shared by all commands; scripts can rely on them.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitNotRoot  = 3
	exitNoKernel = 4 // the kernel lacks a needed feature (BTF, sched_ext)
	exitBusy     = 5 // another sched_ext scheduler is attached
	exitBadInput = 6 // a corrupt or mismatched model or trace
	exitVerifier = 7 // the BPF verifier rejected a program
)

// exitError carries a specific exit code with an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func errorf(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// command is one subcommand. Each file registers its own in init.
type command struct {
	name    string
	summary string // one line for `mlsched --help`
	usage   string // the synopsis after "mlsched NAME"
	help    string // paragraphs shown by `mlsched NAME --help`
	exits   string // its exit codes besides 0, printed after help ("" when help lists them)
	// flags declares the command's flags on fs and returns the function that runs it.
	flags func(fs *flag.FlagSet) func(args []string) error
}

var commands = map[string]*command{}

// stdout and stderr are where commands print; run sets them (tests pass buffers).
var (
	stdout io.Writer = os.Stdout
	stderr io.Writer = os.Stderr
)

func register(c *command) { commands[c.name] = c }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, outW, errW io.Writer) int {
	stdout, stderr = outW, errW
	outfile.Stdout = outW // an output named "-"
	if len(args) > 0 && args[0] == gateCommand {
		return execGate(args[1:])
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			if c, ok := commands[args[1]]; ok {
				fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
				c.flags(fs)
				printCommandHelp(stdout, c, fs)
				return exitOK
			}
		}
		printHelp(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "mlsched: unknown command %q (see mlsched --help)\n", args[0])
		return exitUsage
	}
	fs := flag.NewFlagSet("mlsched "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runFn := c.flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(stdout, c, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "mlsched %s: %v (see mlsched %s --help)\n", c.name, err, c.name)
		return exitUsage
	}
	if err := runFn(fs.Args()); err != nil {
		fmt.Fprintf(stderr, "mlsched %s: %v\n", c.name, err)
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		return exitFailure
	}
	return exitOK
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, `mlsched: an ML-assisted CPU scheduler for Linux (sched_ext)

A tiny neural net predicts, from a running task's recent syscalls, whether it will leave its
CPU soon; that decides whether a waking task stays on its cache-warm previous CPU or migrates
to an idle one. Traces of your own workloads train the net; any kernel with BTF can capture.

Usage: mlsched <command> [flags] [args]

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'mlsched <command> --help' for a command's flags.\n")
}

func printCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: mlsched %s %s\n\n%s\n", c.name, c.usage, strings.TrimSpace(c.help))
	if c.exits != "" {
		fmt.Fprintf(w, "\nExit codes: 0 done, %s.\n", c.exits)
	}
	if fs != nil {
		var b strings.Builder
		fs.SetOutput(&b)
		fs.PrintDefaults()
		if b.Len() > 0 {
			fmt.Fprintf(w, "\nFlags:\n%s", b.String())
		}
	}
}

// reportWriter is where a command prints its report for people: stdout, unless one of its
// outputs is "-" (written to stdout itself), then stderr, so the two never mix.
func reportWriter(outputs ...string) io.Writer {
	for _, o := range outputs {
		if outfile.IsStdout(o) { // "-", /dev/stdout, /dev/fd/1
			return stderr
		}
	}
	return stdout
}
