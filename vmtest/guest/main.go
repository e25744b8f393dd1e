// Command guest is the VM's /init for the sched_ext scenarios (package vmtest on the host).
//
// As PID 1 it is the agent: it mounts what the scheduler needs, reads the scenario script the
// host put into the initramfs (vmtest/internal/proto), runs its steps, writes one JSON line per
// step to the second serial port, and powers the VM off — always, also on a panic or when the
// script's deadline passes. Run as `/init workload ...` or `/init flood ...` it is one of the
// static workloads the steps start; `/init write PATH VALUE` writes VALUE to a file (a sysfs
// knob such as a CPU's online: the guest has no shell); `/init systrace CMD...` runs CMD with an
// empty program on the sys_enter tracepoint (the floor of a per-syscall hook, for vmbench).
//
// Static (CGO_ENABLED=0): the initramfs has no libc. It must not import the scheduler's
// packages: it tests them from the outside, through the mlsched binary.
package main

import (
	"fmt"
	"os"
)

func main() {
	if os.Getpid() == 1 {
		agent()
		return // not reached: agent powers off
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: init workload|flood [flags] | init write PATH VALUE | init systrace CMD... (as PID 1: the scenario agent)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "workload":
		err = workload(os.Args[2:])
	case "flood":
		err = flood(os.Args[2:])
	case "write":
		err = writeFile(os.Args[2:])
	case "systrace":
		err = sysTrace(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "init %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// writeFile is `init write PATH VALUE`: one write(2) of VALUE to an existing PATH (no create,
// no truncate: what `echo VALUE > PATH` does to a sysfs file), its error as the kernel gave it.
func writeFile(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: init write PATH VALUE")
	}
	f, err := os.OpenFile(args[0], os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(args[1])); err != nil {
		f.Close()
		return fmt.Errorf("write %q to %s: %w", args[1], args[0], err)
	}
	return f.Close()
}
