// Command guest is the VM's /init for the sched_ext scenarios (package vmtest on the host).
//
// As PID 1 it is the agent: it mounts what the scheduler needs, reads the scenario script the
// host put into the initramfs (vmtest/internal/proto), runs its steps, writes one JSON line per
// step to the second serial port, and powers the VM off — always, also on a panic or when the
// script's deadline passes. Run as `/init workload ...` or `/init flood ...` it is one of the
// static workloads the steps start.
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
		fmt.Fprintln(os.Stderr, "usage: init workload|flood [flags] (as PID 1: the scenario agent)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "workload":
		err = workload(os.Args[2:])
	case "flood":
		err = flood(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "init %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
