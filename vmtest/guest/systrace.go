package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// sysTrace is `init systrace CMD ARGS...`: CMD runs with an empty BPF program on the raw
// tracepoint sys_enter for as long as it runs (SIGINT and SIGTERM are passed on to it), and its
// exit status is ours. It is the floor of any per-syscall hook: what taking every syscall of
// the machine through the tracepoint costs before a hook does anything (vmbench's arm
// "mlsched vtime +sys_enter"). With -fentry FUNC the program is attached at FUNC's entry instead
// (on Debian's 7.2 x64_sys_call, the syscall dispatch, cannot be: its attach fails with EBUSY, it
// has no ftrace entry).
func sysTrace(args []string) error {
	fentry := ""
	if len(args) > 1 && args[0] == "-fentry" {
		fentry, args = args[1], args[2:]
	}
	if len(args) == 0 {
		return errors.New("usage: init systrace [-fentry FUNC] CMD [ARGS...]")
	}
	spec := &ebpf.ProgramSpec{
		Name: "vmtest_sys_enter", Type: ebpf.RawTracepoint, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	}
	if fentry != "" { // the same empty program at the entry of a kernel function instead
		spec.Type, spec.AttachType, spec.AttachTo = ebpf.Tracing, ebpf.AttachTraceFEntry, fentry
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		return fmt.Errorf("load the empty program: %w", err)
	}
	defer prog.Close()
	var l link.Link
	if fentry != "" {
		l, err = link.AttachTracing(link.TracingOptions{Program: prog})
	} else {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: prog})
	}
	if err != nil {
		return fmt.Errorf("attach the empty program: %w", err)
	}
	defer l.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				l.Close()
				os.Exit(ee.ExitCode())
			}
			return err
		}
	}
}
