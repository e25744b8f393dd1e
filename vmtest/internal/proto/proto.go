// Package proto is the contract between the VM harness (package vmtest, on the host) and the
// guest agent (vmtest/guest, the VM's /init): the script of steps the host puts into the
// initramfs, and the JSON lines the agent writes back on the second serial port.
//
// The agent is a plain interpreter: scenarios live in the host's tests, which build a script,
// boot a VM and check the results. Standard library only.
package proto

import "time"

// ScriptPath is where the host puts the scenario's script in the initramfs.
const ScriptPath = "/scenario.json"

// ResultPort is the guest device the agent writes result lines to (qemu's second -serial).
const ResultPort = "/dev/ttyS1"

// Script is one scenario: steps run in order by the agent.
type Script struct {
	Name  string `json:"name"`
	Steps []Step `json:"steps"`
	// Deadline bounds the whole script in the guest; the agent powers off when it passes,
	// so a hung step still ends the VM before the host's own timeout.
	Deadline time.Duration `json:"deadline"`
}

// Ops understood by the agent.
const (
	// OpExec runs Args to completion (or Timeout, then SIGKILL) and reports its output.
	OpExec = "exec"
	// OpStart starts Args in the background as process Name.
	OpStart = "start"
	// OpWait waits up to Timeout for process Name to exit and reports how it ended.
	OpWait = "wait"
	// OpSignal sends Signal ("INT", "TERM", "KILL", "STOP", "CONT") to process Name.
	OpSignal = "signal"
	// OpWaitFile polls Path every few ms until its trimmed content equals Value (or, with
	// Negate, differs from it), up to Timeout; reports the elapsed time and the last value.
	OpWaitFile = "wait_file"
	// OpRead reports the trimmed contents of Paths (missing files are reported as such).
	OpRead = "read"
	// OpSleep sleeps for Duration.
	OpSleep = "sleep"
	// OpHTTPGet fetches URL, retrying until Timeout, and reports status and body.
	OpHTTPGet = "http_get"
	// OpWriteFile writes Data to Path.
	OpWriteFile = "write_file"
	// OpAlive reports whether process Name is still running (not reaped), without waiting.
	OpAlive = "alive"
)

// Step is one instruction. Fields not used by an op are ignored.
type Step struct {
	Op       string        `json:"op"`
	Name     string        `json:"name,omitempty"`
	Args     []string      `json:"args,omitempty"`
	Path     string        `json:"path,omitempty"`
	Paths    []string      `json:"paths,omitempty"`
	Value    string        `json:"value,omitempty"`
	Negate   bool          `json:"negate,omitempty"`
	Signal   string        `json:"signal,omitempty"`
	URL      string        `json:"url,omitempty"`
	Data     []byte        `json:"data,omitempty"`
	Timeout  time.Duration `json:"timeout,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`
}

// Result is one line on the result port. Kind "hello" comes first (guest facts), then one
// "step" per step in order, then "done". "error" reports an agent failure outside a step.
type Result struct {
	Kind string `json:"kind"`
	Step int    `json:"step"` // index into Script.Steps for Kind "step"
	Op   string `json:"op,omitempty"`
	Name string `json:"name,omitempty"`
	// OK is false when the step could not do what it was asked: a command could not start,
	// a wait timed out, a file never reached its value. A command's non-zero exit is not
	// a step failure; the test decides what it expects.
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Elapsed is the step's duration (for wait_file: until the value was seen).
	Elapsed time.Duration `json:"elapsed"`
	// At is the guest's monotonic time since the agent started, when the step ended.
	At time.Duration `json:"at"`

	// Process results (exec, wait).
	ExitCode int    `json:"exit_code"`          // -1 if killed by a signal or not exited
	Signaled string `json:"signaled,omitempty"` // the signal that ended it
	Stdout   string `json:"stdout,omitempty"`
	Stderr   string `json:"stderr,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
	Running  bool   `json:"running,omitempty"` // alive: still running

	// Value is a file's content (wait_file), or an HTTP body (http_get).
	Value  string            `json:"value,omitempty"`
	Values map[string]string `json:"values,omitempty"` // read: path -> content
	Status int               `json:"status,omitempty"` // http_get

	// Hello facts.
	Kernel  string  `json:"kernel,omitempty"`
	CPUs    int     `json:"cpus,omitempty"`
	UptimeS float64 `json:"uptime_s,omitempty"`
}
